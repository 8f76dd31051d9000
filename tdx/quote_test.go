package tdx

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func recordedQuote(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile("../testdata/dcap-qvl/tdx_quote")
	require.NoError(t, err)
	return b
}

func TestParseRecordedQuote(t *testing.T) {
	t.Parallel()
	raw := recordedQuote(t)
	q, err := ParseQuote(raw)
	require.NoError(t, err)
	assert.EqualValues(t, 4, q.Header.Version)
	assert.EqualValues(t, BodyTypeTD10, q.BodyType)
	assert.False(t, q.Body.Debug())
	assert.Equal(t, raw[568:632], q.Body.ReportData[:], "REPORTDATA sits at 568..632 in a v4 quote")
	assert.Equal(t, raw[48+136:48+184], q.Body.MRTD[:])
	assert.Len(t, q.QEAuthData, 32)
	assert.True(t, bytes.HasPrefix(q.PCKChainPEM, []byte("-----BEGIN CERTIFICATE-----")))
	assert.Equal(t, raw[:48+TD10ReportSize], q.SignedBytes())

	enc, err := q.Marshal()
	require.NoError(t, err)
	require.LessOrEqual(t, len(enc), len(raw))
	assert.Equal(t, raw[:len(enc)], enc, "re-encoding must reproduce the input")
	assert.Equal(t, make([]byte, len(raw)-len(enc)), raw[len(enc):], "only zero padding is dropped")
}

func TestParseDstackQuote(t *testing.T) {
	t.Parallel()
	var fixture struct{ Attestation string }
	b, err := os.ReadFile("../testdata/dstack/tdx-lite-attestation.json")
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &fixture))
	env, err := hex.DecodeString(fixture.Attestation)
	require.NoError(t, err)
	// V0 envelope: version byte, variant byte, SCALE compact length in its
	// two-byte form, then the quote.
	require.Equal(t, []byte{0, 0}, env[:2])
	require.Equal(t, byte(0b01), env[2]&0b11)
	n := int(uint16(env[2])|uint16(env[3])<<8) >> 2
	q, err := ParseQuote(env[4 : 4+n])
	require.NoError(t, err)
	assert.EqualValues(t, 4, q.Header.Version)
}

func TestV5RoundTrip(t *testing.T) {
	t.Parallel()
	q, err := ParseQuote(recordedQuote(t))
	require.NoError(t, err)
	for _, bodyType := range []uint16{BodyTypeTD10, BodyTypeTD15} {
		v5 := q.UnsignedCopy()
		v5.Header.Version = 5
		v5.BodyType = bodyType
		v5.Body.MRServiceTD[0] = 0xAA
		enc, err := v5.Marshal()
		require.NoError(t, err)
		got, err := ParseQuote(enc)
		require.NoError(t, err)
		assert.Equal(t, bodyType, got.BodyType)
		assert.Equal(t, q.Body.MRTD, got.Body.MRTD)
		assert.Equal(t, q.Body.ReportData, got.Body.ReportData)
		assert.Equal(t, bodyType == BodyTypeTD15, got.Body.MRServiceTD[0] == 0xAA, "only TD 1.5 bodies carry MRSERVICETD")
		assert.Equal(t, v5.SignedBytes(), got.SignedBytes())
	}
}

func TestDebugBit(t *testing.T) {
	t.Parallel()
	var r TDReport
	assert.False(t, r.Debug())
	r.TDAttributes[0] = 0x01
	assert.True(t, r.Debug())
}

func TestParseRejects(t *testing.T) {
	t.Parallel()
	raw := recordedQuote(t)
	mutate := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), raw...)) }
	cases := map[string][]byte{
		"empty":           nil,
		"version 3":       mutate(func(b []byte) []byte { b[0] = 3; return b }),
		"SGX TEE type":    mutate(func(b []byte) []byte { b[4] = 0; return b }),
		"key type":        mutate(func(b []byte) []byte { b[2] = 3; return b }),
		"huge sig length": mutate(func(b []byte) []byte { b[632], b[633], b[634], b[635] = 0xff, 0xff, 0xff, 0x7f; return b }),
		// u32 lengths with the top bit set are negative as a 32-bit int:
		// they must fail the bounds check, not index with a negative value.
		"sig length 2^32-1":       mutate(func(b []byte) []byte { copy(b[632:], []byte{0xff, 0xff, 0xff, 0xff}); return b }),
		"cert data length 2^32-1": mutate(func(b []byte) []byte { copy(b[766:], []byte{0xff, 0xff, 0xff, 0xff}); return b }),
		"PCK chain length 2^32-1": mutate(func(b []byte) []byte { copy(b[1254:], []byte{0xff, 0xff, 0xff, 0xff}); return b }),
		"PCK chain length 2^31":   mutate(func(b []byte) []byte { copy(b[1254:], []byte{0x00, 0x00, 0x00, 0x80}); return b }),
		"nonzero padding":         mutate(func(b []byte) []byte { b[len(b)-1] = 1; return b }),
		"cert data type":          mutate(func(b []byte) []byte { b[636+128] = 7; return b }),
		"oversized":               make([]byte, MaxQuoteSize+1),
	}
	for name, b := range cases {
		_, err := ParseQuote(b)
		assert.ErrorIs(t, err, ErrMalformed, name)
	}
}

// Every truncation of a real quote must fail cleanly, never panic.
func TestParseTruncations(t *testing.T) {
	t.Parallel()
	raw := recordedQuote(t)
	end := 4936 // where the signature data ends; after it only padding
	for n := 0; n < end; n++ {
		_, err := ParseQuote(raw[:n])
		require.ErrorIs(t, err, ErrMalformed, "length %d", n)
	}
}
