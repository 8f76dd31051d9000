package ratls

import (
	"context"
	"crypto/tls"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/teesql/ratls/tdx"
)

func TestNoopVerifier(t *testing.T) {
	t.Parallel()
	var logs logBuffer
	nv := NewNoopVerifier(newLogger(&logs))
	assert.Contains(t, logs.String(), "NOT verified")

	srv := startTLSServer(t, &tls.Config{Certificates: []tls.Certificate{mintCert(t, certSpec{})}})
	c := testClient(t, Config{Verifier: nv})
	conn, err := c.DialContext(context.Background(), "tcp", srv.addr)
	require.NoError(t, err)
	rep, ok := c.Report(conn)
	require.True(t, ok)
	assert.Empty(t, rep.TCBStatus)
	conn.Close()
	srv.result(t)

	// The key binding is checked whatever the verifier.
	bad := startTLSServer(t, &tls.Config{Certificates: []tls.Certificate{mintCert(t, certSpec{quote: quoteFor(t, newKey(t), nil)})}})
	_, err = c.DialContext(context.Background(), "tcp", bad.addr)
	requireOnlySentinel(t, err, ErrKeyBinding)
	assertNothingSent(t, bad)

	// So is the rest of the policy.
	debug := startTLSServer(t, &tls.Config{Certificates: []tls.Certificate{mintCert(t, certSpec{mutate: func(q *tdx.Quote) { q.Body.TDAttributes[0] |= 1 }})}})
	_, err = c.DialContext(context.Background(), "tcp", debug.addr)
	requireOnlySentinel(t, err, ErrDebugMode)
	assertNothingSent(t, debug)
}

// wrappedVerifier hides the verifier it wraps.
type wrappedVerifier struct{ Verifier }

// Only NoopVerifier itself is exempt from the TCB status check: a wrapper
// that returns its empty status is refused.
func TestNoopExemptionIsNotInherited(t *testing.T) {
	t.Parallel()
	srv := startTLSServer(t, &tls.Config{Certificates: []tls.Certificate{mintCert(t, certSpec{})}})
	c := testClient(t, Config{Verifier: wrappedVerifier{NewNoopVerifier(discardLogger())}})
	_, err := c.DialContext(context.Background(), "tcp", srv.addr)
	requireOnlySentinel(t, err, ErrTCBStatus)
	assertNothingSent(t, srv)
}

func TestNoopVerifierRejectsMalformedQuotes(t *testing.T) {
	t.Parallel()
	_, err := (&NoopVerifier{}).VerifyQuote(context.Background(), []byte("not a quote"))
	require.ErrorIs(t, err, tdx.ErrMalformed)
	v, err := (&NoopVerifier{}).VerifyQuote(context.Background(), quoteFor(t, newKey(t), nil))
	require.NoError(t, err)
	require.NotNil(t, v.Quote)
	assert.Empty(t, v.TCBStatus)
}

func TestAllowSimulator(t *testing.T) {
	t.Parallel()
	var logs logBuffer
	fv := newFakeVerifier()
	c := testClient(t, Config{Verifier: fv, Policy: Policy{AllowSimulator: true}, Logger: newLogger(&logs)})

	srv := startTLSServer(t, &tls.Config{Certificates: []tls.Certificate{mintCert(t, certSpec{noQuote: true})}})
	for range 2 {
		conn, err := c.DialContext(context.Background(), "tcp", srv.addr)
		require.NoError(t, err)
		rep, ok := c.Report(conn)
		require.True(t, ok)
		assert.True(t, rep.Simulated)
		pingPong(t, conn)
		conn.Close()
		srv.result(t)
	}
	assert.Equal(t, 1, logs.count("AllowSimulator"), "warned once per Client:\n%s", logs.String())
	assert.Zero(t, fv.calls.Load())

	// A certificate that carries a quote is verified in full.
	bad := startTLSServer(t, &tls.Config{Certificates: []tls.Certificate{mintCert(t, certSpec{quote: quoteFor(t, newKey(t), nil)})}})
	_, err := c.DialContext(context.Background(), "tcp", bad.addr)
	requireOnlySentinel(t, err, ErrKeyBinding)
	assertNothingSent(t, bad)

	fv.set(func(f *fakeVerifier) { f.verdict.TCBStatus = tdx.TCBRevoked })
	revoked := startTLSServer(t, &tls.Config{Certificates: []tls.Certificate{mintCert(t, certSpec{})}})
	_, err = c.DialContext(context.Background(), "tcp", revoked.addr)
	requireOnlySentinel(t, err, ErrTCBStatus)
	assertNothingSent(t, revoked)
}

func TestConstructionWarnings(t *testing.T) {
	t.Parallel()
	var logs logBuffer
	c := testClient(t, Config{Verifier: newFakeVerifier(), Logger: newLogger(&logs), Policy: Policy{AllowDebugMode: true}})
	srv := startTLSServer(t, &tls.Config{Certificates: []tls.Certificate{mintCert(t, certSpec{})}})
	for range 2 {
		conn, err := c.DialContext(context.Background(), "tcp", srv.addr)
		require.NoError(t, err)
		conn.Close()
		srv.result(t)
	}
	assert.Equal(t, 1, logs.count("MRTD allowlist is empty"))
	assert.Equal(t, 1, logs.count("AllowDebugMode"))

	// A pinned MRTD silences the first warning.
	var quiet logBuffer
	mrtd := recordedQuote(t).Body.MRTD
	testClient(t, Config{Verifier: newFakeVerifier(), Logger: newLogger(&quiet), Policy: Policy{MRTDs: []string{hexOf(mrtd[:])}}})
	assert.Zero(t, quiet.count("MRTD allowlist is empty"))
}
