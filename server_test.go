package ratls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/teesql/ratls/tdx"
)

func testServer(t *testing.T, cfg ServerConfig) *Server {
	t.Helper()
	if cfg.Certificate == nil {
		cert := mintCert(t, certSpec{})
		cfg.Certificate = &cert
	}
	if cfg.Logger == nil {
		cfg.Logger = discardLogger()
	}
	s, err := NewServer(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

func TestMutualRATLS(t *testing.T) {
	t.Parallel()
	serverVerifier := newFakeVerifier()
	serverVerifier.verdict.TCBStatus = tdx.TCBSWHardeningNeeded
	mrtd := recordedQuote(t).Body.MRTD
	s := testServer(t, ServerConfig{
		Verifier:     serverVerifier,
		ClientPolicy: Policy{MRTDs: []string{hexOf(mrtd[:])}},
	})
	srv := startReportingServer(t, s.TLSConfig(), s.Report)

	clientCert := mintCert(t, certSpec{})
	clientVerifier := newFakeVerifier()
	c := testClient(t, Config{Verifier: clientVerifier, ClientCertificate: &clientCert})
	conn, err := c.DialContext(context.Background(), "tcp", srv.addr)
	require.NoError(t, err)
	pingPong(t, conn)
	serverRep, ok := c.Report(conn)
	require.True(t, ok)
	assert.Equal(t, tdx.TCBUpToDate, serverRep.TCBStatus)
	conn.Close()

	res := srv.result(t)
	require.NoError(t, res.handshakeErr)
	require.NotNil(t, res.report, "Server.Report finds the client's report")
	assert.Equal(t, tdx.TCBSWHardeningNeeded, res.report.TCBStatus)
	assert.Equal(t, expectedReportData(clientCert.Leaf), res.report.ReportData)
	assert.Equal(t, 4, res.appBytes)
	assert.Equal(t, int32(1), serverVerifier.calls.Load())
	assert.Equal(t, int32(1), clientVerifier.calls.Load())
}

func TestServerRejectsClients(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		spec certSpec
		want error
	}{
		{"no attestation", certSpec{noQuote: true}, ErrNoQuote},
		{"copied quote", certSpec{quote: quoteFor(t, newKey(t), nil)}, ErrKeyBinding},
		{"debug TD", certSpec{mutate: func(q *tdx.Quote) { q.Body.TDAttributes[0] |= 1 }}, ErrDebugMode},
		{"expired", certSpec{notBefore: time.Now().Add(-2 * time.Hour), notAfter: time.Now().Add(-time.Hour)}, ErrCertificateValidity},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := testServer(t, ServerConfig{Verifier: newFakeVerifier()})
			srv := startReportingServer(t, s.TLSConfig(), s.Report)
			clientCert := mintCert(t, tt.spec)
			c := testClient(t, Config{Verifier: newFakeVerifier(), ClientCertificate: &clientCert})

			conn, err := c.DialContext(context.Background(), "tcp", srv.addr)
			if err == nil {
				// In TLS 1.3 the client finishes first; the refusal
				// arrives as an alert, with no detail in it.
				conn.Write([]byte("ping"))
				_, err = io.ReadAll(conn)
				conn.Close()
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), "bad certificate")
			assert.NotContains(t, err.Error(), "ratls")

			res := srv.result(t)
			requireOnlySentinel(t, res.handshakeErr, tt.want)
			assert.Zero(t, res.appBytes)
			assert.Nil(t, res.report)
		})
	}
}

func TestServerRequiresClientCertificate(t *testing.T) {
	t.Parallel()
	s := testServer(t, ServerConfig{Verifier: newFakeVerifier(), InsecureSkipClientAttestation: true})
	srv := startTLSServer(t, s.TLSConfig())
	cfg := &tls.Config{InsecureSkipVerify: true}
	conn, err := tls.Dial("tcp", srv.addr, cfg)
	if err == nil {
		_, err = io.ReadAll(conn)
		conn.Close()
	}
	require.Error(t, err)
	res := srv.result(t)
	require.Error(t, res.handshakeErr)
	assert.Zero(t, res.appBytes)
}

func TestServerInsecureSkipClientAttestation(t *testing.T) {
	t.Parallel()
	var logs logBuffer
	s := testServer(t, ServerConfig{InsecureSkipClientAttestation: true, Logger: newLogger(&logs)})
	assert.Equal(t, 1, logs.count("InsecureSkipClientAttestation"))
	assert.False(t, s.AttestsClients())
	assert.True(t, testServer(t, ServerConfig{Verifier: newFakeVerifier()}).AttestsClients())
	srv := startReportingServer(t, s.TLSConfig(), s.Report)

	plain := mintCert(t, certSpec{noQuote: true})
	c := testClient(t, Config{Verifier: newFakeVerifier(), ClientCertificate: &plain})
	conn, err := c.DialContext(context.Background(), "tcp", srv.addr)
	require.NoError(t, err)
	pingPong(t, conn)
	conn.Close()
	res := srv.result(t)
	require.NoError(t, res.handshakeErr)
	assert.Nil(t, res.report, "no report when attestation is skipped")

	rep, err := s.VerifyConnection(tls.ConnectionState{PeerCertificates: []*x509.Certificate{plain.Leaf}})
	require.NoError(t, err)
	assert.Nil(t, rep)
	_, err = s.VerifyConnection(tls.ConnectionState{})
	requireOnlySentinel(t, err, ErrNoPeerCertificate)
}

