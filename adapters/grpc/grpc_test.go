package ratlsgrpc_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/teesql/ratls"
	ratlsgrpc "github.com/teesql/ratls/adapters/grpc"
	"github.com/teesql/ratls/internal/pgtest"
	"github.com/teesql/ratls/ratlstest"
	"github.com/teesql/ratls/tdx"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// reportingHealth is grpc's health service with handlers that insist on an
// attested peer and record its MRTD.
type reportingHealth struct {
	*health.Server
	mu    sync.Mutex
	mrtds []string
}

func (h *reportingHealth) record(ctx context.Context) error {
	r, ok := ratlsgrpc.ReportFromContext(ctx)
	if !ok {
		return status.Error(codes.Unauthenticated, "no attested peer")
	}
	h.mu.Lock()
	h.mrtds = append(h.mrtds, fmt.Sprintf("%x", r.MRTD))
	h.mu.Unlock()
	return nil
}

func (h *reportingHealth) seen() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.mrtds...)
}

func (h *reportingHealth) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	if err := h.record(ctx); err != nil {
		return nil, err
	}
	return h.Server.Check(ctx, req)
}

func (h *reportingHealth) Watch(req *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	if err := h.record(stream.Context()); err != nil {
		return err
	}
	return h.Server.Watch(req, stream)
}

// startServer serves the health service with attested server credentials.
func startServer(t *testing.T, st *ratlstest.Stack) (string, *reportingHealth) {
	t.Helper()
	srv, err := st.NewServer(testCtx(t))
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	gs := grpc.NewServer(grpc.Creds(ratlsgrpc.NewServerCredentials(srv)))
	hs := &reportingHealth{Server: health.NewServer()}
	healthpb.RegisterHealthServer(gs, hs)
	done := make(chan struct{})
	go func() {
		defer close(done)
		gs.Serve(ln)
	}()
	t.Cleanup(func() {
		gs.Stop()
		<-done
	})
	return ln.Addr().String(), hs
}

func dial(t *testing.T, addr string, creds credentials.TransportCredentials) healthpb.HealthClient {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	require.NoError(t, err)
	t.Cleanup(func() { cc.Close() })
	return healthpb.NewHealthClient(cc)
}

func TestUnaryAndStreamingBetweenAttestedPeers(t *testing.T) {
	t.Parallel()
	st, client := pgtest.Stack(t)
	addr, hs := startServer(t, st)
	ctx := testCtx(t)
	hc := dial(t, addr, ratlsgrpc.NewClientCredentials(client))
	td := st.Agent.TD()

	// Unary.
	var p peer.Peer
	resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p))
	require.NoError(t, err)
	assert.Equal(t, healthpb.HealthCheckResponse_SERVING, resp.Status)
	// The client sees the server's verified report...
	ai, ok := p.AuthInfo.(ratlsgrpc.AuthInfo)
	require.True(t, ok, "AuthInfo is %T", p.AuthInfo)
	require.NotNil(t, ai.Report)
	assert.Equal(t, td.MRTDHex(), fmt.Sprintf("%x", ai.Report.MRTD))
	assert.Equal(t, "h2", ai.State.NegotiatedProtocol)
	assert.Equal(t, credentials.PrivacyAndIntegrity, ai.SecurityLevel)
	// ...and the handler the client's.
	assert.Equal(t, []string{td.MRTDHex()}, hs.seen())

	// Server streaming, on the same attested connection.
	hs.SetServingStatus("ledger", healthpb.HealthCheckResponse_SERVING)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := hc.Watch(wctx, &healthpb.HealthCheckRequest{Service: "ledger"})
	require.NoError(t, err)
	msg, err := stream.Recv()
	require.NoError(t, err)
	assert.Equal(t, healthpb.HealthCheckResponse_SERVING, msg.Status)
	hs.SetServingStatus("ledger", healthpb.HealthCheckResponse_NOT_SERVING)
	msg, err = stream.Recv()
	require.NoError(t, err)
	assert.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, msg.Status)
	assert.Equal(t, []string{td.MRTDHex(), td.MRTDHex()}, hs.seen())
}

