package fuzz

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/teesql/ratls/ext"
	"github.com/teesql/ratls/tdx"
)

// seedFile reads a file of the repository's testdata.
func seedFile(tb testing.TB, rel string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", rel))
	require.NoError(tb, err)
	return b
}

// dstackEnvelopes returns the two recorded V0 envelopes: the full one and
// the stripped one found in certificates.
func dstackEnvelopes(tb testing.TB) (full, lite []byte) {
	tb.Helper()
	var doc struct {
		Attestation string `json:"attestation"`
	}
	require.NoError(tb, json.Unmarshal(seedFile(tb, "dstack/tdx-lite-attestation.json"), &doc))
	lite, err := hex.DecodeString(doc.Attestation)
	require.NoError(tb, err)
	return seedFile(tb, "dstack/attestation.bin"), lite
}

func parsedEnvelope(tb testing.TB, b []byte) *ext.Attestation {
	tb.Helper()
	a, err := ext.ParseEnvelope(b)
	require.NoError(tb, err)
	return a
}

func marshalEnvelope(tb testing.TB, a *ext.Attestation, version int) []byte {
	tb.Helper()
	b, err := ext.MarshalEnvelope(a, version)
	require.NoError(tb, err)
	return b
}

// v1Seeds are msgpack (V1) envelopes: plain, "dstack-pod", and one with
// every byte vector written as binary instead of integer arrays.
func v1Seeds(tb testing.TB) [][]byte {
	full, lite := dstackEnvelopes(tb)
	var seeds [][]byte
	for _, env := range [][]byte{full, lite} {
		a := parsedEnvelope(tb, env)
		seeds = append(seeds, marshalEnvelope(tb, a, ext.EnvelopeV1))
		a.Stack, a.ReportDataPayload = ext.StackDstackPod, `{"pod":"p"}`
		seeds = append(seeds, marshalEnvelope(tb, a, ext.EnvelopeV1))
	}
	if b := quoteAsBin(seeds[2]); b != nil {
		seeds = append(seeds, b)
	}
	return seeds
}

// quoteAsBin rewrites the quote of a V1 envelope from an array of integers
// (how dstack's encoder writes a Vec<u8>: 0xdc, u16 count, one integer per
// byte) to bin16, the other form readers must accept.
func quoteAsBin(v1 []byte) []byte {
	a, err := ext.ParseEnvelope(v1)
	if err != nil {
		return nil
	}
	key := []byte("\xa5quote")
	i := bytes.Index(v1, key)
	if i < 0 {
		return nil
	}
	n := len(a.Quote)
	arr := []byte{0xdc, byte(n >> 8), byte(n)}
	for _, x := range a.Quote {
		if x >= 0x80 {
			arr = append(arr, 0xcc)
		}
		arr = append(arr, x)
	}
	rest := v1[i+len(key):]
	if !bytes.HasPrefix(rest, arr) {
		return nil
	}
	out := append(bytes.Clone(v1[:i+len(key)]), 0xc5, byte(n>>8), byte(n))
	out = append(out, a.Quote...)
	return append(out, rest[len(arr):]...)
}

// checkEnvelope is the invariant shared by the envelope targets: errors
// wrap ErrMalformed; a parsed envelope has a quote that parses and matches
// its report data, re-encodes, and re-parses to the same value.
func checkEnvelope(t *testing.T, data []byte) {
	a, err := ext.ParseEnvelope(data)
	if err != nil {
		require.ErrorIs(t, err, ext.ErrMalformed)
		require.Nil(t, a)
		return
	}
	q, err := tdx.ParseQuote(a.Quote)
	require.NoError(t, err)
	require.Equal(t, q.Body.ReportData[:], a.ReportData)

	re, err := ext.MarshalEnvelope(a, a.Envelope)
	require.NoError(t, err)
	b, err := ext.ParseEnvelope(re)
	require.NoError(t, err)
	require.Equal(t, a, b)
	if a.Envelope == ext.EnvelopeV0 {
		// SCALE has one encoding per value, so V0 re-encodes to the input;
		// except that runtime events found only in the runtime_events list
		// are written back into the event log too.
		require.True(t, bytes.Equal(re, data) || len(re) > len(data), "V0 re-encoding differs")
	}
	again, err := ext.MarshalEnvelope(b, b.Envelope)
	require.NoError(t, err)
	require.Equal(t, re, again, "encoding is not stable")

	for imr := range 4 {
		_, _ = ext.Replay(a.Events, imr)
	}
	if id, err := ext.VerifiedAppIdentity(a.Events, q.Body.RTMR[3]); err == nil {
		require.Len(t, id.AppID, 20)
		require.Len(t, id.ComposeHash, 32)
	}
}

