package ratls

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/teesql/ratls/dcap"
	"github.com/teesql/ratls/ext"
	"github.com/teesql/ratls/tdx"
)

var allSentinels = []error{
	ErrConfig, ErrNoPeerCertificate, ErrCertificateValidity, ErrNoQuote, ErrMalformedExtension,
	ErrKeyBinding, ErrQuoteInvalid, ErrDebugMode, ErrMRTDNotAllowed, ErrTCBStatus, ErrAppIdentity,
	ErrMissingDstackSocket, ErrAgent, ErrHandshakeTimeout,
}

// requireOnlySentinel asserts that err wraps want and no other ratls
// sentinel, directly and once wrapped by a driver.
func requireOnlySentinel(t *testing.T, err error, want error) {
	t.Helper()
	require.Error(t, err)
	for _, e := range []error{err, fmt.Errorf("driver: %w", err)} {
		for _, s := range allSentinels {
			assert.Equal(t, s == want, errors.Is(e, s), "errors.Is(%q, %q)", e, s)
		}
	}
}

func TestDialAccepts(t *testing.T) {
	t.Parallel()
	appID := bytes.Repeat([]byte{0xa1}, 20)
	compose := bytes.Repeat([]byte{0xc0}, 32)
	events, rtmr3 := appEvents(t, appID, compose)
	mrtd := recordedQuote(t).Body.MRTD

	for _, legacy := range []bool{false, true} {
		t.Run(fmt.Sprintf("legacy=%v", legacy), func(t *testing.T) {
			t.Parallel()
			serverCert := mintCert(t, certSpec{
				legacy: legacy,
				events: events,
				mutate: func(q *tdx.Quote) { q.Body.RTMR[3] = rtmr3 },
			})
			srv := startTLSServer(t, &tls.Config{Certificates: []tls.Certificate{serverCert}})
			fv := newFakeVerifier()
			validUntil := time.Now().Add(5 * time.Minute)
			fv.verdict.ValidUntil = validUntil
			c := testClient(t, Config{
				Verifier: fv,
				Policy: Policy{
					MRTDs:         []string{"0x" + hex.EncodeToString(mrtd[:])},
					ComposeHashes: []string{hex.EncodeToString(compose)},
					AppIDs:        []string{hex.EncodeToString(appID)},
				},
			})
			before := time.Now()
			conn, err := c.DialContext(context.Background(), "tcp", srv.addr)
			require.NoError(t, err)
			defer conn.Close()
			pingPong(t, conn)

			rep, ok := c.Report(conn)
			require.True(t, ok)
			q, err := tdx.ParseQuote(quoteFor(t, serverCert.PrivateKey.(*ecdsaKey), nil))
			require.NoError(t, err)
			assert.Equal(t, uint16(4), rep.QuoteVersion)
			assert.Equal(t, mrtd, rep.MRTD)
			assert.Equal(t, rtmr3, rep.RTMR[3])
			assert.Equal(t, q.Body.ReportData, rep.ReportData)
			assert.Equal(t, expectedReportData(serverCert.Leaf), rep.ReportData)
			assert.False(t, rep.Debug)
			assert.False(t, rep.Simulated)
			assert.Equal(t, tdx.TCBUpToDate, rep.TCBStatus)
			assert.Equal(t, []string{"INTEL-SA-00837"}, rep.AdvisoryIDs)
			assert.Equal(t, "B0C06F000000", rep.FMSPC)
			require.NotNil(t, rep.App)
			assert.Equal(t, appID, rep.App.AppID)
			assert.Equal(t, compose, rep.App.ComposeHash)
			wantOID := ext.OIDAttestation.String()
			if legacy {
				wantOID = ext.OIDTDXQuote.String()
			}
			assert.Equal(t, wantOID, rep.SourceOID)
			assert.False(t, rep.VerifiedAt.Before(before))
			// The verdict's bound is the earliest of verdict, certificate
			// and cache TTL here.
			assert.Equal(t, validUntil, rep.ValidUntil)

			// Callers get copies: changing one does not change the next.
			rep.AdvisoryIDs[0] = "changed"
			rep.App.AppID[0] = 0
			again, ok := c.Report(conn)
			require.True(t, ok)
			assert.Equal(t, "INTEL-SA-00837", again.AdvisoryIDs[0])
			assert.Equal(t, appID, again.App.AppID)

			conn.Close()
			res := srv.result(t)
			require.NoError(t, res.handshakeErr)
			assert.Equal(t, 4, res.appBytes)
			// The ClientHello went out with no SNI (IP literal) and TLS 1.3.
			assert.Equal(t, "", res.state.ServerName)
			assert.Equal(t, uint16(tls.VersionTLS13), res.state.Version)
		})
	}
}

