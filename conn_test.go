package ratls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/teesql/ratls/tdx"
)

// silentListener accepts connections and never answers; it records the
// bytes it receives.
func silentListener(t *testing.T) (addr string, received func() []byte) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var mu sync.Mutex
	var wg sync.WaitGroup
	var conns []net.Conn
	var got []byte
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 1024)
				for {
					k, err := c.Read(buf)
					mu.Lock()
					got = append(got, buf[:k]...)
					mu.Unlock()
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String(), func() []byte {
		mu.Lock()
		defer mu.Unlock()
		return append([]byte(nil), got...)
	}
}

func TestDialHandshakeTimeout(t *testing.T) {
	t.Parallel()
	addr, received := silentListener(t)
	c := testClient(t, Config{Verifier: newFakeVerifier(), HandshakeTimeout: 500 * time.Millisecond})
	conn, err := c.DialContext(context.Background(), "tcp", addr)
	require.Nil(t, conn)
	requireOnlySentinel(t, err, ErrHandshakeTimeout)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	// The first bytes on the wire are a TLS handshake record (type 22,
	// version 3.x) holding a ClientHello (type 1): no protocol preamble.
	got := received()
	require.GreaterOrEqual(t, len(got), 6, "the ClientHello did not arrive within the timeout")
	assert.Equal(t, []byte{0x16, 0x03}, got[:2])
	assert.Equal(t, byte(0x01), got[5])
}

func TestDialTimeoutDuringVerification(t *testing.T) {
	t.Parallel()
	srv := startTLSServer(t, &tls.Config{Certificates: []tls.Certificate{mintCert(t, certSpec{})}})
	fv := newFakeVerifier()
	fv.release = make(chan struct{}) // never released: the verifier hangs
	c := testClient(t, Config{Verifier: fv, HandshakeTimeout: 100 * time.Millisecond})
	_, err := c.DialContext(context.Background(), "tcp", srv.addr)
	requireOnlySentinel(t, err, ErrHandshakeTimeout)
	res := srv.result(t)
	require.Error(t, res.handshakeErr)
	assert.Zero(t, res.appBytes)
}

func TestDialCallerCancels(t *testing.T) {
	t.Parallel()
	addr, _ := silentListener(t)
	c := testClient(t, Config{Verifier: newFakeVerifier()})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := c.DialContext(ctx, "tcp", addr)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	// The caller's deadline is the caller's: not a ratls failure.
	for _, s := range allSentinels {
		assert.NotErrorIs(t, err, s)
	}

	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	_, err = c.DialContext(ctx, "tcp", addr)
	require.ErrorIs(t, err, context.Canceled)
	assert.NotErrorIs(t, err, ErrHandshakeTimeout)
}

func TestDialBadAddress(t *testing.T) {
	t.Parallel()
	c := testClient(t, Config{Verifier: newFakeVerifier()})
	_, err := c.DialContext(context.Background(), "tcp", "no-port")
	require.Error(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close()
	_, err = c.DialContext(context.Background(), "tcp", addr)
	require.Error(t, err)
	assert.NotErrorIs(t, err, ErrHandshakeTimeout)
}

func TestDialSendsSNIForHostnames(t *testing.T) {
	t.Parallel()
	srv := startTLSServer(t, &tls.Config{Certificates: []tls.Certificate{mintCert(t, certSpec{})}})
	_, port, err := net.SplitHostPort(srv.addr)
	require.NoError(t, err)
	c := testClient(t, Config{Verifier: newFakeVerifier()})
	conn, err := c.DialContext(context.Background(), "tcp", net.JoinHostPort("localhost", port))
	if err != nil {
		t.Skipf("localhost does not resolve to 127.0.0.1 here: %v", err)
	}
	conn.Close()
	assert.Equal(t, "localhost", srv.result(t).state.ServerName)
}

func TestDialTLS12(t *testing.T) {
	t.Parallel()
	srv := startTLSServer(t, &tls.Config{
		Certificates: []tls.Certificate{mintCert(t, certSpec{})},
		MaxVersion:   tls.VersionTLS12,
	})
	c := testClient(t, Config{Verifier: newFakeVerifier()})
	conn, err := c.DialContext(context.Background(), "tcp", srv.addr)
	require.NoError(t, err)
	assert.Equal(t, uint16(tls.VersionTLS12), conn.ConnectionState().Version)
	pingPong(t, conn)
	conn.Close()
	srv.result(t)

	// TLS 1.2 rejections are as silent as TLS 1.3 ones.
	bad := startTLSServer(t, &tls.Config{
		Certificates: []tls.Certificate{mintCert(t, certSpec{quote: quoteFor(t, newKey(t), nil)})},
		MaxVersion:   tls.VersionTLS12,
	})
	_, err = c.DialContext(context.Background(), "tcp", bad.addr)
	requireOnlySentinel(t, err, ErrKeyBinding)
	assertNothingSent(t, bad)

	// Below TLS 1.2 nothing is offered.
	old := startTLSServer(t, &tls.Config{
		Certificates: []tls.Certificate{mintCert(t, certSpec{})},
		MaxVersion:   tls.VersionTLS11,
	})
	_, err = c.DialContext(context.Background(), "tcp", old.addr)
	require.Error(t, err)
	old.result(t)
}

// Resumed sessions are verified again: crypto/tls calls VerifyConnection on
// resumption, and the certificate's dates are checked against the clock.
func TestResumedSessionsAreVerified(t *testing.T) {
	t.Parallel()
	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(version), func(t *testing.T) {
			t.Parallel()
			cert := mintCert(t, certSpec{})
			srv := startTLSServer(t, &tls.Config{Certificates: []tls.Certificate{cert}, MaxVersion: version})
			fv := newFakeVerifier()
			clock := &fakeClock{now: time.Now()}
			c := testClient(t, Config{Verifier: fv, CacheTTL: -1, Now: clock.Now})
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
			srv.result(t)

			conn, err = dial()
			require.NoError(t, err)
			require.True(t, conn.ConnectionState().DidResume)
			_, ok := c.Report(conn)
			assert.True(t, ok)
			pingPong(t, conn)
			conn.Close()
			srv.result(t)
			assert.Equal(t, int32(2), fv.calls.Load())

			clock.advance(2 * time.Hour) // the certificate has expired
			_, err = dial()
			requireOnlySentinel(t, err, ErrCertificateValidity)
			srv.result(t)
		})
	}
}

