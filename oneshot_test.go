package ratls

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/teesql/ratls/dcap"
	"github.com/teesql/ratls/ext"
	"github.com/teesql/ratls/tdx"
)

// bareQuote is the recorded quote re-encoded after mutate.
func bareQuote(t *testing.T, mutate func(*tdx.Quote)) []byte {
	t.Helper()
	q := recordedQuote(t).UnsignedCopy()
	if mutate != nil {
		mutate(q)
	}
	b, err := q.Marshal()
	require.NoError(t, err)
	return b
}

// policyCase is one policy applied by VerifyQuote and VerifyCertificate.
// want nil: accepted; a policy sentinel: refused with the report.
type policyCase struct {
	name    string
	policy  Policy
	mutate  func(*tdx.Quote)
	verdict func(*tdx.Verdict)
	want    error
}

func policyCases(t *testing.T) []policyCase {
	mrtd := recordedQuote(t).Body.MRTD
	lower := hex.EncodeToString(mrtd[:])
	other := strings.Repeat("00", 48)
	debug := func(q *tdx.Quote) { q.Body.TDAttributes[0] |= 1 }
	outOfDate := func(v *tdx.Verdict) { v.TCBStatus = tdx.TCBOutOfDate }
	return []policyCase{
		{name: "zero policy"},
		{name: "MRTD pinned", policy: Policy{MRTDs: []string{other, lower}}},
		{name: "MRTD pinned 0x upper case", policy: Policy{MRTDs: []string{"0x" + strings.ToUpper(lower)}}},
		{name: "MRTD not allowed", policy: Policy{MRTDs: []string{other}}, want: ErrMRTDNotAllowed},
		{name: "debug TD", mutate: debug, want: ErrDebugMode},
		{name: "debug TD allowed", mutate: debug, policy: Policy{AllowDebugMode: true}},
		{name: "TCB status refused", verdict: outOfDate, want: ErrTCBStatus},
		{name: "TCB status accepted", verdict: outOfDate, policy: Policy{AcceptTCBStatuses: []tdx.TCBStatus{tdx.TCBOutOfDate}}},
		{name: "TCB status missing", verdict: func(v *tdx.Verdict) { v.TCBStatus = "" }, want: ErrTCBStatus},
	}
}

// Each policy case, applied by VerifyQuote to a bare quote and by
// VerifyCertificate to a certificate carrying that quote.
func TestOneShotPolicy(t *testing.T) {
	t.Parallel()
	for _, tc := range policyCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fv := newFakeVerifier()
			if tc.verdict != nil {
				tc.verdict(&fv.verdict)
			}
			quote := bareQuote(t, tc.mutate)
			q, err := tdx.ParseQuote(quote)
			require.NoError(t, err)
			cert := mintCert(t, certSpec{mutate: tc.mutate})

			bare, bareErr := VerifyQuote(context.Background(), quote, tc.policy, fv)
			full, fullErr := VerifyCertificate(context.Background(), cert.Leaf, tc.policy, fv)
			assert.EqualValues(t, 2, fv.calls.Load())
			for _, err := range []error{bareErr, fullErr} {
				if tc.want != nil {
					requireOnlySentinel(t, err, tc.want)
				} else {
					require.NoError(t, err)
				}
			}
			// Accepted or refused by the policy alone, the quote verified:
			// its report comes back.
			for _, rep := range []*Report{bare, full} {
				require.NotNil(t, rep)
				assert.Equal(t, q.Body.MRTD, rep.MRTD)
				assert.Equal(t, q.Body.RTMR, rep.RTMR)
				assert.Equal(t, q.Body.Debug(), rep.Debug)
				assert.Equal(t, fv.verdict.TCBStatus, rep.TCBStatus)
				assert.Equal(t, fv.verdict.FMSPC, rep.FMSPC)
			}
			assert.Empty(t, bare.SourceOID)
			assert.Nil(t, bare.App)
			assert.Equal(t, ext.OIDAttestation.String(), full.SourceOID)
			assert.Equal(t, expectedReportData(cert.Leaf), full.ReportData)
		})
	}
}