func TestDialRejects(t *testing.T) {
	t.Parallel()
	mrtd := recordedQuote(t).Body.MRTD
	otherMRTD := bytes.Repeat([]byte{0xee}, 48)
	appID := bytes.Repeat([]byte{0xa1}, 20)
	compose := bytes.Repeat([]byte{0xc0}, 32)
	events, rtmr3 := appEvents(t, appID, compose)
	collateralExpired := fmt.Errorf("tcb info: %w", dcap.ErrCollateralExpired)

	tests := []struct {
		name     string
		spec     func(t *testing.T) certSpec
		policy   Policy
		verifier func(*fakeVerifier)
		wrap     func(*fakeVerifier) Verifier
		want     error
		// also are further errors the result must match (ext's, the
		// verifier's), and contains texts it must include.
		also     []error
		contains []string
		// verifierCalls is how many times the verifier must have run.
		verifierCalls int32
	}{
		{
			name: "quote bound to another key",
			spec: func(t *testing.T) certSpec {
				return certSpec{quote: quoteFor(t, newKey(t), nil)}
			},
			want:     ErrKeyBinding,
			contains: []string{"REPORTDATA is", "want SHA-512"},
		},
		{
			name: "no quote",
			spec: func(t *testing.T) certSpec { return certSpec{noQuote: true} },
			want: ErrNoQuote,
			also: []error{ext.ErrNoQuote},
		},
		{
			name: "malformed envelope",
			spec: func(t *testing.T) certSpec {
				return certSpec{noQuote: true, extra: []pkix.Extension{octetExt(t, ext.OIDAttestation, []byte{0x00, 0x07, 0xff})}}
			},
			want: ErrMalformedExtension,
			also: []error{ext.ErrMalformed},
		},
		{
			name: "value not an OCTET STRING",
			spec: func(t *testing.T) certSpec {
				return certSpec{noQuote: true, extra: []pkix.Extension{{Id: ext.OIDTDXQuote, Value: []byte{0x30, 0x00}}}}
			},
			want: ErrMalformedExtension,
			also: []error{ext.ErrMalformed},
		},
		{
			name: ".1.1 and .1.8 disagree",
			spec: func(t *testing.T) certSpec {
				key := newKey(t)
				other := quoteFor(t, key, func(q *tdx.Quote) { q.Body.MRTD[0] ^= 1 })
				return certSpec{key: key, extra: []pkix.Extension{octetExt(t, ext.OIDTDXQuote, other)}}
			},
			want: ErrMalformedExtension,
			also: []error{ext.ErrQuoteMismatch},
		},
		{
			name: "debug TD",
			spec: func(t *testing.T) certSpec {
				return certSpec{mutate: func(q *tdx.Quote) { q.Body.TDAttributes[0] |= 1 }}
			},
			want:          ErrDebugMode,
			verifierCalls: 1,
		},
		{
			name:          "MRTD not allowed",
			spec:          func(t *testing.T) certSpec { return certSpec{} },
			policy:        Policy{MRTDs: []string{hex.EncodeToString(otherMRTD)}},
			want:          ErrMRTDNotAllowed,
			contains:      []string{hex.EncodeToString(mrtd[:]), hex.EncodeToString(otherMRTD)},
			verifierCalls: 1,
		},
		{
			name: "TCB out of date",
			spec: func(t *testing.T) certSpec { return certSpec{} },
			verifier: func(f *fakeVerifier) {
				f.verdict.TCBStatus = tdx.TCBOutOfDate
				f.verdict.AdvisoryIDs = []string{"INTEL-SA-00960", "INTEL-SA-00982"}
			},
			want:          ErrTCBStatus,
			contains:      []string{"OutOfDate", "INTEL-SA-00960"},
			verifierCalls: 1,
		},
		{
			name:          "empty TCB status from a real verifier",
			spec:          func(t *testing.T) certSpec { return certSpec{} },
			verifier:      func(f *fakeVerifier) { f.verdict.TCBStatus = "" },
			want:          ErrTCBStatus,
			verifierCalls: 1,
		},
		{
			name:          "verifier refuses the quote",
			spec:          func(t *testing.T) certSpec { return certSpec{} },
			verifier:      func(f *fakeVerifier) { f.err = collateralExpired },
			want:          ErrQuoteInvalid,
			also:          []error{dcap.ErrCollateralExpired},
			verifierCalls: 1,
		},
		{
			// A verifier with another clock (or a buggy one) must not
			// get a verdict past its own ValidUntil accepted.
			name:          "verdict already expired",
			spec:          func(t *testing.T) certSpec { return certSpec{} },
			verifier:      func(f *fakeVerifier) { f.verdict.ValidUntil = time.Now().Add(-time.Second) },
			want:          ErrQuoteInvalid,
			contains:      []string{"verdict held until"},
			verifierCalls: 1,
		},
		{
			name:          "verdict about another quote",
			spec:          func(t *testing.T) certSpec { return certSpec{} },
			wrap:          func(f *fakeVerifier) Verifier { return otherQuoteVerifier{f} },
			want:          ErrQuoteInvalid,
			contains:      []string{"another quote"},
			verifierCalls: 1,
		},
		{
			name: "expired certificate",
			spec: func(t *testing.T) certSpec {
				return certSpec{notBefore: time.Now().Add(-2 * time.Hour), notAfter: time.Now().Add(-time.Minute)}
			},
			want: ErrCertificateValidity,
		},
		{
			name: "certificate not yet valid",
			spec: func(t *testing.T) certSpec {
				return certSpec{notBefore: time.Now().Add(time.Hour), notAfter: time.Now().Add(2 * time.Hour)}
			},
			want: ErrCertificateValidity,
		},
		{
			name: "compose hash not pinned",
			spec: func(t *testing.T) certSpec {
				return certSpec{events: events, mutate: func(q *tdx.Quote) { q.Body.RTMR[3] = rtmr3 }}
			},
			policy:        Policy{ComposeHashes: []string{hex.EncodeToString(bytes.Repeat([]byte{1}, 32))}},
			want:          ErrAppIdentity,
			contains:      []string{hex.EncodeToString(compose)},
			verifierCalls: 1,
		},
		{
			name: "app id not pinned",
			spec: func(t *testing.T) certSpec {
				return certSpec{events: events, mutate: func(q *tdx.Quote) { q.Body.RTMR[3] = rtmr3 }}
			},
			policy:        Policy{AppIDs: []string{hex.EncodeToString(bytes.Repeat([]byte{1}, 20))}},
			want:          ErrAppIdentity,
			contains:      []string{hex.EncodeToString(appID)},
			verifierCalls: 1,
		},
		{
			name:          "pinned but no event log",
			spec:          func(t *testing.T) certSpec { return certSpec{} },
			policy:        Policy{ComposeHashes: []string{hex.EncodeToString(compose)}},
			want:          ErrAppIdentity,
			contains:      []string{"no event log"},
			verifierCalls: 1,
		},
		{
			name: "pinned but the event log does not replay",
			spec: func(t *testing.T) certSpec {
				return certSpec{events: events} // RTMR3 left as recorded
			},
			policy:        Policy{ComposeHashes: []string{hex.EncodeToString(compose)}},
			want:          ErrAppIdentity,
			also:          []error{ext.ErrReplayMismatch},
			verifierCalls: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			serverCert := mintCert(t, tt.spec(t))
			srv := startTLSServer(t, &tls.Config{Certificates: []tls.Certificate{serverCert}})
			fv := newFakeVerifier()
			if tt.verifier != nil {
				tt.verifier(fv)
			}
			var v Verifier = fv
			if tt.wrap != nil {
				v = tt.wrap(fv)
			}
			c := testClient(t, Config{Verifier: v, Policy: tt.policy})
			conn, err := c.DialContext(context.Background(), "tcp", srv.addr)
			require.Nil(t, conn)
			requireOnlySentinel(t, err, tt.want)
			requireErrorIsAll(t, err, tt.also...)
			for _, s := range tt.contains {
				assert.Contains(t, err.Error(), s)
			}
			assert.Equal(t, tt.verifierCalls, fv.calls.Load(), "verifier calls")
			if tt.want == ErrTCBStatus {
				var te *TCBStatusError
				require.ErrorAs(t, err, &te)
				assert.Equal(t, fv.verdict.TCBStatus, te.Status)
				assert.Equal(t, fv.verdict.AdvisoryIDs, te.AdvisoryIDs)
				assert.Equal(t, []tdx.TCBStatus{tdx.TCBUpToDate, tdx.TCBSWHardeningNeeded}, te.Accepted)
			}
			assertNothingSent(t, srv)
		})
	}
}

// otherQuoteVerifier answers with a verdict about a quote other than the
// one it was given.
type otherQuoteVerifier struct{ *fakeVerifier }

func (o otherQuoteVerifier) VerifyQuote(ctx context.Context, quote []byte) (*tdx.Verdict, error) {
	v, err := o.fakeVerifier.VerifyQuote(ctx, quote)
	if err != nil {
		return nil, err
	}
	other := *v.Quote
	other.Body.MRTD[0] ^= 0xff
	v.Quote = &other
	return v, nil
}

// assertNothingSent checks that the server's handshake failed on the
// client's alert and that it read no application data, and that the alert
// carried no detail of why.
func assertNothingSent(t *testing.T, srv *tlsServer) {
	t.Helper()
	res := srv.result(t)
	require.Error(t, res.handshakeErr, "the server must not complete a handshake the client refused")
	assert.Contains(t, res.handshakeErr.Error(), "bad certificate")
	assert.Zero(t, res.appBytes)
}

type ecdsaKey = ecdsa.PrivateKey
