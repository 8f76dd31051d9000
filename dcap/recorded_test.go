package dcap_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/teesql/ratls/dcap"
	"github.com/teesql/ratls/internal/testpki"
	"github.com/teesql/ratls/tdx"
)

func TestRecordedUpToDate(t *testing.T) {
	t.Parallel()
	v := newVerifier(t, dcap.Options{})
	q := recordedQuote(t)
	verdict, err := v.VerifyWithCollateral(context.Background(), q, recordedCollateral(t), recordedValidAt)
	require.NoError(t, err)

	assert.Equal(t, tdx.TCBUpToDate, verdict.TCBStatus)
	assert.Equal(t, recordedFMSPC, verdict.FMSPC)
	// The matching platform level, TDX module level (TDX_01, SVN 6 >= 4)
	// and QE level (ISVSVN >= 4) carry no advisory.
	assert.Empty(t, verdict.AdvisoryIDs)
	// Earliest expiry: the PCK CRL (nextUpdate 10:00:35, before the TCB
	// info's 10:16:03 and the QE identity's 10:32:27).
	assert.Equal(t, time.Date(2025, 7, 19, 10, 0, 35, 0, time.UTC), verdict.ValidUntil.UTC())

	parsed, err := tdx.ParseQuote(q)
	require.NoError(t, err)
	assert.Equal(t, parsed.Body, verdict.Quote.Body, "the verdict exposes the verified TD report")
	assert.Equal(t, uint16(4), verdict.Quote.Header.Version)
	assert.Equal(t, byte(1), verdict.Quote.Body.TEETCBSVN[1], "recorded quote comes from a TDX module major version 1 (TDX_01 identity)")
	assert.False(t, verdict.Quote.Body.Debug())
}

func TestRecordedExpired(t *testing.T) {
	t.Parallel()
	v := newVerifier(t, dcap.Options{})
	_, err := v.VerifyWithCollateral(context.Background(), recordedQuote(t), recordedCollateral(t), recordedExpiredAt)
	require.ErrorIs(t, err, dcap.ErrCollateralExpired)
	assert.NotErrorIs(t, err, dcap.ErrCollateralNotYetValid)
	assert.Contains(t, err.Error(), "2025-07-19", "the message says until when the collateral was valid")
	assert.Contains(t, err.Error(), "2025-08-01", "the message says the verification time")
}

func TestRecordedNotYetValid(t *testing.T) {
	t.Parallel()
	v := newVerifier(t, dcap.Options{})
	// The TCB info and QE identity were issued 2025-06-19.
	_, err := v.VerifyWithCollateral(context.Background(), recordedQuote(t), recordedCollateral(t),
		time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC))
	require.ErrorIs(t, err, dcap.ErrCollateralNotYetValid)
	assert.NotErrorIs(t, err, dcap.ErrCollateralExpired)
}

func TestRecordedAtNextUpdateIsExpired(t *testing.T) {
	t.Parallel()
	v := newVerifier(t, dcap.Options{})
	c := recordedCollateral(t)
	// issueDate <= now < nextUpdate: one second before the PCK CRL's
	// nextUpdate passes, at it fails.
	next := time.Date(2025, 7, 19, 10, 0, 35, 0, time.UTC)
	_, err := v.VerifyWithCollateral(context.Background(), recordedQuote(t), c, next.Add(-time.Second))
	require.NoError(t, err)
	_, err = v.VerifyWithCollateral(context.Background(), recordedQuote(t), c, next)
	require.ErrorIs(t, err, dcap.ErrCollateralExpired)
	assert.Contains(t, err.Error(), "PCK CRL")
}

