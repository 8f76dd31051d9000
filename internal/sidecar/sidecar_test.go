package sidecar_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/teesql/ratls"
	"github.com/teesql/ratls/internal/sidecar"
	"github.com/teesql/ratls/ratlstest"
)

// TestSidecarMutualRATLSEndToEnd runs the whole stack: the client gets its
// certificate from the agent double through the real SDK, dials the sidecar
// (whose certificate comes from the same agent), both sides verify each
// other's quotes with DCAP against the test root and the PCCS double, and
// bytes flow to the echo upstream and back.
func TestSidecarMutualRATLSEndToEnd(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := ratlstest.StartStack(t, ratlstest.StackOptions{Logger: quiet()})
	echo := ratlstest.StartEchoServer(t)
	sc := start(t, sidecar.Config{Upstream: echo.Addr(), ServerConfig: st.ServerConfig, Logger: quiet()})
	client, err := st.NewClient(ctx)
	require.NoError(t, err)

	const handshakes = 5
	var sent int
	for i := range handshakes {
		conn, err := client.DialContext(ctx, "tcp", sc.Addr())
		require.NoError(t, err)
		rep, ok := client.Report(conn)
		require.True(t, ok)
		assert.Equal(t, st.Agent.TD().MRTD, rep.MRTD)
		require.NotNil(t, rep.App, "the event log must replay to RTMR3")
		assert.Equal(t, st.Agent.TD().ComposeHashHex(), fmt.Sprintf("%x", rep.App.ComposeHash))

		msg := bytes.Repeat([]byte{byte('a' + i)}, 1000*(i+1))
		_, err = conn.Write(msg)
		require.NoError(t, err)
		require.NoError(t, conn.CloseWrite())
		got, err := io.ReadAll(conn)
		require.NoError(t, err)
		assert.Equal(t, msg, got)
		require.NoError(t, conn.Close())
		sent += len(msg)
	}

	require.NoError(t, sc.Shutdown(ctx))
	stats := sc.Stats()
	assert.EqualValues(t, handshakes, stats.Relayed)
	assert.EqualValues(t, 0, stats.Rejected)
	assert.EqualValues(t, sent, stats.BytesFromClients)
	assert.EqualValues(t, sent, stats.BytesToClients)
	assert.EqualValues(t, sent, sc.BytesReceived())

	// One collateral fetch for everything: both sides share the verifier.
	for _, p := range []string{ratlstest.PathTCBInfo, ratlstest.PathQEIdentity} {
		assert.EqualValues(t, 1, st.PCCS.Requests(p), p)
	}
	// One certificate for the sidecar, one for the client.
	assert.EqualValues(t, 2, st.Agent.TLSKeyCalls())
}

// TestSidecarRejectsClients checks that clients without a valid
// attestation get no byte through, and that the upstream never sees them.
func TestSidecarRejectsClients(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := ratlstest.StartStack(t, ratlstest.StackOptions{Logger: quiet()})
	echo := ratlstest.StartEchoServer(t)
	logged := &recorder{}
	sc, err := sidecar.New(ctx, sidecar.Config{Upstream: echo.Addr(), ServerConfig: st.ServerConfig, Logger: slog.New(logged)})
	require.NoError(t, err)

	noQuote, err := st.Agent.Certificate(ratlstest.TLSKeyRequest{UsageClientAuth: true})
	require.NoError(t, err)
	debugAgent := newAgent(t, st.Authority, ratlstest.AgentOptions{TD: ratlstest.TD{Debug: true}})
	debug, err := debugAgent.Certificate(ratlstest.TLSKeyRequest{UsageRATLS: true, UsageClientAuth: true})
	require.NoError(t, err)

	tests := []struct {
		name string
		cert *tls.Certificate
		want error // what the sidecar logs
	}{
		{"no certificate", nil, nil},
		{"no quote", noQuote, ratls.ErrNoQuote},
		{"debug TD", debug, ratls.ErrDebugMode},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Only the server side verifies here: the client trusts the
			// sidecar, so whatever fails is the sidecar refusing it.
			cfg := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}
			if tt.cert != nil {
				cfg.Certificates = []tls.Certificate{*tt.cert}
			}
			conn, err := tls.Dial("tcp", sc.Addr(), cfg)
			if err == nil {
				// TLS 1.3: the client finishes first and may write at once;
				// the sidecar's verdict arrives as an alert.
				_, _ = conn.Write([]byte("SELECT secrets"))
				_, err = io.ReadAll(conn)
				conn.Close()
			}
			require.Error(t, err)
		})
	}
	// Shutdown, unlike Close, lets handshakes in progress finish, so the
	// sidecar logs each verdict rather than its cancellation.
	require.NoError(t, sc.Shutdown(ctx))
	for _, tt := range tests {
		if tt.want == nil {
			continue
		}
		found := false
		for _, err := range logged.errors() {
			found = found || errors.Is(err, tt.want)
		}
		assert.True(t, found, "%s: no logged error matches %v: %v", tt.name, tt.want, logged.errors())
	}
	stats := sc.Stats()
	assert.EqualValues(t, len(tests), stats.Rejected)
	assert.EqualValues(t, 0, stats.Relayed)
	assert.EqualValues(t, 0, stats.BytesFromClients)
}

