package testpki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/teesql/ratls/tdx"
)

func newAuthority(t testing.TB, opts Options) *Authority {
	t.Helper()
	a, err := New(opts)
	require.NoError(t, err)
	return a
}

var testNow = time.Date(2025, 6, 25, 12, 0, 0, 0, time.UTC)

// checkQuoteCrypto verifies a parsed quote's three signatures and the QE
// binding by hand, and reports which hold.
func checkQuoteCrypto(t *testing.T, a *Authority, q *tdx.Quote) (quoteSig, qeSig, binding bool) {
	t.Helper()
	x := new(big.Int).SetBytes(q.AttestKey[:32])
	y := new(big.Int).SetBytes(q.AttestKey[32:])
	ak := &ecdsa.PublicKey{Curve: elliptic.P256(), X: x, Y: y}
	verifyRaw := func(pub *ecdsa.PublicKey, msg []byte, sig [64]byte) bool {
		h := sha256.Sum256(msg)
		return ecdsa.Verify(pub, h[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:]))
	}
	quoteSig = verifyRaw(ak, q.SignedBytes(), q.Signature)
	qeSig = verifyRaw(a.PCK().PublicKey.(*ecdsa.PublicKey), q.QEReport.Raw(), q.QEReportSignature)
	want := sha256.Sum256(append(q.AttestKey[:], q.QEAuthData...))
	binding = bytes.Equal(q.QEReport.ReportData[:32], want[:]) && bytes.Equal(q.QEReport.ReportData[32:], make([]byte, 32))
	return quoteSig, qeSig, binding
}

func TestMintQuoteParsesAndRoundTrips(t *testing.T) {
	t.Parallel()
	a := newAuthority(t, Options{Now: testNow})
	for _, tc := range []struct {
		name              string
		version, bodyType uint16
		wantBodyType      uint16
	}{
		{"v4", 0, 0, tdx.BodyTypeTD10},
		{"v4 explicit", 4, tdx.BodyTypeTD10, tdx.BodyTypeTD10},
		{"v5 TD1.0", 5, tdx.BodyTypeTD10, tdx.BodyTypeTD10},
		{"v5 TD1.5", 5, tdx.BodyTypeTD15, tdx.BodyTypeTD15},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			body := a.DefaultBody()
			body.ReportData = [64]byte{1, 2, 3, 63: 0xff}
			body.RTMR[3] = [48]byte{0xaa, 47: 0xbb}
			body.MRTD = [48]byte{0x11}
			body.TDAttributes[0] |= 0x01 // debug: must survive as set
			body.MRServiceTD = [48]byte{0x5e}
			raw, err := a.MintQuote(QuoteOptions{Version: tc.version, BodyType: tc.bodyType, Body: &body})
			require.NoError(t, err)

			q, err := tdx.ParseQuote(raw)
			require.NoError(t, err)
			wantVersion := tc.version
			if wantVersion == 0 {
				wantVersion = 4
			}
			assert.Equal(t, wantVersion, q.Header.Version)
			assert.Equal(t, tc.wantBodyType, q.BodyType)
			if tc.wantBodyType == tdx.BodyTypeTD10 {
				body.TEETCBSVN2, body.MRServiceTD = [16]byte{}, [48]byte{}
			}
			assert.Equal(t, body, q.Body)
			assert.True(t, q.Body.Debug())
			assert.Equal(t, a.QE().AuthData, q.QEAuthData)
			assert.Equal(t, append(a.PCKChainPEM(), 0), q.PCKChainPEM)
			assert.Equal(t, uint16(2), q.QEReport.ISVProdID)
			assert.Equal(t, intelQEMRSigner, q.QEReport.MRSigner)

			again, err := q.UnsignedCopy().Marshal()
			require.NoError(t, err)
			assert.Equal(t, raw, again, "Marshal(ParseQuote(x)) must give x back")

			quoteSig, qeSig, binding := checkQuoteCrypto(t, a, q)
			assert.True(t, quoteSig, "quote signature")
			assert.True(t, qeSig, "QE report signature")
			assert.True(t, binding, "QE report binds the attestation key")
			assert.Equal(t, attestKeyBytes(a.AttestationKey()), q.AttestKey[:])
		})
	}
}

func TestMintQuoteDefects(t *testing.T) {
	t.Parallel()
	a := newAuthority(t, Options{Now: testNow})
	for _, tc := range []struct {
		defect                   Defect
		quoteSig, qeSig, binding bool
		attestKeyIsAuthorityKey  bool
	}{
		{NoDefect, true, true, true, true},
		{BadQuoteSignature, false, true, true, true},
		{BadQEReportSignature, true, false, true, true},
		{UnboundAttestationKey, true, true, false, false},
	} {
		raw, err := a.MintQuote(QuoteOptions{Defect: tc.defect})
		require.NoError(t, err)
		q, err := tdx.ParseQuote(raw)
		require.NoError(t, err, "defect %d must still parse", tc.defect)
		quoteSig, qeSig, binding := checkQuoteCrypto(t, a, q)
		assert.Equal(t, tc.quoteSig, quoteSig, "defect %d: quote signature", tc.defect)
		assert.Equal(t, tc.qeSig, qeSig, "defect %d: QE report signature", tc.defect)
		assert.Equal(t, tc.binding, binding, "defect %d: binding", tc.defect)
		assert.Equal(t, tc.attestKeyIsAuthorityKey, bytes.Equal(q.AttestKey[:], attestKeyBytes(a.AttestationKey())), "defect %d: key", tc.defect)
	}
}

func TestMintQuoteRejectsBadOptions(t *testing.T) {
	t.Parallel()
	a := newAuthority(t, Options{Now: testNow})
	for _, opts := range []QuoteOptions{
		{Version: 3},
		{Version: 6},
		{Version: 4, BodyType: tdx.BodyTypeTD15},
		{Version: 5, BodyType: 7},
		{Defect: Defect(99)},
	} {
		_, err := a.MintQuote(opts)
		assert.ErrorIs(t, err, ErrOptions, "%+v", opts)
	}
}

func TestMintQuoteCustomChain(t *testing.T) {
	t.Parallel()
	a := newAuthority(t, Options{Now: testNow})
	other := newAuthority(t, Options{Now: testNow})
	raw, err := a.MintQuote(QuoteOptions{PCKChainPEM: other.PCKChainPEM()})
	require.NoError(t, err)
	q, err := tdx.ParseQuote(raw)
	require.NoError(t, err)
	assert.Equal(t, other.PCKChainPEM(), q.PCKChainPEM)
	// The QE report was signed by a's PCK key, so under other's PCK it fails.
	blk, _ := pem.Decode(q.PCKChainPEM)
	leaf, err := x509.ParseCertificate(blk.Bytes)
	require.NoError(t, err)
	h := sha256.Sum256(q.QEReport.Raw())
	assert.False(t, ecdsa.Verify(leaf.PublicKey.(*ecdsa.PublicKey), h[:],
		new(big.Int).SetBytes(q.QEReportSignature[:32]), new(big.Int).SetBytes(q.QEReportSignature[32:])))
}

func BenchmarkNew(b *testing.B) {
	for b.Loop() {
		if _, err := New(Options{Now: testNow}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMintQuote(b *testing.B) {
	a := newAuthority(b, Options{Now: testNow})
	for b.Loop() {
		if _, err := a.MintQuote(QuoteOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCollateral(b *testing.B) {
	a := newAuthority(b, Options{Now: testNow})
	for b.Loop() {
		if _, err := a.Collateral(CollateralOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}
