package ratls

import (
	"context"
	"crypto/tls"
	"log/slog"
	"strings"
	"sync"
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

// recordingHandler captures log records, safely from concurrent
// handshakes.
type recordingHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *recordingHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.records = append(h.records, r.Clone())
	h.mu.Unlock()
	return nil
}

func (h *recordingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordingHandler) WithGroup(string) slog.Handler      { return h }

// warnings returns the messages of the warnings containing substr.
func (h *recordingHandler) warnings(substr string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, r := range h.records {
		if r.Level == slog.LevelWarn && strings.Contains(r.Message, substr) {
			out = append(out, r.Message)
		}
	}
	return out
}

// A NoopVerifier is warned about by the Client or Server using it, once,
// however it was made: a composite literal skips NewNoopVerifier's warning.
func TestNoopVerifierWarnsOncePerClientAndServer(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		v    Verifier
	}{
		{"literal", &NoopVerifier{}},
		{"nil pointer", (*NoopVerifier)(nil)},
		{"constructor", NewNoopVerifier(discardLogger())},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var h recordingHandler
			c := testClient(t, Config{Verifier: tt.v, Logger: slog.New(&h)})
			require.Len(t, h.warnings("NoopVerifier"), 1)
			assert.Contains(t, h.warnings("NoopVerifier")[0], "server quotes are NOT verified")

			srv := startTLSServer(t, &tls.Config{Certificates: []tls.Certificate{mintCert(t, certSpec{})}})
			for range 2 {
				conn, err := c.DialContext(context.Background(), "tcp", srv.addr)
				require.NoError(t, err)
				conn.Close()
				srv.result(t)
			}
			assert.Len(t, h.warnings("NoopVerifier"), 1, "warned when built, not per handshake")

			var sh recordingHandler
			testServer(t, ServerConfig{Verifier: tt.v, Logger: slog.New(&sh)})
			require.Len(t, sh.warnings("NoopVerifier"), 1)
			assert.Contains(t, sh.warnings("NoopVerifier")[0], "client quotes are NOT verified")
		})
	}

	// No such warning otherwise, even for a wrapper (which gets no TCB
	// exemption, so is not an unverifying verifier by itself).
	var h recordingHandler
	testClient(t, Config{Verifier: newFakeVerifier(), Logger: slog.New(&h)})
	testClient(t, Config{Verifier: wrappedVerifier{newFakeVerifier()}, Logger: slog.New(&h)})
	testServer(t, ServerConfig{Verifier: newFakeVerifier(), Logger: slog.New(&h)})
	assert.Empty(t, h.warnings("NoopVerifier"))
}

func TestAllowSimulator(t *testing.T) {
	t.Parallel()
	var logs logBuffer
	fv := newFakeVerifier()
	c := testClient(t, Config{Verifier: fv, Policy: Policy{AllowSimulator: true}, Logger: newLogger(&logs)})
	// Warned when built, before any peer is accepted...
	assert.Equal(t, 1, logs.count("AllowSimulator is on: servers"), "warned when built:\n%s", logs.String())
	assert.Zero(t, logs.count("AllowSimulator: accepted"))

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
	// ... and again at the first peer accepted without a quote, once.
	assert.Equal(t, 1, logs.count("AllowSimulator: accepted"), "warned once per Client:\n%s", logs.String())
	assert.Equal(t, 1, logs.count("AllowSimulator is on"))
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

func TestAllowSimulatorServerWarns(t *testing.T) {
	t.Parallel()
	var h recordingHandler
	testServer(t, ServerConfig{Verifier: newFakeVerifier(), ClientPolicy: Policy{AllowSimulator: true}, Logger: slog.New(&h)})
	require.Len(t, h.warnings("AllowSimulator"), 1)
	assert.Contains(t, h.warnings("AllowSimulator")[0], "clients whose certificate carries no TDX quote")

	var quiet recordingHandler
	testServer(t, ServerConfig{Verifier: newFakeVerifier(), Logger: slog.New(&quiet)})
	assert.Empty(t, quiet.warnings("AllowSimulator"))
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
