package ratls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// localAgent is a minimal GetTlsKey handler on a unix socket, used through
// the real dstack SDK. (ratlstest has the full double, but it imports this
// package and so cannot serve this package's internal tests.) It issues
// RA-TLS certificates from mintCert, valid from its clock's now for
// validity.
type localAgent struct {
	t        *testing.T
	sock     string
	now      func() time.Time
	validity time.Duration

	mu       sync.Mutex
	failing  bool
	requests []map[string]any
	calls    atomic.Int32
}

func startLocalAgent(t *testing.T, now func() time.Time, validity time.Duration) *localAgent {
	t.Helper()
	dir, err := os.MkdirTemp("", "ratls")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	a := &localAgent{t: t, sock: filepath.Join(dir, "dstack.sock"), now: now, validity: validity}
	ln, err := net.Listen("unix", a.sock)
	require.NoError(t, err)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(a.serve))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return a
}

func (a *localAgent) setFailing(f bool) {
	a.mu.Lock()
	a.failing = f
	a.mu.Unlock()
}

func (a *localAgent) serve(w http.ResponseWriter, r *http.Request) {
	a.calls.Add(1)
	var req map[string]any
	if r.URL.Path != "/GetTlsKey" || json.NewDecoder(r.Body).Decode(&req) != nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	a.mu.Lock()
	a.requests = append(a.requests, req)
	failing := a.failing
	a.mu.Unlock()
	if failing {
		http.Error(w, "KMS unavailable", http.StatusServiceUnavailable)
		return
	}
	now := a.now()
	cert := mintCert(a.t, certSpec{notBefore: now.Add(-time.Minute), notAfter: now.Add(a.validity)})
	p8, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	json.NewEncoder(w).Encode(map[string]any{
		"key":               string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8})),
		"certificate_chain": []string{string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}))},
	})
}

func (a *localAgent) lastRequest() map[string]any {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.requests[len(a.requests)-1]
}

// manualTimers hands the renewal loop's timers to the test.
type manualTimers struct{ c chan manualTimer }

type manualTimer struct {
	d    time.Duration
	fire chan time.Time
}

func newManualTimers() *manualTimers { return &manualTimers{c: make(chan manualTimer, 8)} }

func (m *manualTimers) newTimer(d time.Duration) (<-chan time.Time, func() bool) {
	tm := manualTimer{d: d, fire: make(chan time.Time, 1)}
	m.c <- tm
	return tm.fire, func() bool { return true }
}

func (m *manualTimers) next(t *testing.T) manualTimer {
	t.Helper()
	select {
	case tm := <-m.c:
		return tm
	case <-time.After(10 * time.Second):
		t.Fatal("no renewal timer started")
		return manualTimer{}
	}
}

// noAgentHooks make discovery find nothing on any machine.
func noAgentHooks(t *testing.T) *hooks {
	dir := t.TempDir()
	return &hooks{
		sockets: []string{filepath.Join(dir, "dstack.sock"), filepath.Join(dir, "run", "dstack.sock")},
		getenv:  func(string) string { return "" },
	}
}

func TestNewClientMissingDstackSocket(t *testing.T) {
	t.Parallel()
	h := noAgentHooks(t)
	_, err := NewClient(context.Background(), Config{Verifier: newFakeVerifier(), Logger: discardLogger(), hooks: h})
	requireOnlySentinel(t, err, ErrMissingDstackSocket)
	assert.Contains(t, err.Error(), h.sockets[0])
	assert.Contains(t, err.Error(), "DSTACK_SIMULATOR_ENDPOINT")

	_, err = NewServer(context.Background(), ServerConfig{Verifier: newFakeVerifier(), Logger: discardLogger(), hooks: h})
	requireOnlySentinel(t, err, ErrMissingDstackSocket)

	// A configured socket that does not exist is as missing.
	_, err = NewClient(context.Background(), Config{
		Verifier: newFakeVerifier(), Logger: discardLogger(), hooks: h,
		DstackEndpoint: h.sockets[0],
	})
	requireOnlySentinel(t, err, ErrMissingDstackSocket)
}

// staleSocket leaves a socket file in a new directory that nothing listens
// on, as an agent that died without cleaning up does.
func staleSocket(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ratls")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "dstack.sock")
	l, err := net.Listen("unix", path)
	require.NoError(t, err)
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	require.NoError(t, l.Close())
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.NotZero(t, fi.Mode()&os.ModeSocket, "the stale socket file is still there")
	return path
}

