package ratlstest

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
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/teesql/ratls"
)

// TestSidecarMutualRATLSEndToEnd runs the whole stack: the client gets its
// certificate from the agent double through the real SDK, dials the sidecar
// (whose certificate comes from the same agent), both sides verify each
// other's quotes with DCAP against the test root and the PCCS double, and
// bytes flow to the echo upstream and back.
func TestSidecarMutualRATLSEndToEnd(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := StartStack(t, StackOptions{})
	echo := StartEchoServer(t)
	sc, err := st.NewSidecar(ctx, echo.Addr())
	require.NoError(t, err)
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
	for _, p := range []string{PathTCBInfo, PathQEIdentity} {
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
	st := StartStack(t, StackOptions{})
	echo := StartEchoServer(t)
	logged := &errCollector{}
	sc, err := NewSidecar(ctx, SidecarConfig{Upstream: echo.Addr(), ServerConfig: st.ServerConfig, Logger: slog.New(logged)})
	require.NoError(t, err)

	noQuote, err := st.Agent.Certificate(TLSKeyRequest{UsageClientAuth: true})
	require.NoError(t, err)
	debugAgent := newAgent(t, st.Authority, AgentOptions{TD: TD{Debug: true}})
	debug, err := debugAgent.Certificate(TLSKeyRequest{UsageRATLS: true, UsageClientAuth: true})
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
	_, err := NewSidecar(context.Background(), SidecarConfig{})
	require.Error(t, err)
	// No agent: the server cannot get a certificate.
	_, err = NewSidecar(context.Background(), SidecarConfig{
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
	st := StartStack(t, StackOptions{})
	cert, err := st.Agent.Certificate(TLSKeyRequest{Subject: "localhost", UsageRATLS: true, UsageServerAuth: true})
	require.NoError(t, err)
	cfg := st.ServerConfig
	cfg.Certificate = cert
	srv, err := ratls.NewServer(ctx, cfg)
	require.NoError(t, err)
	defer srv.Close()

	echo := StartEchoServer(t)
	sc, err := NewSidecar(ctx, SidecarConfig{Upstream: echo.Addr(), Server: srv})
	require.NoError(t, err)
	defer sc.Close()
	client, err := st.NewClient(ctx)
	require.NoError(t, err)
	conn, err := client.DialContext(ctx, "tcp", sc.Addr())
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.Write([]byte("ping"))
	require.NoError(t, err)
	buf := make([]byte, 4)
	_, err = io.ReadFull(conn, buf)
	require.NoError(t, err)
	assert.Equal(t, "ping", string(buf))
	assert.EqualValues(t, 1, st.Agent.TLSKeyCalls(), "only the client asked the agent")
}

// TestSidecarUnixUpstreamAndListener serves a caller-made listener and
// forwards to a unix-socket upstream.
func TestSidecarUnixUpstreamAndListener(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := StartStack(t, StackOptions{})

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
	sc, err := NewSidecar(ctx, SidecarConfig{Upstream: "unix:" + sock, ServerConfig: st.ServerConfig, Listener: ln})
	require.NoError(t, err)
	defer sc.Close()
	assert.Equal(t, ln.Addr().String(), sc.Addr())

	client, err := st.NewClient(ctx)
	require.NoError(t, err)
	conn, err := client.DialContext(ctx, "tcp", sc.Addr())
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.Write([]byte("via unix"))
	require.NoError(t, err)
	buf := make([]byte, len("via unix"))
	_, err = io.ReadFull(conn, buf)
	require.NoError(t, err)
	assert.Equal(t, "via unix", string(buf))
}