func TestServerVerifyConnection(t *testing.T) {
	t.Parallel()
	s := testServer(t, ServerConfig{Verifier: newFakeVerifier()})
	cert := mintCert(t, certSpec{})
	rep, err := s.VerifyConnection(tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert.Leaf}})
	require.NoError(t, err)
	assert.Equal(t, expectedReportData(cert.Leaf), rep.ReportData)
	_, err = s.VerifyConnection(tls.ConnectionState{})
	requireOnlySentinel(t, err, ErrNoPeerCertificate)
}

func TestServerCertificateFromAgent(t *testing.T) {
	t.Parallel()
	a := startLocalAgent(t, time.Now, time.Hour)
	s, err := NewServer(context.Background(), ServerConfig{
		Verifier: newFakeVerifier(), Logger: discardLogger(), DstackEndpoint: a.sock, hooks: noAgentHooks(t),
		Subject: "db.example", AltNames: []string{"db.example", "db"},
	})
	require.NoError(t, err)
	defer s.Close()
	req := a.lastRequest()
	assert.Equal(t, true, req["usage_ra_tls"])
	assert.Equal(t, true, req["usage_server_auth"])
	assert.Equal(t, false, req["usage_client_auth"])
	assert.Equal(t, "db.example", req["subject"])
	assert.Equal(t, []any{"db.example", "db"}, req["alt_names"])

	// The agent's certificate is what clients see, and it verifies.
	srv := startReportingServer(t, s.TLSConfig(), s.Report)
	clientCert := mintCert(t, certSpec{})
	c := testClient(t, Config{Verifier: newFakeVerifier(), ClientCertificate: &clientCert})
	conn, err := c.DialContext(context.Background(), "tcp", srv.addr)
	require.NoError(t, err)
	pingPong(t, conn)
	conn.Close()
	require.NoError(t, srv.result(t).handshakeErr)
}

func TestBadStaticCertificates(t *testing.T) {
	t.Parallel()
	_, err := NewClient(context.Background(), Config{Verifier: newFakeVerifier(), ClientCertificate: &tls.Certificate{}, Logger: discardLogger()})
	requireOnlySentinel(t, err, ErrConfig)
	_, err = NewServer(context.Background(), ServerConfig{Verifier: newFakeVerifier(), Certificate: &tls.Certificate{}, Logger: discardLogger()})
	requireOnlySentinel(t, err, ErrConfig)
	_, err = NewClient(context.Background(), Config{Verifier: newFakeVerifier(), HandshakeTimeout: -1, Logger: discardLogger()})
	requireOnlySentinel(t, err, ErrConfig)
}

// A client resuming a session is attested again: crypto/tls calls the
// Server's VerifyConnection on resumption, with the certificate from the
// session ticket, and the Server's clock decides its validity.
func TestServerVerifiesResumedSessions(t *testing.T) {
	t.Parallel()
	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(version), func(t *testing.T) {
			t.Parallel()
			sv := newFakeVerifier()
			clock := &fakeClock{now: time.Now()}
			s := testServer(t, ServerConfig{Verifier: sv, CacheTTL: -1, Now: clock.Now})
			serverCfg := s.TLSConfig()
			serverCfg.MaxVersion = version
			srv := startReportingServer(t, serverCfg, s.Report)

			c := testClient(t, Config{Verifier: newFakeVerifier()})
			cfg := c.TLSConfig("")
			cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
			dial := func() (*tls.Conn, error) {
				raw, err := net.Dial("tcp", srv.addr)
				require.NoError(t, err)
				conn := tls.Client(raw, cfg)
				if err := conn.Handshake(); err != nil {
					raw.Close()
					return nil, err
				}
				return conn, nil
			}

			conn, err := dial()
			require.NoError(t, err)
			pingPong(t, conn) // lets the TLS 1.3 session ticket arrive
			conn.Close()
			require.NotNil(t, srv.result(t).report)

			conn, err = dial()
			require.NoError(t, err)
			require.True(t, conn.ConnectionState().DidResume)
			pingPong(t, conn)
			conn.Close()
			res := srv.result(t)
			require.NoError(t, res.handshakeErr)
			require.NotNil(t, res.report, "Server.Report finds the resumed client's report")
			assert.Equal(t, int32(2), sv.calls.Load(), "the resumed client was verified again")

			clock.advance(2 * time.Hour) // the client certificate has expired
			conn, err = dial()
			if err == nil {
				// In TLS 1.3 the client finishes first; the server's
				// refusal arrives as an alert on the first read.
				_, err = conn.Read(make([]byte, 1))
				conn.Close()
			}
			require.Error(t, err)
			res = srv.result(t)
			require.ErrorIs(t, res.handshakeErr, ErrCertificateValidity)
			assert.Zero(t, res.appBytes)
		})
	}
}