// Files left at the standard socket paths are not an agent: discovery
// skips them and reports that there is none.
func TestStaleStandardSockets(t *testing.T) {
	t.Parallel()
	regular := filepath.Join(t.TempDir(), "dstack.sock")
	require.NoError(t, os.WriteFile(regular, nil, 0o600))
	h := noAgentHooks(t)
	h.sockets = []string{staleSocket(t), regular, h.sockets[0]}

	_, err := NewClient(context.Background(), Config{Verifier: newFakeVerifier(), Logger: discardLogger(), hooks: h})
	requireOnlySentinel(t, err, ErrMissingDstackSocket)
	assert.Contains(t, err.Error(), h.sockets[0]+" refused them")
	_, err = NewServer(context.Background(), ServerConfig{Verifier: newFakeVerifier(), Logger: discardLogger(), hooks: h})
	requireOnlySentinel(t, err, ErrMissingDstackSocket)

	// A live agent at a later path is found past the stale one.
	a := startLocalAgent(t, time.Now, time.Hour)
	h.sockets = append(h.sockets, a.sock)
	c, err := NewClient(context.Background(), Config{Verifier: newFakeVerifier(), Logger: discardLogger(), hooks: h})
	require.NoError(t, err)
	c.Close()
	s, err := NewServer(context.Background(), ServerConfig{Verifier: newFakeVerifier(), Logger: discardLogger(), hooks: h})
	require.NoError(t, err)
	s.Close()
	assert.Equal(t, int32(2), a.calls.Load())
}

// An endpoint named explicitly where nothing listens is no agent either;
// the error also says that the request failed, and names the endpoint.
func TestDeadExplicitEndpoint(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	deadURL := "http://" + l.Addr().String()
	require.NoError(t, l.Close())
	stale := staleSocket(t)
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == "DSTACK_SIMULATOR_ENDPOINT" {
				return v
			}
			return ""
		}
	}

	tests := []struct {
		name     string
		endpoint string // DstackEndpoint
		env      string // DSTACK_SIMULATOR_ENDPOINT
		source   string
		named    string
	}{
		{"configured stale socket", stale, "", "DstackEndpoint", stale},
		{"configured dead URL", deadURL, "", "DstackEndpoint", deadURL},
		{"environment stale socket", "", stale, "DSTACK_SIMULATOR_ENDPOINT", stale},
		{"environment dead URL", "", deadURL, "DSTACK_SIMULATOR_ENDPOINT", deadURL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := noAgentHooks(t)
			h.getenv = env(tt.env)
			_, err := NewClient(context.Background(), Config{
				Verifier: newFakeVerifier(), Logger: discardLogger(), DstackEndpoint: tt.endpoint, hooks: h,
			})
			requireErrorIsAll(t, err, ErrMissingDstackSocket, ErrAgent)
			assert.Contains(t, err.Error(), tt.source)
			assert.Contains(t, err.Error(), tt.named)
			for _, s := range allSentinels {
				if s != ErrMissingDstackSocket && s != ErrAgent {
					assert.NotErrorIs(t, err, s)
				}
			}

			_, err = NewServer(context.Background(), ServerConfig{
				Verifier: newFakeVerifier(), Logger: discardLogger(), DstackEndpoint: tt.endpoint, hooks: h,
			})
			requireErrorIsAll(t, err, ErrMissingDstackSocket, ErrAgent)
			assert.Contains(t, err.Error(), tt.named)
		})
	}
}

func TestAgentDiscovery(t *testing.T) {
	t.Parallel()
	a := startLocalAgent(t, time.Now, time.Hour)
	// Found through the environment variable...
	c, err := NewClient(context.Background(), Config{
		Verifier: newFakeVerifier(), Logger: discardLogger(),
		hooks: &hooks{sockets: noAgentHooks(t).sockets, getenv: func(k string) string {
			if k == "DSTACK_SIMULATOR_ENDPOINT" {
				return a.sock
			}
			return ""
		}},
	})
	require.NoError(t, err)
	c.Close()
	// ... and as one of the standard sockets.
	h := noAgentHooks(t)
	h.sockets = append(h.sockets, a.sock)
	c, err = NewClient(context.Background(), Config{Verifier: newFakeVerifier(), Logger: discardLogger(), hooks: h})
	require.NoError(t, err)
	c.Close()
	assert.Equal(t, int32(2), a.calls.Load())
	req := a.lastRequest()
	assert.Equal(t, true, req["usage_ra_tls"])
	assert.Equal(t, true, req["usage_client_auth"])
	assert.Equal(t, false, req["usage_server_auth"])
}

func TestNewClientAgentFailure(t *testing.T) {
	t.Parallel()
	a := startLocalAgent(t, time.Now, time.Hour)
	a.setFailing(true)
	_, err := NewClient(context.Background(), Config{
		Verifier: newFakeVerifier(), Logger: discardLogger(), DstackEndpoint: a.sock, hooks: noAgentHooks(t),
	})
	requireOnlySentinel(t, err, ErrAgent)
	assert.Contains(t, err.Error(), "503")
}

// clientCertServer requires a client certificate and reports the serial of
// the one it got; it verifies nothing. Its own certificate is valid for a
// day either side of now, so that tests can move their client's clock.
func clientCertServer(t *testing.T) *tlsServer {
	return startTLSServer(t, &tls.Config{
		Certificates: []tls.Certificate{mintCert(t, certSpec{
			notBefore: time.Now().Add(-24 * time.Hour), notAfter: time.Now().Add(24 * time.Hour),
		})},
		ClientAuth: tls.RequireAnyClientCert,
	})
}

