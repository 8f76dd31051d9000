package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// shortTempDir returns a temporary directory whose path fits in a unix
// socket address (108 bytes), which t.TempDir's may not.
func shortTempDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "agt")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// fakeAgent serves GetTlsKey on a unix socket, issuing a self-signed
// certificate for the requested subject, and records the requests.
type fakeAgent struct {
	path string
	srv  *httptest.Server

	mu       sync.Mutex
	requests []map[string]any
	handler  http.HandlerFunc // overrides the default answer when set
}

func startAgent(t *testing.T) *fakeAgent {
	t.Helper()
	a := &fakeAgent{path: filepath.Join(shortTempDir(t), "dstack.sock")}
	l, err := net.Listen("unix", a.path)
	require.NoError(t, err)
	a.srv = httptest.NewUnstartedServer(http.HandlerFunc(a.serve))
	a.srv.Listener.Close()
	a.srv.Listener = l
	a.srv.Start()
	t.Cleanup(a.srv.Close)
	return a
}

func (a *fakeAgent) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/GetTlsKey" || r.Method != http.MethodPost {
		http.NotFound(w, r)
		return
	}
	var req map[string]any
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	a.mu.Lock()
	a.requests = append(a.requests, req)
	h := a.handler
	a.mu.Unlock()
	if h != nil {
		h(w, r)
		return
	}
	subject, _ := req["subject"].(string)
	keyPEM, certPEM, err := issue(subject)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	json.NewEncoder(w).Encode(map[string]any{"key": keyPEM, "certificate_chain": []string{certPEM}})
}

func issue(subject string) (keyPEM, certPEM string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: subject},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", err
	}
	p8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8})),
		string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), nil
}

func noEnv(string) string { return "" }

func TestDiscover(t *testing.T) {
	t.Parallel()
	dir := shortTempDir(t)
	sock := filepath.Join(dir, "a.sock")
	l, err := net.Listen("unix", sock)
	require.NoError(t, err)
	defer l.Close()
	regular := filepath.Join(dir, "file")
	require.NoError(t, os.WriteFile(regular, nil, 0o600))
	missing := filepath.Join(dir, "missing.sock")
	stale := staleSocket(t, dir, "stale.sock")
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == EnvSimulatorEndpoint {
				return v
			}
			return ""
		}
	}

	tests := []struct {
		name     string
		endpoint string
		getenv   func(string) string
		sockets  []string
		want     string
		wantErr  bool
	}{
		{"explicit URL", "http://127.0.0.1:8090", env(sock), nil, "http://127.0.0.1:8090", false},
		{"explicit socket", sock, noEnv, nil, sock, false},
		{"explicit missing socket", missing, noEnv, []string{sock}, "", true},
		{"env URL", "", env("https://sim"), []string{sock}, "https://sim", false},
		{"env socket", "", env(sock), nil, sock, false},
		{"env missing socket", "", env(missing), []string{sock}, "", true},
		{"first existing socket", "", noEnv, []string{missing, regular, sock}, sock, false},
		{"stale socket skipped", "", noEnv, []string{stale, sock}, sock, false},
		{"only a stale socket", "", noEnv, []string{missing, stale}, "", true},
		{"no socket", "", noEnv, []string{missing, regular}, "", true},
		{"no sockets at all", "", nil, nil, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Discover(context.Background(), tt.endpoint, tt.getenv, tt.sockets)
			if tt.wantErr {
				require.ErrorIs(t, err, ErrNoEndpoint)
				assert.Empty(t, got)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

// staleSocket leaves a socket file in dir that nothing listens on, as an
// agent that died without cleaning up does.
func staleSocket(t *testing.T, dir, name string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	l, err := net.Listen("unix", path)
	require.NoError(t, err)
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	require.NoError(t, l.Close())
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.NotZero(t, fi.Mode()&os.ModeSocket, "the stale socket file is still there")
	return path
}

func TestDiscoverStaleSocketReason(t *testing.T) {
	t.Parallel()
	dir := shortTempDir(t)
	stale := staleSocket(t, dir, "dstack.sock")
	_, err := Discover(context.Background(), "", noEnv, []string{filepath.Join(dir, "missing.sock"), stale})
	var ne *NoEndpointError
	require.ErrorAs(t, err, &ne)
	assert.Contains(t, ne.Reason, stale+" refused them")
}

// An explicit endpoint is taken as given, live or not: there is nothing
// else to try, and the first request tells.
func TestDiscoverExplicitStaleSocket(t *testing.T) {
	t.Parallel()
	stale := staleSocket(t, shortTempDir(t), "dstack.sock")
	got, err := Discover(context.Background(), stale, noEnv, nil)
	require.NoError(t, err)
	assert.Equal(t, stale, got)

	_, err = New(stale, 0, nil).Certificate(context.Background(), Request{})
	require.Error(t, err)
	assert.True(t, Unreachable(err), "a stale socket is unreachable: %v", err)
}

func TestUnreachable(t *testing.T) {
	t.Parallel()
	dir := shortTempDir(t)
	// A TCP port that refuses: one that was just listened on and closed.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	deadURL := "http://" + l.Addr().String()
	require.NoError(t, l.Close())

	tests := []struct {
		name     string
		endpoint string
	}{
		{"stale socket", staleSocket(t, dir, "stale.sock")},
		{"removed socket", filepath.Join(dir, "missing.sock")},
		{"refused TCP port", deadURL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := New(tt.endpoint, 0, nil).Certificate(context.Background(), Request{})
			require.Error(t, err)
			assert.True(t, Unreachable(err), "%v", err)
			assert.True(t, Unreachable(fmt.Errorf("wrapped: %w", err)))
		})
	}

	// Something is there: these are not "no agent".
	a := startAgent(t)
	a.handler = func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "no KMS", http.StatusInternalServerError) }
	_, err = New(a.path, 0, nil).Certificate(context.Background(), Request{})
	require.Error(t, err)
	assert.False(t, Unreachable(err), "%v", err)
	assert.False(t, Unreachable(context.DeadlineExceeded))
	assert.False(t, Unreachable(&net.OpError{Op: "read", Err: syscall.ECONNREFUSED}))
	assert.False(t, Unreachable(nil))
}