func TestRecordedTamperedQuote(t *testing.T) {
	t.Parallel()
	v := newVerifier(t, dcap.Options{})
	q := recordedQuote(t)
	otherKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	point, err := otherKey.PublicKey.Bytes() // 04 || X || Y
	require.NoError(t, err)
	otherKeyBytes := [64]byte(point[1:])

	tests := []struct {
		name   string
		mutate func(*tdx.Quote)
		raw    func([]byte) []byte
		want   error
	}{
		{name: "MRTD byte flipped", mutate: func(q *tdx.Quote) { q.Body.MRTD[0] ^= 0x01 }, want: dcap.ErrQuoteSignature},
		{name: "REPORTDATA byte flipped", mutate: func(q *tdx.Quote) { q.Body.ReportData[63] ^= 0x80 }, want: dcap.ErrQuoteSignature},
		{name: "debug bit set", mutate: func(q *tdx.Quote) { q.Body.TDAttributes[0] |= 0x01 }, want: dcap.ErrQuoteSignature},
		{name: "header user data changed", mutate: func(q *tdx.Quote) { q.Header.UserData[0] ^= 0x01 }, want: dcap.ErrQuoteSignature},
		{name: "quote signature flipped", mutate: func(q *tdx.Quote) { q.Signature[10] ^= 0x01 }, want: dcap.ErrQuoteSignature},
		{name: "signature zero", mutate: func(q *tdx.Quote) { q.Signature = [64]byte{} }, want: dcap.ErrQuoteSignature},
		// Another valid key: the QE vouched for a different one.
		{name: "wrong attestation key", mutate: func(q *tdx.Quote) { q.AttestKey = otherKeyBytes }, want: dcap.ErrQEBinding},
		{name: "QE auth data tampered", mutate: func(q *tdx.Quote) { q.QEAuthData[0] ^= 0x01 }, want: dcap.ErrQEBinding},
		{name: "QE auth data extended", mutate: func(q *tdx.Quote) { q.QEAuthData = append(q.QEAuthData, 0) }, want: dcap.ErrQEBinding},
		{name: "QE report data tampered", mutate: func(q *tdx.Quote) {
			r := q.QEReport
			r.ReportData[0] ^= 0x01
			q.QEReport = tdx.NewEnclaveReport(r)
		}, want: dcap.ErrQEReportSignature},
		{name: "QE report signature flipped", mutate: func(q *tdx.Quote) { q.QEReportSignature[5] ^= 0x01 }, want: dcap.ErrQEReportSignature},
		{name: "PCK chain without CA", mutate: func(q *tdx.Quote) {
			end := "-----END CERTIFICATE-----\n"
			q.PCKChainPEM = q.PCKChainPEM[:strings.Index(string(q.PCKChainPEM), end)+len(end)]
		}, want: dcap.ErrPCKChain},
		{name: "PCK chain garbage", mutate: func(q *tdx.Quote) { q.PCKChainPEM = []byte("not a chain") }, want: dcap.ErrPCKChain},
		{name: "version 3", raw: func(b []byte) []byte { b[0] = 3; return b }, want: dcap.ErrUnsupportedQuote},
		{name: "SGX TEE type", raw: func(b []byte) []byte { b[4] = 0; return b }, want: dcap.ErrUnsupportedQuote},
		{name: "attestation key type P-384", raw: func(b []byte) []byte { b[2] = 3; return b }, want: dcap.ErrUnsupportedQuote},
		{name: "truncated", raw: func(b []byte) []byte { return b[:1000] }, want: dcap.ErrMalformedQuote},
		{name: "empty", raw: func([]byte) []byte { return nil }, want: dcap.ErrMalformedQuote},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var bad []byte
			if tt.mutate != nil {
				bad = mutateQuote(t, q, tt.mutate)
			} else {
				bad = tt.raw(append([]byte(nil), q...))
			}
			verdict, err := v.VerifyWithCollateral(context.Background(), bad, recordedCollateral(t), recordedValidAt)
			require.ErrorIs(t, err, tt.want)
			assert.Nil(t, verdict)
			assert.True(t, strings.HasPrefix(err.Error(), "dcap: "), "message %q", err)
		})
	}
}

