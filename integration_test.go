package ratls_test

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/teesql/ratls"
	"github.com/teesql/ratls/ratlstest"
	"github.com/teesql/ratls/tdx"
)

// These tests run the core against ratlstest's simulated TEE: quotes from a
// test DCAP PKI verified by the real dcap verifier with collateral from a
// PCCS double, and certificates from a dstack agent double reached through
// the real SDK.

func quietStack(t *testing.T) *ratlstest.Stack {
	t.Helper()
	return ratlstest.StartStack(t, ratlstest.StackOptions{Logger: slog.New(slog.DiscardHandler)})
}

// attestedServer accepts connections with srv's configuration, echoes what
// it reads, and reports the client's attestation for each connection.
type attestedServer struct {
	addr    string
	reports chan serverSide
}

type serverSide struct {
	err    error
	report *ratls.Report
	peer   *x509.Certificate // the client's leaf
	bytes  int64
}

func startAttestedServer(t *testing.T, srv *ratls.Server) *attestedServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &attestedServer{addr: ln.Addr().String(), reports: make(chan serverSide, 64)}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				conn := tls.Server(c, srv.TLSConfig())
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(10 * time.Second))
				if err := conn.Handshake(); err != nil {
					s.reports <- serverSide{err: err}
					return
				}
				rep, _ := srv.Report(conn)
				var peer *x509.Certificate
				if cs := conn.ConnectionState(); len(cs.PeerCertificates) > 0 {
					peer = cs.PeerCertificates[0]
				}
				n, _ := io.Copy(conn, conn)
				s.reports <- serverSide{report: rep, peer: peer, bytes: n}
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return s
}

func (s *attestedServer) next(t *testing.T) serverSide {
	t.Helper()
	select {
	case r := <-s.reports:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no connection reached the server")
		return serverSide{}
	}
}

func echo(t *testing.T, conn *tls.Conn, msg string) {
	t.Helper()
	_, err := conn.Write([]byte(msg))
	require.NoError(t, err)
	buf := make([]byte, len(msg))
	_, err = io.ReadFull(conn, buf)
	require.NoError(t, err)
	require.Equal(t, msg, string(buf))
}

func TestSimulatedStackMutualRATLS(t *testing.T) {
	t.Parallel()
	stack := quietStack(t)
	ctx := context.Background()
	srv, err := stack.NewServer(ctx)
	require.NoError(t, err)
	as := startAttestedServer(t, srv)
	client, err := stack.NewClient(ctx)
	require.NoError(t, err)

	td := stack.Agent.TD()
	var fetched int64
	for i := range 3 {
		conn, err := client.DialContext(ctx, "tcp", as.addr)
		require.NoError(t, err)
		echo(t, conn, "SELECT 1")
		rep, ok := client.Report(conn)
		require.True(t, ok)
		assert.Equal(t, td.MRTD, rep.MRTD)
		assert.Equal(t, tdx.TCBUpToDate, rep.TCBStatus)
		assert.Equal(t, stack.Authority.FMSPC(), rep.FMSPC)
		require.NotNil(t, rep.App)
		assert.Equal(t, td.ComposeHash[:], rep.App.ComposeHash)
		assert.Equal(t, td.AppID[:], rep.App.AppID)
		conn.Close()

		side := as.next(t)
		require.NoError(t, side.err)
		require.NotNil(t, side.report)
		assert.Equal(t, td.ComposeHash[:], side.report.App.ComposeHash)
		assert.Equal(t, int64(len("SELECT 1")), side.bytes)
		// Later handshakes reuse verified results: no collateral fetch.
		if i == 0 {
			fetched = stack.PCCS.TotalRequests()
			assert.Positive(t, fetched)
		}
		assert.Equal(t, fetched, stack.PCCS.TotalRequests())
	}
}

func TestSimulatedStackAdversaries(t *testing.T) {
	t.Parallel()
	stack := quietStack(t)
	client, err := stack.NewClient(context.Background())
	require.NoError(t, err)
	tests := []struct {
		kind ratlstest.AdversaryKind
		want error
	}{
		{ratlstest.SwappedKey, ratls.ErrKeyBinding},
		{ratlstest.DebugTD, ratls.ErrDebugMode},
		{ratlstest.MismatchedQuotes, ratls.ErrMalformedExtension},
		{ratlstest.NoAttestation, ratls.ErrNoQuote},
		{ratlstest.WrongMRTD, ratls.ErrMRTDNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.kind.String(), func(t *testing.T) {
			adv, err := stack.NewAdversary(tt.kind)
			require.NoError(t, err)
			conn, err := client.DialContext(context.Background(), "tcp", adv.Addr())
			require.Nil(t, conn)
			require.ErrorIs(t, err, tt.want)
			require.ErrorIs(t, fmt.Errorf("pgconn: %w", err), tt.want)
			require.NoError(t, adv.Close())
			assert.Zero(t, adv.BytesReceived(), "the client sent application data to a rejected server")
		})
	}
	adv, err := stack.NewAdversary(ratlstest.Recorder)
	require.NoError(t, err)
	conn, err := client.DialContext(context.Background(), "tcp", adv.Addr())
	require.NoError(t, err)
	_, err = conn.Write([]byte("hello"))
	require.NoError(t, err)
	conn.Close()
	require.NoError(t, adv.Close())
	assert.Equal(t, "hello", string(adv.Received()))
}