func TestDefaultSockets(t *testing.T) {
	t.Parallel()
	s := DefaultSockets()
	require.Equal(t, []string{"/var/run/dstack.sock", "/run/dstack.sock", "/var/run/dstack/dstack.sock", "/run/dstack/dstack.sock"}, s)
	s[0] = "changed"
	require.Equal(t, "/var/run/dstack.sock", DefaultSockets()[0])
}

func TestCertificate(t *testing.T) {
	t.Parallel()
	a := startAgent(t)
	c := New(a.path, 0, nil)
	cert, err := c.Certificate(context.Background(), Request{
		Subject: "db.example", AltNames: []string{"db.example", "10.0.0.1"}, ServerAuth: true,
	})
	require.NoError(t, err)
	require.NotNil(t, cert.Leaf)
	assert.Equal(t, "db.example", cert.Leaf.Subject.CommonName)

	a.mu.Lock()
	req := a.requests[0]
	a.mu.Unlock()
	assert.Equal(t, true, req["usage_ra_tls"])
	assert.Equal(t, true, req["usage_server_auth"])
	assert.Equal(t, false, req["usage_client_auth"])
	assert.Equal(t, []any{"db.example", "10.0.0.1"}, req["alt_names"])
}

func TestCertificateOverHTTP(t *testing.T) {
	t.Parallel()
	a := &fakeAgent{}
	srv := httptest.NewServer(http.HandlerFunc(a.serve))
	defer srv.Close()
	cert, err := New(srv.URL, 0, nil).Certificate(context.Background(), Request{ClientAuth: true})
	require.NoError(t, err)
	require.NotNil(t, cert.Leaf)
	assert.Equal(t, true, a.requests[0]["usage_client_auth"])
}

func TestCertificateErrors(t *testing.T) {
	t.Parallel()
	otherKey, _, err := issue("x")
	require.NoError(t, err)
	_, certPEM, err := issue("x")
	require.NoError(t, err)

	tests := []struct {
		name    string
		handler http.HandlerFunc
		want    string
	}{
		{"status", func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "no KMS", http.StatusInternalServerError)
		}, "500"},
		{"not JSON", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("<html>")) }, "invalid character"},
		{"empty chain", func(w http.ResponseWriter, _ *http.Request) {
			json.NewEncoder(w).Encode(map[string]any{"key": otherKey})
		}, "no certificate chain"},
		{"key mismatch", func(w http.ResponseWriter, _ *http.Request) {
			json.NewEncoder(w).Encode(map[string]any{"key": otherKey, "certificate_chain": []string{certPEM}})
		}, "private key does not match"},
		{"bad key", func(w http.ResponseWriter, _ *http.Request) {
			json.NewEncoder(w).Encode(map[string]any{"key": "junk", "certificate_chain": []string{certPEM}})
		}, "key and certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a := startAgent(t)
			a.handler = tt.handler
			_, err := New(a.path, 0, nil).Certificate(context.Background(), Request{})
			require.ErrorContains(t, err, tt.want)
			require.ErrorContains(t, err, a.path)
		})
	}
}

func TestCertificateTimeout(t *testing.T) {
	t.Parallel()
	a := startAgent(t)
	release := make(chan struct{})
	a.handler = func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}
	defer close(release)
	_, err := New(a.path, 50*time.Millisecond, nil).Certificate(context.Background(), Request{})
	require.True(t, errors.Is(err, context.DeadlineExceeded), "got %v", err)
}