func TestRecordedTamperedCollateral(t *testing.T) {
	t.Parallel()
	v := newVerifier(t, dcap.Options{})
	q := recordedQuote(t)
	flipHex := func(s string) string {
		b := []byte(s)
		if b[0] == '0' {
			b[0] = '1'
		} else {
			b[0] = '0'
		}
		return string(b)
	}
	tests := []struct {
		name   string
		mutate func(*dcap.Collateral)
		want   error
	}{
		{"TCB info status rewritten", func(c *dcap.Collateral) {
			c.TCBInfo = strings.Replace(c.TCBInfo, `"tcbStatus":"OutOfDate"`, `"tcbStatus":"UpToDate"`, 1)
		}, dcap.ErrCollateralSignature},
		{"TCB info whitespace added", func(c *dcap.Collateral) { c.TCBInfo = " " + c.TCBInfo }, dcap.ErrCollateralSignature},
		{"TCB info fmspc lower-cased", func(c *dcap.Collateral) {
			c.TCBInfo = strings.Replace(c.TCBInfo, recordedFMSPC, strings.ToLower(recordedFMSPC), 1)
		}, dcap.ErrCollateralSignature},
		{"TCB info signature", func(c *dcap.Collateral) { c.TCBInfoSignature = flipHex(c.TCBInfoSignature) }, dcap.ErrCollateralSignature},
		{"TCB info signature not hex", func(c *dcap.Collateral) { c.TCBInfoSignature = "zz" }, dcap.ErrMalformedCollateral},
		{"QE identity isvsvn rewritten", func(c *dcap.Collateral) {
			c.QEIdentity = strings.Replace(c.QEIdentity, `"isvsvn":4`, `"isvsvn":0`, 1)
		}, dcap.ErrCollateralSignature},
		{"QE identity signature", func(c *dcap.Collateral) { c.QEIdentitySignature = flipHex(c.QEIdentitySignature) }, dcap.ErrCollateralSignature},
		{"QE identity signed by TCB info's signature", func(c *dcap.Collateral) { c.QEIdentitySignature = c.TCBInfoSignature }, dcap.ErrCollateralSignature},
		{"TCB info issuer chain is the PCK CA", func(c *dcap.Collateral) { c.TCBInfoIssuerChain = c.PCKCRLIssuerChain }, dcap.ErrCollateralSignature},
		{"PCK CRL issuer chain is the TCB signer", func(c *dcap.Collateral) { c.PCKCRLIssuerChain = c.TCBInfoIssuerChain }, dcap.ErrCollateralSignature},
		{"TCB info issuer chain empty", func(c *dcap.Collateral) { c.TCBInfoIssuerChain = "" }, dcap.ErrMalformedCollateral},
		{"root CA CRL signature", func(c *dcap.Collateral) { c.RootCACRL = flipLastByte(t, c.RootCACRL) }, dcap.ErrCollateralSignature},
		{"PCK CRL is the root CA CRL", func(c *dcap.Collateral) { c.PCKCRL = c.RootCACRL }, dcap.ErrCollateralSignature},
		{"PCK CRL signature", func(c *dcap.Collateral) { c.PCKCRL = flipLastByte(t, c.PCKCRL) }, dcap.ErrCollateralSignature},
		{"PCK CRL not hex", func(c *dcap.Collateral) { c.PCKCRL = "xyz" }, dcap.ErrMalformedCollateral},
		{"TCB info and QE identity swapped", func(c *dcap.Collateral) {
			c.TCBInfo, c.QEIdentity = c.QEIdentity, c.TCBInfo
			c.TCBInfoSignature, c.QEIdentitySignature = c.QEIdentitySignature, c.TCBInfoSignature
		}, dcap.ErrMalformedCollateral},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := recordedCollateral(t)
			tt.mutate(c)
			_, err := v.VerifyWithCollateral(context.Background(), q, c, recordedValidAt)
			require.ErrorIs(t, err, tt.want)
			assert.True(t, strings.HasPrefix(err.Error(), "dcap: "), "message %q", err)
		})
	}
}

// flipLastByte flips a bit of the last byte of hex DER: inside the
// signature's s value, so the CRL still parses but no longer verifies.
func flipLastByte(t *testing.T, h string) string {
	b, err := hex.DecodeString(h)
	require.NoError(t, err)
	b[len(b)-1] ^= 0x01
	return hex.EncodeToString(b)
}

func TestRecordedNilCollateral(t *testing.T) {
	t.Parallel()
	v := newVerifier(t, dcap.Options{})
	_, err := v.VerifyWithCollateral(context.Background(), recordedQuote(t), nil, recordedValidAt)
	require.ErrorIs(t, err, dcap.ErrMalformedCollateral)
}