// A driver dialling with TLSConfig gets the same checks, and Report finds
// its connection.
func TestTLSConfigForDrivers(t *testing.T) {
	t.Parallel()
	srv := startTLSServer(t, &tls.Config{Certificates: []tls.Certificate{mintCert(t, certSpec{})}})
	c := testClient(t, Config{Verifier: newFakeVerifier()})
	cfg := c.TLSConfig("db.example")
	assert.True(t, cfg.InsecureSkipVerify)
	assert.Equal(t, uint16(tls.VersionTLS12), cfg.MinVersion)
	assert.Equal(t, "db.example", cfg.ServerName)

	conn, err := tls.Dial("tcp", srv.addr, cfg)
	require.NoError(t, err)
	rep, ok := c.Report(conn)
	require.True(t, ok)
	assert.Equal(t, tdx.TCBUpToDate, rep.TCBStatus)
	conn.Close()
	assert.Equal(t, "db.example", srv.result(t).state.ServerName)

	// Another Client knows nothing of c's connections.
	other := testClient(t, Config{Verifier: newFakeVerifier()})
	_, ok = other.Report(conn)
	assert.False(t, ok)

	bad := startTLSServer(t, &tls.Config{Certificates: []tls.Certificate{mintCert(t, certSpec{noQuote: true})}})
	_, err = tls.Dial("tcp", bad.addr, c.TLSConfig(""))
	requireOnlySentinel(t, err, ErrNoQuote)
	assertNothingSent(t, bad)
}