func TestSidecarConfigErrors(t *testing.T) {
	t.Parallel()
	_, err := sidecar.New(context.Background(), sidecar.Config{})
	require.Error(t, err)
	// No agent: the server cannot get a certificate.
	_, err = sidecar.New(context.Background(), sidecar.Config{
		Upstream:     "127.0.0.1:1",
		ServerConfig: ratls.ServerConfig{DstackEndpoint: t.TempDir() + "/none.sock"},
	})
	require.ErrorIs(t, err, ratls.ErrMissingDstackSocket)
}

// TestSidecarWithGivenServer uses a ratls.Server built elsewhere with a
// ready certificate.
func TestSidecarWithGivenServer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := ratlstest.StartStack(t, ratlstest.StackOptions{Logger: quiet()})
	cert, err := st.Agent.Certificate(ratlstest.TLSKeyRequest{Subject: "localhost", UsageRATLS: true, UsageServerAuth: true})
	require.NoError(t, err)
	cfg := st.ServerConfig
	cfg.Certificate = cert
	srv, err := ratls.NewServer(ctx, cfg)
	require.NoError(t, err)
	defer srv.Close()

	echo := ratlstest.StartEchoServer(t)
	sc, err := sidecar.New(ctx, sidecar.Config{Upstream: echo.Addr(), Server: srv})
	require.NoError(t, err)
	defer sc.Close()
	client, err := st.NewClient(ctx)
	require.NoError(t, err)
	conn, err := client.DialContext(ctx, "tcp", sc.Addr())
	require.NoError(t, err)
	defer conn.Close()
	echoOnce(t, conn, "ping")
	assert.EqualValues(t, 1, st.Agent.TLSKeyCalls(), "only the client asked the agent")
}

// TestSidecarUnixUpstreamAndListener serves a caller-made listener and
// forwards to a unix-socket upstream.
func TestSidecarUnixUpstreamAndListener(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := ratlstest.StartStack(t, ratlstest.StackOptions{Logger: quiet()})

	sock := filepath.Join(t.TempDir(), "up.sock")
	up, err := net.Listen("unix", sock)
	require.NoError(t, err)
	var wg sync.WaitGroup
	wg.Go(func() {
		c, err := up.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
	})
	defer func() {
		up.Close()
		wg.Wait()
	}()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	sc, err := sidecar.New(ctx, sidecar.Config{Upstream: "unix:" + sock, ServerConfig: st.ServerConfig, Listener: ln})
	require.NoError(t, err)
	defer sc.Close()
	assert.Equal(t, ln.Addr().String(), sc.Addr())

	client, err := st.NewClient(ctx)
	require.NoError(t, err)
	conn, err := client.DialContext(ctx, "tcp", sc.Addr())
	require.NoError(t, err)
	defer conn.Close()
	echoOnce(t, conn, "via unix")
}

// TestSidecarLogs checks what an operator reads: where the sidecar listens
// and whether it attests clients, then each attested client's identity.
func TestSidecarLogs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := ratlstest.StartStack(t, ratlstest.StackOptions{Logger: quiet()})
	echo := ratlstest.StartEchoServer(t)
	logs := &recorder{}
	sc := start(t, sidecar.Config{Upstream: echo.Addr(), ServerConfig: st.ServerConfig, Logger: slog.New(logs)})
	client, err := st.NewClient(ctx)
	require.NoError(t, err)
	conn, err := client.DialContext(ctx, "tcp", sc.Addr())
	require.NoError(t, err)
	echoOnce(t, conn, "x")
	require.NoError(t, conn.Close())
	require.NoError(t, sc.Shutdown(ctx))

	td := st.Agent.TD()
	assert.Equal(t, map[string]string{
		"level": "INFO", "addr": sc.Addr(), "upstream": echo.Addr(), "client_attestation": "true",
	}, logs.one(t, "sidecar: listening"))
	assert.Equal(t, map[string]string{
		"level": "INFO", "remote": conn.LocalAddr().String(), "mrtd": td.MRTDHex(), "tcb_status": "UpToDate",
		"app_id": td.AppIDHex(), "compose_hash": td.ComposeHashHex(),
	}, logs.one(t, "sidecar: attested client"))
	for _, msg := range logs.messages() {
		assert.True(t, strings.HasPrefix(msg, "sidecar: ") || strings.HasPrefix(msg, "forward: "), msg)
	}
}