func TestVerifyQuoteRefusals(t *testing.T) {
	t.Parallel()
	compose := strings.Repeat("c0", 32)
	tests := []struct {
		name   string
		quote  []byte // nil: the recorded quote
		policy Policy
		setup  func(*fakeVerifier)
		opts   []VerifyOption
		want   error
		report bool // a report comes with the error
		msg    string
		calls  int32 // verifier calls
	}{
		{name: "compose hash pinned", policy: Policy{ComposeHashes: []string{compose}},
			want: ErrAppIdentity, report: true, msg: "a bare quote has no event log", calls: 1},
		{name: "app id pinned", policy: Policy{AppIDs: []string{strings.Repeat("a1", 20)}},
			want: ErrAppIdentity, report: true, msg: "a bare quote has no event log", calls: 1},
		{name: "bad policy", policy: Policy{MRTDs: []string{"0xZZ"}}, want: ErrConfig, msg: "Policy.MRTDs[0]"},
		{name: "unknown TCB status", policy: Policy{AcceptTCBStatuses: []tdx.TCBStatus{"Fine"}}, want: ErrConfig},
		{name: "malformed quote", quote: []byte("\x04\x00not a quote"), want: ErrQuoteInvalid},
		{name: "verifier refuses", setup: func(f *fakeVerifier) { f.err = errors.New("bad signature") },
			want: ErrQuoteInvalid, msg: "bad signature", calls: 1},
		{name: "verdict expired", setup: func(f *fakeVerifier) { f.verdict.ValidUntil = time.Now().Add(-time.Minute) },
			want: ErrQuoteInvalid, msg: "held until", calls: 1},
		{name: "verdict expired at the given time", setup: func(f *fakeVerifier) { f.verdict.ValidUntil = time.Now() },
			opts: []VerifyOption{VerifyAt(time.Now().Add(time.Hour))}, want: ErrQuoteInvalid, msg: "held until", calls: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fv := newFakeVerifier()
			if tt.setup != nil {
				tt.setup(fv)
			}
			quote := tt.quote
			if quote == nil {
				quote = bareQuote(t, nil)
			}
			rep, err := VerifyQuote(context.Background(), quote, tt.policy, fv, tt.opts...)
			requireOnlySentinel(t, err, tt.want)
			assert.Contains(t, err.Error(), tt.msg)
			assert.Equal(t, tt.report, rep != nil, "report %+v", rep)
			assert.Equal(t, tt.calls, fv.calls.Load())
		})
	}
}

func TestVerifyQuoteReportTimes(t *testing.T) {
	t.Parallel()
	at := time.Date(2025, 6, 25, 0, 0, 0, 0, time.UTC)
	fv := newFakeVerifier()
	fv.verdict.ValidUntil = at.Add(24 * time.Hour)
	// The verdict still holds at the given time, though not now.
	rep, err := VerifyQuote(context.Background(), bareQuote(t, nil), Policy{}, fv, VerifyAt(at))
	require.NoError(t, err)
	assert.Equal(t, at, rep.VerifiedAt)
	assert.Equal(t, fv.verdict.ValidUntil, rep.ValidUntil)

	// A verifier that gives no bound: neither does the report.
	rep, err = VerifyQuote(context.Background(), bareQuote(t, nil), Policy{}, newFakeVerifier())
	require.NoError(t, err)
	assert.True(t, rep.ValidUntil.IsZero())
}

func TestVerifyQuoteNoopVerifier(t *testing.T) {
	t.Parallel()
	rep, err := VerifyQuote(context.Background(), bareQuote(t, nil), Policy{}, &NoopVerifier{})
	require.NoError(t, err)
	assert.Empty(t, rep.TCBStatus)
}

// collateralVerifier verifies quotes with DCAP against recorded collateral.
type collateralVerifier struct {
	v    *dcap.Verifier
	coll *dcap.Collateral
	at   time.Time
}