func clientSerial(t *testing.T, c *Client, srv *tlsServer) *big.Int {
	t.Helper()
	conn, err := c.DialContext(context.Background(), "tcp", srv.addr)
	require.NoError(t, err)
	pingPong(t, conn)
	conn.Close()
	res := srv.result(t)
	require.NoError(t, res.handshakeErr)
	require.Len(t, res.state.PeerCertificates, 1)
	return res.state.PeerCertificates[0].SerialNumber
}

func TestClientCertificateRenewal(t *testing.T) {
	t.Parallel()
	a := startLocalAgent(t, time.Now, 3*time.Hour)
	timers := newManualTimers()
	var logs logBuffer
	h := noAgentHooks(t)
	h.newTimer = timers.newTimer
	h.minBackoff = 5 * time.Second
	c, err := NewClient(context.Background(), Config{
		Verifier: newFakeVerifier(), Logger: newLogger(&logs), DstackEndpoint: a.sock, hooks: h,
	})
	require.NoError(t, err)
	defer c.Close()
	srv := clientCertServer(t)

	first := clientSerial(t, c, srv)
	require.Equal(t, first, clientSerial(t, c, srv), "the certificate is reused between renewals")

	// Renewal is due at two thirds of the lifetime, counted from NotBefore
	// (one minute before issue).
	tm := timers.next(t)
	assert.InDelta(t, (2*time.Hour - 20*time.Second).Seconds(), tm.d.Seconds(), 60)
	tm.fire <- time.Now()
	tm = timers.next(t) // started once the renewed certificate is stored
	second := clientSerial(t, c, srv)
	require.NotEqual(t, first, second)

	// A failing agent: the current certificate stays, the renewal is
	// retried after a backoff, and the failure is logged.
	a.setFailing(true)
	tm.fire <- time.Now()
	tm = timers.next(t)
	assert.Equal(t, 5*time.Second, tm.d)
	assert.Equal(t, second, clientSerial(t, c, srv))
	assert.Contains(t, logs.String(), "renewal failed")
	tm.fire <- time.Now()
	tm = timers.next(t)
	assert.Equal(t, 10*time.Second, tm.d)

	a.setFailing(false)
	tm.fire <- time.Now()
	timers.next(t)
	assert.NotEqual(t, second, clientSerial(t, c, srv))
}

func TestClientCertificateMaxAge(t *testing.T) {
	t.Parallel()
	a := startLocalAgent(t, time.Now, 3*time.Hour)
	timers := newManualTimers()
	h := noAgentHooks(t)
	h.newTimer = timers.newTimer
	c, err := NewClient(context.Background(), Config{
		Verifier: newFakeVerifier(), Logger: discardLogger(), DstackEndpoint: a.sock, hooks: h,
		CertificateMaxAge: 10 * time.Minute,
	})
	require.NoError(t, err)
	defer c.Close()
	tm := timers.next(t)
	assert.InDelta(t, (10 * time.Minute).Seconds(), tm.d.Seconds(), 5)
}

// Only a handshake whose certificate has expired waits for the agent.
func TestExpiredClientCertificate(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{now: time.Now()}
	a := startLocalAgent(t, clock.Now, time.Hour)
	timers := newManualTimers()
	h := noAgentHooks(t)
	h.newTimer = timers.newTimer
	c, err := NewClient(context.Background(), Config{
		Verifier: newFakeVerifier(), Logger: discardLogger(), DstackEndpoint: a.sock, hooks: h, Now: clock.Now,
	})
	require.NoError(t, err)
	defer c.Close()
	srv := clientCertServer(t)
	first := clientSerial(t, c, srv)
	timers.next(t) // the scheduled renewal never fires in this test

	clock.advance(2 * time.Hour)
	second := clientSerial(t, c, srv)
	assert.NotEqual(t, first, second)
	assert.Equal(t, int32(2), a.calls.Load())

	// Expired again and the agent fails: the handshake fails with ErrAgent,
	// and the server gets nothing.
	timers.next(t)
	clock.advance(2 * time.Hour)
	a.setFailing(true)
	_, err = c.DialContext(context.Background(), "tcp", srv.addr)
	requireOnlySentinel(t, err, ErrAgent)
	res := srv.result(t)
	require.Error(t, res.handshakeErr)
	assert.Zero(t, res.appBytes)
}

func TestClose(t *testing.T) {
	t.Parallel()
	a := startLocalAgent(t, time.Now, time.Hour)
	c, err := NewClient(context.Background(), Config{
		Verifier: newFakeVerifier(), Logger: discardLogger(), DstackEndpoint: a.sock, hooks: noAgentHooks(t),
	})
	require.NoError(t, err)
	require.NoError(t, c.Close())
	require.NoError(t, c.Close())
	// The current certificate still works after Close.
	srv := clientCertServer(t)
	clientSerial(t, c, srv)
}