// An unattested or cheating server is refused in the handshake: the RPC
// fails, the server receives nothing, and the handshake error matches the
// ratls sentinel.
func TestUnattestedServersRefused(t *testing.T) {
	t.Parallel()
	st, client := pgtest.Stack(t)
	creds := ratlsgrpc.NewClientCredentials(client)
	for _, tc := range pgtest.Refusals {
		t.Run(tc.Kind.String(), func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			adv := pgtest.Adversary(t, st, tc.Kind)

			_, err := dial(t, adv.Addr(), creds).Check(ctx, &healthpb.HealthCheckRequest{})
			require.Error(t, err)
			assert.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
			assert.Contains(t, err.Error(), tc.Err.Error(), "grpc flattens the error into its status message")

			raw, err := net.Dial("tcp", adv.Addr())
			require.NoError(t, err)
			defer raw.Close()
			_, _, err = creds.ClientHandshake(ctx, adv.Addr(), raw)
			require.ErrorIs(t, err, tc.Err)

			require.NoError(t, adv.Close())
			assert.Zero(t, adv.BytesReceived(), "no HTTP/2 preface may reach an unverified server")
			assert.Zero(t, adv.Handshakes())
		})
	}
}

// A genuine attested server that does not speak h2 is refused after the
// handshake, before any byte of HTTP/2.
func TestALPNRequired(t *testing.T) {
	t.Parallel()
	st, client := pgtest.Stack(t)
	rec := pgtest.Adversary(t, st, ratlstest.Recorder)
	raw, err := net.Dial("tcp", rec.Addr())
	require.NoError(t, err)
	defer raw.Close()
	_, _, err = ratlsgrpc.NewClientCredentials(client).ClientHandshake(testCtx(t), rec.Addr(), raw)
	require.ErrorIs(t, err, ratlsgrpc.ErrALPN)
	require.NoError(t, rec.Close())
	assert.Zero(t, rec.BytesReceived())
}

// The server refuses clients without an attested certificate.
func TestServerRefusesUnattestedClients(t *testing.T) {
	t.Parallel()
	st, _ := pgtest.Stack(t)
	addr, hs := startServer(t, st)
	ctx := testCtx(t)

	noCert := credentials.NewTLS(&tls.Config{InsecureSkipVerify: true})
	_, err := dial(t, addr, noCert).Check(ctx, &healthpb.HealthCheckRequest{})
	assert.Equal(t, codes.Unavailable, status.Code(err), "%v", err)

	plainCert := credentials.NewTLS(&tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{selfSigned(t)}})
	_, err = dial(t, addr, plainCert).Check(ctx, &healthpb.HealthCheckRequest{})
	assert.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	assert.Empty(t, hs.seen(), "no handler ran")

	// The same, one level down: the server handshake fails with the
	// sentinel.
	srv, err := st.NewServer(ctx)
	require.NoError(t, err)
	creds := ratlsgrpc.NewServerCredentials(srv)
	cConn, sConn := tcpPair(t)
	go tls.Client(cConn, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}, Certificates: []tls.Certificate{selfSigned(t)}}).HandshakeContext(ctx)
	_, _, err = creds.ServerHandshake(sConn)
	require.ErrorIs(t, err, ratls.ErrNoQuote)
}

// ClientHandshake gives up when its context ends, on a server that never
// answers.
func TestClientHandshakeBoundedByContext(t *testing.T) {
	t.Parallel()
	_, client := pgtest.Stack(t)
	cConn, _ := tcpPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, _, err := ratlsgrpc.NewClientCredentials(client).ClientHandshake(ctx, "silent:443", cConn)
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

// blockingVerifier verifies nothing: it waits until its context ends and
// records why it did.
type blockingVerifier struct {
	entered chan struct{}
	ended   chan error
}

func (v *blockingVerifier) VerifyQuote(ctx context.Context, _ []byte) (*tdx.Verdict, error) {
	v.entered <- struct{}{}
	<-ctx.Done()
	v.ended <- ctx.Err()
	return nil, ctx.Err()
}

// The dial context bounds the quote verification inside the handshake: once
// it is cancelled, the verification stops and ClientHandshake returns, long
// before the client's HandshakeTimeout.
func TestClientHandshakeContextStopsVerification(t *testing.T) {
	t.Parallel()
	st, _ := pgtest.Stack(t)
	addr, _ := startServer(t, st)
	bv := &blockingVerifier{entered: make(chan struct{}, 1), ended: make(chan error, 1)}
	cfg := st.Config
	cfg.Verifier = bv
	cfg.HandshakeTimeout = time.Hour
	client, err := ratls.NewClient(testCtx(t), cfg)
	require.NoError(t, err)
	defer client.Close()

	raw, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer raw.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		_, _, err := ratlsgrpc.NewClientCredentials(client).ClientHandshake(ctx, addr, raw)
		errc <- err
	}()
	select {
	case <-bv.entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the quote was never handed to the verifier")
	}
	cancel()
	select {
	case err := <-errc:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(30 * time.Second):
		t.Fatal("ClientHandshake went on after its context was cancelled")
	}
	// The verifier itself was stopped by the dial context.
	require.ErrorIs(t, <-bv.ended, context.Canceled)
}