// Both sides renew their agent certificates in the background; handshakes
// keep working across renewals, and an agent failure keeps the current
// certificate.
func TestSimulatedStackCertificateRenewal(t *testing.T) {
	t.Parallel()
	stack := quietStack(t)
	ctx := context.Background()
	scfg := stack.ServerConfig
	scfg.CertificateMaxAge = time.Second
	srv, err := ratls.NewServer(ctx, scfg)
	require.NoError(t, err)
	defer srv.Close()
	as := startAttestedServer(t, srv)
	ccfg := stack.Config
	ccfg.CertificateMaxAge = time.Second
	client, err := ratls.NewClient(ctx, ccfg)
	require.NoError(t, err)
	defer client.Close()

	// Each certificate has a fresh key, so REPORTDATA tells them apart.
	dial := func() (serverKey, clientKey [64]byte) {
		t.Helper()
		conn, err := client.DialContext(ctx, "tcp", as.addr)
		require.NoError(t, err)
		echo(t, conn, "x")
		rep, ok := client.Report(conn)
		require.True(t, ok)
		conn.Close()
		side := as.next(t)
		require.NoError(t, side.err)
		return rep.ReportData, side.report.ReportData
	}
	serverKeys := map[[64]byte]bool{}
	clientKeys := map[[64]byte]bool{}
	deadline := time.Now().Add(20 * time.Second)
	for len(serverKeys) < 2 || len(clientKeys) < 2 {
		require.True(t, time.Now().Before(deadline), "no renewal seen")
		s, c := dial()
		serverKeys[s], clientKeys[c] = true, true
		time.Sleep(50 * time.Millisecond)
	}

	stack.Agent.SetFault(ratlstest.Fault{Status: 503})
	calls := stack.Agent.TLSKeyCalls()
	for stack.Agent.TLSKeyCalls() < calls+2 {
		require.True(t, time.Now().Before(deadline), "no renewal attempted")
		time.Sleep(50 * time.Millisecond)
	}
	// Renewals are failing; the current certificates still serve.
	_, c1 := dial()
	_, c2 := dial()
	assert.Equal(t, c1, c2, "the client certificate does not change while the agent fails")
	stack.Agent.SetFault(ratlstest.Fault{})
}

// With short-lived certificates and no CertificateMaxAge, each side renews
// on its own before expiry (at two thirds of the lifetime), and every
// handshake keeps succeeding with certificates valid at the time of use.
// Only "eventually" is timed, with a generous bound.
func TestSimulatedStackShortLivedCertificates(t *testing.T) {
	t.Parallel()
	// 6s: renewal is due 4s after issue, leaving 2s of validity for a
	// late renewal on a loaded machine before a served certificate could
	// expire mid-handshake.
	const validity = 6 * time.Second
	stack := ratlstest.StartStack(t, ratlstest.StackOptions{
		Validity: validity,
		Logger:   slog.New(slog.DiscardHandler),
	})
	ctx := context.Background()
	srv, err := stack.NewServer(ctx)
	require.NoError(t, err)
	as := startAttestedServer(t, srv)
	client, err := stack.NewClient(ctx)
	require.NoError(t, err)

	// checkUsable asserts leaf was issued by the agent with the stack's
	// lifetime and had not expired when the handshake using it began.
	checkUsable := func(who string, leaf *x509.Certificate, start, end time.Time) {
		t.Helper()
		require.NotNil(t, leaf, "%s certificate", who)
		assert.Equal(t, validity, leaf.NotAfter.Sub(leaf.NotBefore), "%s certificate lifetime", who)
		assert.True(t, leaf.NotAfter.After(start), "%s certificate expired at %s, before the handshake began at %s",
			who, leaf.NotAfter, start)
		assert.False(t, leaf.NotBefore.After(end), "%s certificate valid from %s, after the handshake ended at %s",
			who, leaf.NotBefore, end)
	}

	serverCerts := map[[32]byte]bool{}
	clientCerts := map[[32]byte]bool{}
	deadline := time.Now().Add(30 * time.Second)
	for dials := 1; len(serverCerts) < 2 || len(clientCerts) < 2; dials++ {
		require.True(t, time.Now().Before(deadline),
			"after %d handshakes: %d server and %d client certificates seen, want 2 of each", dials, len(serverCerts), len(clientCerts))
		start := time.Now()
		conn, err := client.DialContext(ctx, "tcp", as.addr)
		require.NoError(t, err, "handshake %d", dials)
		end := time.Now()
		echo(t, conn, "x")
		cs := conn.ConnectionState()
		require.NotEmpty(t, cs.PeerCertificates)
		serverLeaf := cs.PeerCertificates[0]
		rep, ok := client.Report(conn)
		require.True(t, ok)
		conn.Close()
		side := as.next(t)
		require.NoError(t, side.err, "handshake %d, server side", dials)
		require.NotNil(t, side.report)

		checkUsable("server", serverLeaf, start, end)
		checkUsable("client", side.peer, start, end)
		// The reports are about the certificates used.
		assert.Equal(t, sha512.Sum512(append([]byte("ratls-cert:"), serverLeaf.RawSubjectPublicKeyInfo...)), rep.ReportData)
		assert.Equal(t, sha512.Sum512(append([]byte("ratls-cert:"), side.peer.RawSubjectPublicKeyInfo...)), side.report.ReportData)
		serverCerts[sha256.Sum256(serverLeaf.Raw)] = true
		clientCerts[sha256.Sum256(side.peer.Raw)] = true
		time.Sleep(100 * time.Millisecond)
	}
}

func TestSimulatedStackAgentFailure(t *testing.T) {
	t.Parallel()
	stack := quietStack(t)
	for _, f := range []ratlstest.Fault{{Status: 500}, {Garbage: true}} {
		stack.Agent.SetFault(f)
		_, err := stack.NewClient(context.Background())
		require.ErrorIs(t, err, ratls.ErrAgent)
		_, err = stack.NewServer(context.Background())
		require.ErrorIs(t, err, ratls.ErrAgent)
	}
}