func (c collateralVerifier) VerifyQuote(ctx context.Context, quote []byte) (*tdx.Verdict, error) {
	return c.v.VerifyWithCollateral(ctx, quote, c.coll, c.at)
}

// The recorded quote, really verified with its recorded collateral, at a
// time inside and after the collateral's window.
func TestVerifyQuoteRecorded(t *testing.T) {
	t.Parallel()
	quote, err := os.ReadFile("testdata/dcap-qvl/tdx_quote")
	require.NoError(t, err)
	b, err := os.ReadFile("testdata/dcap-qvl/tdx_quote_collateral.json")
	require.NoError(t, err)
	var coll dcap.Collateral
	require.NoError(t, json.Unmarshal(b, &coll))
	mrtd := recordedQuote(t).Body.MRTD
	pinned := Policy{MRTDs: []string{"0x" + strings.ToUpper(hex.EncodeToString(mrtd[:]))}}

	verifierAt := func(at time.Time) Verifier {
		v, err := dcap.New(dcap.Options{Now: func() time.Time { return at }, Logger: discardLogger()})
		require.NoError(t, err)
		return collateralVerifier{v: v, coll: &coll, at: at}
	}
	ctx := context.Background()
	inWindow := time.Date(2025, 6, 25, 0, 0, 0, 0, time.UTC)
	rep, err := VerifyQuote(ctx, quote, pinned, verifierAt(inWindow), VerifyAt(inWindow))
	require.NoError(t, err)
	assert.Equal(t, tdx.TCBUpToDate, rep.TCBStatus)
	assert.Equal(t, mrtd, rep.MRTD)
	assert.True(t, strings.EqualFold("B0C06F000000", rep.FMSPC), rep.FMSPC)
	assert.True(t, rep.ValidUntil.After(inWindow))

	// The same verdict, judged now: the collateral no longer holds.
	_, err = VerifyQuote(ctx, quote, pinned, verifierAt(inWindow))
	requireOnlySentinel(t, err, ErrQuoteInvalid)

	expired := time.Date(2025, 8, 1, 0, 0, 0, 0, time.UTC)
	rep, err = VerifyQuote(ctx, quote, pinned, verifierAt(expired), VerifyAt(expired))
	requireOnlySentinel(t, err, ErrQuoteInvalid)
	assert.Nil(t, rep)
}

func TestVerifyCertificate(t *testing.T) {
	t.Parallel()
	appID := bytes.Repeat([]byte{0xa1}, 20)
	compose := bytes.Repeat([]byte{0xc0}, 32)
	events, rtmr3 := appEvents(t, appID, compose)
	withApp := certSpec{events: events, mutate: func(q *tdx.Quote) { q.Body.RTMR[3] = rtmr3 }}
	pinApp := Policy{ComposeHashes: []string{hex.EncodeToString(compose)}, AppIDs: []string{hex.EncodeToString(appID)}}
	other := newKey(t)
	tests := []struct {
		name   string
		spec   certSpec
		policy Policy
		opts   []VerifyOption
		want   error // nil: accepted
		report bool  // with an error: a report comes with it
		msg    string
	}{
		{name: "app identity pinned", spec: withApp, policy: pinApp},
		{name: "legacy extension", spec: certSpec{legacy: true}},
		{name: "compose hash not allowed", spec: withApp, policy: Policy{ComposeHashes: []string{strings.Repeat("00", 32)}},
			want: ErrAppIdentity, report: true, msg: "compose hash"},
		{name: "no event log", policy: pinApp, want: ErrAppIdentity, report: true, msg: "carries no event log"},
		{name: "event log does not replay", spec: certSpec{events: events}, policy: pinApp, want: ErrAppIdentity, report: true},
		{name: "copied quote", spec: certSpec{quote: quoteFor(t, other, nil)}, want: ErrKeyBinding},
		{name: "no quote", spec: certSpec{noQuote: true}, want: ErrNoQuote},
		{name: "expired", spec: certSpec{notBefore: time.Now().Add(-2 * time.Hour), notAfter: time.Now().Add(-time.Hour)},
			want: ErrCertificateValidity},
		{name: "valid at the given time", spec: certSpec{notBefore: time.Now().Add(-2 * time.Hour), notAfter: time.Now().Add(-time.Hour)},
			opts: []VerifyOption{VerifyAt(time.Now().Add(-90 * time.Minute))}},
		{name: "bad policy", policy: Policy{AppIDs: []string{"abc"}}, want: ErrConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cert := mintCert(t, tt.spec)
			rep, err := VerifyCertificate(context.Background(), cert.Leaf, tt.policy, newFakeVerifier(), tt.opts...)
			if tt.want == nil {
				require.NoError(t, err)
				require.NotNil(t, rep)
				if len(tt.policy.ComposeHashes) > 0 {
					require.NotNil(t, rep.App)
					assert.Equal(t, compose, rep.App.ComposeHash)
				}
				assert.False(t, rep.ValidUntil.After(cert.Leaf.NotAfter))
				return
			}
			requireOnlySentinel(t, err, tt.want)
			assert.Contains(t, err.Error(), tt.msg)
			assert.Equal(t, tt.report, rep != nil, "report %+v", rep)
		})
	}
}