func FuzzParseEnvelope(f *testing.F) {
	full, lite := dstackEnvelopes(f)
	f.Add(full)
	f.Add(lite)
	f.Add(full[:600])
	f.Add([]byte{0x00, 0x00})
	for _, s := range v1Seeds(f) {
		f.Add(s)
	}
	f.Fuzz(checkEnvelope)
}

// FuzzParseEnvelopeV1 focuses on the msgpack decoder: its corpus holds only
// V1 envelopes, so mutations explore msgpack rather than SCALE.
func FuzzParseEnvelopeV1(f *testing.F) {
	for _, s := range v1Seeds(f) {
		f.Add(s)
	}
	f.Add([]byte{0x83, 0xa7, 'v', 'e', 'r', 's', 'i', 'o', 'n', 0x01})
	f.Fuzz(checkEnvelope)
}

func FuzzParseEventLogJSON(f *testing.F) {
	full, lite := dstackEnvelopes(f)
	for _, env := range [][]byte{full, lite} {
		b, err := ext.MarshalEventLogJSON(parsedEnvelope(f, env).Events)
		require.NoError(f, err)
		f.Add(b)
	}
	f.Add([]byte(`[]`))
	f.Add([]byte(`[{"imr":3,"event_type":134217729,"event":"app-id","event_payload":"00","version":1,"hash_input":""}]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		events, err := ext.ParseEventLogJSON(data)
		if err != nil {
			require.ErrorIs(t, err, ext.ErrMalformed)
			return
		}
		re, err := ext.MarshalEventLogJSON(events)
		require.NoError(t, err)
		back, err := ext.ParseEventLogJSON(re)
		require.NoError(t, err)
		require.Equal(t, events, back)
		again, err := ext.MarshalEventLogJSON(back)
		require.NoError(t, err)
		require.Equal(t, re, again)
		for imr := range 4 {
			_, _ = ext.Replay(events, imr)
		}
	})
}

// issue returns the DER of a self-signed certificate carrying exts.
func issue(tb testing.TB, exts []pkix.Extension) []byte {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(tb, err)
	tmpl := &x509.Certificate{
		SerialNumber:    big.NewInt(1),
		Subject:         pkix.Name{CommonName: "fuzz"},
		NotBefore:       time.Unix(0, 0),
		NotAfter:        time.Unix(1<<31, 0),
		ExtraExtensions: exts,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(tb, err)
	return der
}

func FuzzFromCertificate(f *testing.F) {
	full, lite := dstackEnvelopes(f)
	a := parsedEnvelope(f, lite)
	a.AppID = bytes.Repeat([]byte{0x5b}, 20)
	a.Usage = "app:custom"
	a.AppInfo = []byte{0x80}
	v0, err := ext.Extensions(a, false)
	require.NoError(f, err)
	legacy, err := ext.Extensions(parsedEnvelope(f, full), true)
	require.NoError(f, err)
	v1, err := asn1.Marshal(marshalEnvelope(f, a, ext.EnvelopeV1))
	require.NoError(f, err)
	both := append([]pkix.Extension{{Id: ext.OIDTDXQuote, Value: legacy[0].Value}}, v0...)

	f.Add(issue(f, v0))
	f.Add(issue(f, legacy))
	f.Add(issue(f, []pkix.Extension{{Id: ext.OIDAttestation, Value: v1}}))
	f.Add(issue(f, both)) // quotes differ
	f.Add(issue(f, nil))
	f.Fuzz(func(t *testing.T, der []byte) {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return
		}
		a, err := ext.FromCertificate(cert)
		if err != nil {
			require.True(t, errors.Is(err, ext.ErrNoQuote) || errors.Is(err, ext.ErrMalformed) ||
				errors.Is(err, ext.ErrQuoteMismatch), "unexpected error: %v", err)
			require.Nil(t, a)
			return
		}
		_, err = tdx.ParseQuote(a.Quote)
		require.NoError(t, err)
		isLegacy := a.SourceOID.Equal(ext.OIDTDXQuote)
		require.True(t, isLegacy || a.SourceOID.Equal(ext.OIDAttestation))
		require.Equal(t, isLegacy, a.Envelope == ext.EnvelopeLegacy)
		if a.Stack == ext.StackDstackPod {
			return // a V0 envelope cannot carry it
		}

		// What was read can be written again and reads back the same.
		exts, err := ext.Extensions(a, isLegacy)
		require.NoError(t, err)
		b, err := ext.FromCertificate(&x509.Certificate{Extensions: exts})
		require.NoError(t, err)
		require.Equal(t, a.SourceOID, b.SourceOID)
		require.Equal(t, a.Quote, b.Quote)
		require.Equal(t, a.Events, b.Events)
		require.Equal(t, a.ReportData, b.ReportData)
		require.Equal(t, a.Config, b.Config)
		require.Equal(t, a.AppID, b.AppID)
		require.Equal(t, a.Usage, b.Usage)
		require.Equal(t, a.AppInfo, b.AppInfo)
	})
}