// TLSConfigContext binds the attestation checks to the caller's context:
// cancelling it stops a verification in progress, which HandshakeTimeout
// alone (here far away) would not.
func TestTLSConfigContextCancelsVerification(t *testing.T) {
	t.Parallel()
	srv := startTLSServer(t, &tls.Config{Certificates: []tls.Certificate{mintCert(t, certSpec{})}})
	fv := newFakeVerifier()
	fv.release = make(chan struct{}) // never released: only ctx ends the call
	c := testClient(t, Config{Verifier: fv, HandshakeTimeout: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	errc := make(chan error, 1)
	go func() {
		conn, err := tls.Dial("tcp", srv.addr, c.TLSConfigContext(ctx, "db.example"))
		if err == nil {
			conn.Close()
		}
		errc <- err
	}()
	require.Eventually(t, func() bool { return fv.calls.Load() == 1 }, 10*time.Second, time.Millisecond)
	cancel()
	select {
	case err := <-errc:
		requireOnlySentinel(t, err, ErrQuoteInvalid)
		assert.ErrorIs(t, err, context.Canceled)
	case <-time.After(30 * time.Second):
		t.Fatal("the handshake went on after its context was cancelled")
	}
	assertNothingSent(t, srv)
}

// HandshakeTimeout still bounds checks whose context has a later deadline.
func TestTLSConfigContextKeepsHandshakeTimeout(t *testing.T) {
	t.Parallel()
	srv := startTLSServer(t, &tls.Config{Certificates: []tls.Certificate{mintCert(t, certSpec{})}})
	fv := newFakeVerifier()
	fv.release = make(chan struct{})
	c := testClient(t, Config{Verifier: fv, HandshakeTimeout: 100 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	_, err := tls.Dial("tcp", srv.addr, c.TLSConfigContext(ctx, ""))
	requireOnlySentinel(t, err, ErrQuoteInvalid)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assertNothingSent(t, srv)
}

func TestReportUnknownConnections(t *testing.T) {
	t.Parallel()
	c := testClient(t, Config{Verifier: newFakeVerifier()})
	_, ok := c.Report(nil)
	assert.False(t, ok)
	// A connection whose handshake has not run.
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	_, ok = c.Report(tls.Client(a, c.TLSConfig("")))
	assert.False(t, ok)
}

func TestVerifyConnectionForAdapters(t *testing.T) {
	t.Parallel()
	cert := mintCert(t, certSpec{})
	c := testClient(t, Config{Verifier: newFakeVerifier()})
	rep, err := c.VerifyConnection(tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert.Leaf}})
	require.NoError(t, err)
	assert.Equal(t, expectedReportData(cert.Leaf), rep.ReportData)

	_, err = c.VerifyConnection(tls.ConnectionState{})
	requireOnlySentinel(t, err, ErrNoPeerCertificate)

	bad := mintCert(t, certSpec{mutate: func(q *tdx.Quote) { q.Body.TDAttributes[0] |= 1 }})
	_, err = c.VerifyConnection(tls.ConnectionState{PeerCertificates: []*x509.Certificate{bad.Leaf}})
	requireOnlySentinel(t, err, ErrDebugMode)
}

// The registry of reports lets go of certificates no connection holds.
func TestReportRegistryDoesNotLeak(t *testing.T) {
	srv := startTLSServer(t, &tls.Config{Certificates: []tls.Certificate{mintCert(t, certSpec{})}})
	c := testClient(t, Config{Verifier: newFakeVerifier()})
	func() {
		for range 3 {
			conn, err := c.DialContext(context.Background(), "tcp", srv.addr)
			require.NoError(t, err)
			conn.Close()
			srv.result(t)
		}
	}()
	require.Positive(t, c.pv.reports.len())
	require.Eventually(t, func() bool {
		runtime.GC()
		return c.pv.reports.len() == 0
	}, 10*time.Second, 10*time.Millisecond)
}

func TestHandshakeErrorIsUnchangedByCryptoTLS(t *testing.T) {
	t.Parallel()
	// crypto/tls returns the VerifyConnection error itself (not a copy of
	// its text): our wrapped sentinels and the verifier's error survive.
	srv := startTLSServer(t, &tls.Config{Certificates: []tls.Certificate{mintCert(t, certSpec{})}})
	fv := newFakeVerifier()
	sentinel := errors.New("verifier says no")
	fv.err = sentinel
	c := testClient(t, Config{Verifier: fv})
	raw, err := net.Dial("tcp", srv.addr)
	require.NoError(t, err)
	defer raw.Close()
	err = tls.Client(raw, c.TLSConfig("")).HandshakeContext(context.Background())
	requireOnlySentinel(t, err, ErrQuoteInvalid)
	wrapped := errors.Join(errors.New("pgx: failed to connect"), err)
	requireErrorIsAll(t, wrapped, ErrQuoteInvalid, sentinel)
	srv.result(t)
}

// The client certificate (and the attestation it carries) goes only to
// servers that passed attestation: crypto/tls asks for it after
// VerifyConnection, in TLS 1.2 as in TLS 1.3. A server that fails never
// receives it, even though it asked for one.
func TestClientCertificateWithheldFromUnattestedServers(t *testing.T) {
	t.Parallel()
	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(version), func(t *testing.T) {
			t.Parallel()
			clientCert := mintCert(t, certSpec{})
			c := testClient(t, Config{Verifier: newFakeVerifier(), ClientCertificate: &clientCert})

			// serve starts a server that asks for a client certificate;
			// the function it returns lists the certificates it received.
			serve := func(serverCert tls.Certificate) (*tlsServer, func() [][]byte) {
				var mu sync.Mutex
				var got [][]byte
				srv := startTLSServer(t, &tls.Config{
					Certificates: []tls.Certificate{serverCert},
					MaxVersion:   version,
					ClientAuth:   tls.RequestClientCert,
					VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
						mu.Lock()
						got = append(got, raw...)
						mu.Unlock()
						return nil
					},
				})
				return srv, func() [][]byte {
					mu.Lock()
					defer mu.Unlock()
					return got
				}
			}

			good, goodGot := serve(mintCert(t, certSpec{}))
			conn, err := c.DialContext(context.Background(), "tcp", good.addr)
			require.NoError(t, err)
			pingPong(t, conn)
			conn.Close()
			good.result(t)
			assert.Equal(t, [][]byte{clientCert.Certificate[0]}, goodGot())

			bad, badGot := serve(mintCert(t, certSpec{quote: quoteFor(t, newKey(t), nil)}))
			_, err = c.DialContext(context.Background(), "tcp", bad.addr)
			requireOnlySentinel(t, err, ErrKeyBinding)
			assertNothingSent(t, bad)
			assert.Empty(t, badGot(), "a server that failed attestation received the client certificate")
		})
	}
}