func TestSidecarLogsWithoutAttestation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := ratlstest.StartStack(t, ratlstest.StackOptions{Logger: quiet()})
	echo := ratlstest.StartEchoServer(t)
	cfg := st.ServerConfig
	cfg.InsecureSkipClientAttestation = true
	cfg.Logger = quiet()
	logs := &recorder{}
	sc := start(t, sidecar.Config{Upstream: echo.Addr(), ServerConfig: cfg, Logger: slog.New(logs)})

	plain, err := st.Agent.Certificate(ratlstest.TLSKeyRequest{Subject: "plain.client", UsageClientAuth: true})
	require.NoError(t, err)
	conn, err := tls.Dial("tcp", sc.Addr(), &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{*plain}})
	require.NoError(t, err)
	echoOnce(t, conn, "x")
	require.NoError(t, conn.Close())
	require.NoError(t, sc.Shutdown(ctx))

	assert.Equal(t, "false", logs.one(t, "sidecar: listening")["client_attestation"])
	admitted := logs.one(t, "sidecar: client admitted without attestation (InsecureSkipClientAttestation)")
	assert.Equal(t, "DEBUG", admitted["level"])
	assert.Contains(t, admitted["subject"], "plain.client")
	assert.NotContains(t, logs.messages(), "sidecar: attested client")
}

// start starts a sidecar closed when t ends.
func start(t *testing.T, cfg sidecar.Config) *sidecar.Sidecar {
	t.Helper()
	sc, err := sidecar.New(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { sc.Close() })
	return sc
}

// echoOnce writes msg on conn and expects it back.
func echoOnce(t *testing.T, conn net.Conn, msg string) {
	t.Helper()
	_, err := conn.Write([]byte(msg))
	require.NoError(t, err)
	buf := make([]byte, len(msg))
	_, err = io.ReadFull(conn, buf)
	require.NoError(t, err)
	assert.Equal(t, msg, string(buf))
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func newAgent(t *testing.T, auth *ratlstest.Authority, opts ratlstest.AgentOptions) *ratlstest.Agent {
	t.Helper()
	ag, err := ratlstest.NewAgent(auth, opts)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, ag.Close()) })
	return ag
}

// recorder is a slog.Handler keeping every record it receives (attributes
// added with Logger.With are dropped), so that tests can read what was
// logged and match logged errors with errors.Is.
type recorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (c *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (c *recorder) WithAttrs([]slog.Attr) slog.Handler       { return c }
func (c *recorder) WithGroup(string) slog.Handler            { return c }

func (c *recorder) Handle(_ context.Context, r slog.Record) error {
	c.mu.Lock()
	c.records = append(c.records, r.Clone())
	c.mu.Unlock()
	return nil
}

func (c *recorder) snapshot() []slog.Record {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]slog.Record(nil), c.records...)
}

func (c *recorder) messages() []string {
	var msgs []string
	for _, r := range c.snapshot() {
		msgs = append(msgs, r.Message)
	}
	return msgs
}

// errors returns the "err" attributes logged.
func (c *recorder) errors() []error {
	var errs []error
	for _, r := range c.snapshot() {
		r.Attrs(func(a slog.Attr) bool {
			if err, ok := a.Value.Any().(error); ok && a.Key == "err" {
				errs = append(errs, err)
			}
			return true
		})
	}
	return errs
}

// one returns the level and attributes, as text, of the one record logged
// with msg.
func (c *recorder) one(t *testing.T, msg string) map[string]string {
	t.Helper()
	var found []map[string]string
	for _, r := range c.snapshot() {
		if r.Message != msg {
			continue
		}
		m := map[string]string{"level": r.Level.String()}
		r.Attrs(func(a slog.Attr) bool {
			m[a.Key] = a.Value.String()
			return true
		})
		found = append(found, m)
	}
	require.Len(t, found, 1, "records %q in %q", msg, c.messages())
	return found[0]
}