func TestCloneAndOverrideServerName(t *testing.T) {
	t.Parallel()
	_, client := pgtest.Stack(t)
	creds := ratlsgrpc.NewClientCredentials(client)
	clone := creds.Clone()
	require.NoError(t, clone.OverrideServerName("ledger.internal"))
	assert.Equal(t, "ledger.internal", clone.Info().ServerName)
	assert.Empty(t, creds.Info().ServerName, "a clone is independent")
	assert.Equal(t, "tls", creds.Info().SecurityProtocol)

	// The SNI is the authority's host, or the override.
	for _, tc := range []struct {
		creds credentials.TransportCredentials
		want  string
	}{{creds, "svc.example"}, {clone, "ledger.internal"}} {
		cConn, sConn := tcpPair(t)
		sni := make(chan string, 1)
		go tls.Server(sConn, &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			sni <- h.ServerName
			return nil, errors.New("recorded")
		}}).Handshake()
		_, _, err := tc.creds.ClientHandshake(testCtx(t), "svc.example:8443", cConn)
		require.Error(t, err)
		assert.Equal(t, tc.want, <-sni)
	}
}

// Info reports the lowest TLS version the handshakes accept, read from the
// ratls side's configuration: never more than is enforced.
func TestInfoSecurityVersion(t *testing.T) {
	t.Parallel()
	st, client := pgtest.Stack(t)
	srv, err := st.NewServer(testCtx(t))
	require.NoError(t, err)
	for _, tc := range []struct {
		creds credentials.TransportCredentials
		cfg   *tls.Config
	}{
		{ratlsgrpc.NewClientCredentials(client), client.TLSConfig("x")},
		{ratlsgrpc.NewServerCredentials(srv), srv.TLSConfig()},
	} {
		info := tc.creds.Info()
		assert.Equal(t, "tls", info.SecurityProtocol)
		require.NotZero(t, tc.cfg.MinVersion)
		assert.Equal(t, "TLS "+info.SecurityVersion, tls.VersionName(tc.cfg.MinVersion))
	}
}

// At the RPC level the ratls sentinel is gone (grpc-go keeps only the
// handshake error's text); a handshake outside gRPC, as the package doc
// advises, gets it back.
func TestRPCErrorLosesSentinelHandshakeKeepsIt(t *testing.T) {
	t.Parallel()
	st, client := pgtest.Stack(t)
	adv := pgtest.Adversary(t, st, ratlstest.WrongMRTD)
	ctx := testCtx(t)

	_, err := dial(t, adv.Addr(), ratlsgrpc.NewClientCredentials(client)).Check(ctx, &healthpb.HealthCheckRequest{})
	require.Error(t, err)
	assert.Equal(t, codes.Unavailable, status.Code(err))
	assert.NotErrorIs(t, err, ratls.ErrMRTDNotAllowed, "if grpc-go now keeps the chain, update the package doc")

	conn, err := client.DialContext(ctx, "tcp", adv.Addr())
	if conn != nil {
		conn.Close()
	}
	require.ErrorIs(t, err, ratls.ErrMRTDNotAllowed)
	require.NoError(t, adv.Close())
	assert.Zero(t, adv.BytesReceived())
}

func TestWrongSide(t *testing.T) {
	t.Parallel()
	st, client := pgtest.Stack(t)
	srv, err := st.NewServer(testCtx(t))
	require.NoError(t, err)
	cConn, sConn := tcpPair(t)
	_, _, err = ratlsgrpc.NewServerCredentials(srv).ClientHandshake(testCtx(t), "x:1", cConn)
	require.Error(t, err)
	_, _, err = ratlsgrpc.NewClientCredentials(client).ServerHandshake(sConn)
	require.Error(t, err)
}

func TestReportFromContextWithoutPeer(t *testing.T) {
	t.Parallel()
	_, ok := ratlsgrpc.ReportFromContext(context.Background())
	assert.False(t, ok)
	ctx := peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{}})
	_, ok = ratlsgrpc.ReportFromContext(ctx)
	assert.False(t, ok)
	ctx = peer.NewContext(context.Background(), &peer.Peer{AuthInfo: ratlsgrpc.AuthInfo{Report: &ratls.Report{Debug: true}}})
	r, ok := ratlsgrpc.ReportFromContext(ctx)
	require.True(t, ok)
	assert.True(t, r.Debug)
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	server = <-accepted
	require.NotNil(t, server)
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: strings.Repeat("x", 3)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