func TestVerifyCertificateSimulator(t *testing.T) {
	t.Parallel()
	cert := mintCert(t, certSpec{noQuote: true})
	var logs logBuffer
	fv := newFakeVerifier()
	rep, err := VerifyCertificate(context.Background(), cert.Leaf, Policy{AllowSimulator: true}, fv, VerifyLogger(newLogger(&logs)))
	require.NoError(t, err)
	assert.True(t, rep.Simulated)
	assert.Zero(t, fv.calls.Load())
	assert.Contains(t, logs.String(), "NOT attested")
	assert.Contains(t, logs.String(), "MRTD allowlist is empty")

	// Without a logger, nothing is logged anywhere, and the report still
	// says what happened.
	rep, err = VerifyCertificate(context.Background(), cert.Leaf, Policy{AllowSimulator: true}, fv)
	require.NoError(t, err)
	assert.True(t, rep.Simulated)
}

func TestVerifyCertificateNil(t *testing.T) {
	t.Parallel()
	_, err := VerifyCertificate(context.Background(), nil, Policy{}, newFakeVerifier())
	requireOnlySentinel(t, err, ErrNoPeerCertificate)
	// The policy is checked first.
	_, err = VerifyCertificate(context.Background(), nil, Policy{MRTDs: []string{"1"}}, newFakeVerifier())
	requireOnlySentinel(t, err, ErrConfig)
}

// The one-shot checks are the connections' checks: a certificate a Client
// refuses, VerifyCertificate refuses with the same error.
func TestVerifyCertificateAgreesWithClient(t *testing.T) {
	t.Parallel()
	mrtd := strings.Repeat("11", 48)
	cert := mintCert(t, certSpec{})
	c := testClient(t, Config{Verifier: newFakeVerifier(), Policy: Policy{MRTDs: []string{mrtd}}, CacheTTL: -1})
	_, connErr := c.VerifyConnection(tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert.Leaf}})
	requireOnlySentinel(t, connErr, ErrMRTDNotAllowed)
	_, err := VerifyCertificate(context.Background(), cert.Leaf, Policy{MRTDs: []string{mrtd}}, newFakeVerifier())
	requireOnlySentinel(t, err, ErrMRTDNotAllowed)
	assert.Equal(t, connErr.Error(), err.Error())
}

// The verifier's work stops when ctx ends.
func TestVerifyQuoteContext(t *testing.T) {
	t.Parallel()
	fv := newFakeVerifier()
	fv.release = make(chan struct{}) // never released
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := VerifyQuote(ctx, bareQuote(t, nil), Policy{}, fv)
	requireOnlySentinel(t, err, ErrQuoteInvalid)
	assert.ErrorIs(t, err, context.Canceled)
}