func TestRecordedCancelledContext(t *testing.T) {
	t.Parallel()
	v := newVerifier(t, dcap.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := v.VerifyWithCollateral(ctx, recordedQuote(t), recordedCollateral(t), recordedValidAt)
	require.ErrorIs(t, err, context.Canceled)
}

// A verifier pinned to another root refuses the real quote: its PCK chain
// ends in Intel's root.
func TestRecordedOtherRoot(t *testing.T) {
	t.Parallel()
	a, err := testpki.New(testpki.Options{})
	require.NoError(t, err)
	v := newVerifier(t, dcap.Options{TrustedRoot: a.Root()})
	_, err = v.VerifyWithCollateral(context.Background(), recordedQuote(t), recordedCollateral(t), recordedValidAt)
	require.ErrorIs(t, err, dcap.ErrPCKChain)
	assert.Contains(t, err.Error(), dcap.IntelRootCASHA256, "the message names the expected root")
}

func TestCollateralJSONRoundTrip(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../testdata/dcap-qvl/tdx_quote_collateral.json")
	require.NoError(t, err)
	var c dcap.Collateral
	require.NoError(t, json.Unmarshal(raw, &c))
	out, err := json.Marshal(&c)
	require.NoError(t, err)

	// Same keys, same values: nothing lost or renamed.
	var want, got map[string]string
	require.NoError(t, json.Unmarshal(raw, &want))
	require.NoError(t, json.Unmarshal(out, &got))
	assert.Equal(t, want, got)

	var back dcap.Collateral
	require.NoError(t, json.Unmarshal(out, &back))
	assert.Equal(t, c, back)
	v := newVerifier(t, dcap.Options{})
	verdict, err := v.VerifyWithCollateral(context.Background(), recordedQuote(t), &back, recordedValidAt)
	require.NoError(t, err)
	assert.Equal(t, tdx.TCBUpToDate, verdict.TCBStatus)
}

func TestParseRecordedCollateral(t *testing.T) {
	t.Parallel()
	c := recordedCollateral(t)
	info, err := dcap.ParseTCBInfo([]byte(c.TCBInfo))
	require.NoError(t, err)
	assert.Equal(t, "TDX", info.ID)
	assert.Equal(t, 3, info.Version)
	assert.Equal(t, recordedFMSPC, info.FMSPC)
	require.Len(t, info.TCBLevels, 2)
	assert.Equal(t, tdx.TCBOutOfDate, info.TCBLevels[1].TCBStatus)
	assert.Contains(t, info.TCBLevels[1].AdvisoryIDs, "INTEL-SA-00837")
	require.Len(t, info.TDXModuleIdentities, 2)
	assert.Equal(t, "TDX_03", info.TDXModuleIdentities[0].ID)
	assert.Len(t, info.TDXModuleIdentities[0].MRSigner, 48)

	qe, err := dcap.ParseQEIdentity([]byte(c.QEIdentity))
	require.NoError(t, err)
	assert.Equal(t, "TD_QE", qe.ID)
	assert.Equal(t, uint16(2), qe.ISVProdID)
	assert.Equal(t, uint16(4), qe.TCBLevels[0].TCB.ISVSVN)

	// Each parser refuses the other's document.
	_, err = dcap.ParseTCBInfo([]byte(c.QEIdentity))
	require.ErrorIs(t, err, dcap.ErrMalformedCollateral)
	_, err = dcap.ParseQEIdentity([]byte(c.TCBInfo))
	require.ErrorIs(t, err, dcap.ErrMalformedCollateral)
}

func TestParseTCBInfoRejects(t *testing.T) {
	t.Parallel()
	base := recordedCollateral(t).TCBInfo
	tests := map[string]string{
		"not JSON":           "{",
		"SGX id":             strings.Replace(base, `"id":"TDX"`, `"id":"SGX"`, 1),
		"version 2":          strings.Replace(base, `"version":3`, `"version":2`, 1),
		"tcbType 1":          strings.Replace(base, `"tcbType":0`, `"tcbType":1`, 1),
		"short fmspc":        strings.Replace(base, `"fmspc":"B0C06F000000"`, `"fmspc":"B0C06F"`, 1),
		"no tdxModule":       strings.Replace(base, `"tdxModule":`, `"tdxModuleX":`, 1),
		"unknown status":     strings.Replace(base, `"tcbStatus":"OutOfDate"`, `"tcbStatus":"Fine"`, 1),
		"svn out of range":   strings.Replace(base, `{"svn":2,"category":"BIOS","type":"Early Microcode Update"}`, `{"svn":256}`, 1),
		"15 sgx components":  strings.Replace(base, `{"svn":2,"category":"BIOS","type":"Early Microcode Update"},`, ``, 1),
		"nextUpdate missing": strings.Replace(base, `"nextUpdate"`, `"nextUpdateX"`, 1),
		"mrsigner not hex":   strings.Replace(base, `"mrsigner":"0000`, `"mrsigner":"zz00`, 1),
	}
	for name, doc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			require.NotEqual(t, base, doc, "the test edit must apply")
			_, err := dcap.ParseTCBInfo([]byte(doc))
			require.ErrorIs(t, err, dcap.ErrMalformedCollateral)
		})
	}
}
