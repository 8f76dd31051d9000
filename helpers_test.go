package ratls

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/teesql/ratls/ext"
	"github.com/teesql/ratls/tdx"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recordedQuote is the real v4 quote in testdata, re-encoded by the tests
// with the REPORTDATA (and measurements) they need. Its signatures then no
// longer hold, which is why the tests use fakeVerifier.
func recordedQuote(t testing.TB) *tdx.Quote {
	t.Helper()
	b, err := os.ReadFile("testdata/dcap-qvl/tdx_quote")
	require.NoError(t, err)
	q, err := tdx.ParseQuote(b)
	require.NoError(t, err)
	return q
}

// quoteFor returns the recorded quote re-encoded to bind key, after mutate.
func quoteFor(t testing.TB, key *ecdsa.PrivateKey, mutate func(*tdx.Quote)) []byte {
	t.Helper()
	q := recordedQuote(t).UnsignedCopy()
	spki, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	require.NoError(t, err)
	q.Body.ReportData = sha512.Sum512(append([]byte("ratls-cert:"), spki...))
	if mutate != nil {
		mutate(q)
	}
	b, err := q.Marshal()
	require.NoError(t, err)
	return b
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	return k
}

// certSpec describes a test RA-TLS certificate. The zero value is a valid
// V0 (.1.8) certificate whose quote binds its key, valid for an hour
// around now.
type certSpec struct {
	key     *ecdsa.PrivateKey
	quote   []byte           // nil: quoteFor(key, mutate)
	mutate  func(*tdx.Quote) // applied to the default quote
	noQuote bool             // no dstack extension at all
	legacy  bool             // .1.1 (+ .1.2) instead of .1.8
	events  []ext.Event
	// extra extensions are appended as is (malformed or conflicting ones).
	extra     []pkix.Extension
	notBefore time.Time
	notAfter  time.Time
}

var serial atomic.Int64

func mintCert(t testing.TB, spec certSpec) tls.Certificate {
	t.Helper()
	key := spec.key
	if key == nil {
		key = newKey(t)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)),
		Subject:      pkix.Name{CommonName: "ratls test"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(time.Hour),
		DNSNames:     []string{"localhost"},
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if !spec.notBefore.IsZero() {
		tmpl.NotBefore = spec.notBefore
	}
	if !spec.notAfter.IsZero() {
		tmpl.NotAfter = spec.notAfter
	}
	if !spec.noQuote {
		quote := spec.quote
		if quote == nil {
			quote = quoteFor(t, key, spec.mutate)
		}
		exts, err := ext.Extensions(&ext.Attestation{Quote: quote, Events: spec.events}, spec.legacy)
		require.NoError(t, err)
		tmpl.ExtraExtensions = exts
	}
	tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, spec.extra...)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// octetExt is a dstack-style extension: value wrapped in an OCTET STRING.
func octetExt(t testing.TB, oid asn1.ObjectIdentifier, value []byte) pkix.Extension {
	t.Helper()
	der, err := asn1.Marshal(value)
	require.NoError(t, err)
	return pkix.Extension{Id: oid, Value: der}
}

// appEvents are dstack runtime events carrying an app identity, and the
// RTMR3 they replay to.
func appEvents(t testing.TB, appID, composeHash []byte) ([]ext.Event, [48]byte) {
	t.Helper()
	var events []ext.Event
	add := func(name string, payload []byte) {
		d := ext.RuntimeEventDigest(name, payload)
		events = append(events, ext.Event{IMR: 3, EventType: ext.RuntimeEventType, Digest: d[:], Event: name, Payload: payload})
	}
	add("system-preparing", nil)
	add("app-id", appID)
	add("compose-hash", composeHash)
	add("instance-id", bytes.Repeat([]byte{0x11}, 20))
	add("boot-mr-done", nil)
	add("system-ready", nil)
	rtmr3, err := ext.Replay(events, 3)
	require.NoError(t, err)
	return events, rtmr3
}

// fakeVerifier checks nothing and returns the verdict it is told to, with
// the parsed quote; it counts its calls.
type fakeVerifier struct {
	mu      sync.Mutex
	verdict tdx.Verdict
	err     error
	// release, when set, holds every call until it is closed.
	release chan struct{}
	calls   atomic.Int32
}

func newFakeVerifier() *fakeVerifier {
	return &fakeVerifier{verdict: tdx.Verdict{
		TCBStatus:   tdx.TCBUpToDate,
		FMSPC:       "B0C06F000000",
		AdvisoryIDs: []string{"INTEL-SA-00837"},
	}}
}

func (f *fakeVerifier) VerifyQuote(ctx context.Context, quote []byte) (*tdx.Verdict, error) {
	f.calls.Add(1)
	f.mu.Lock()
	v, err, release := f.verdict, f.err, f.release
	f.mu.Unlock()
	if release != nil {
		select {
		case <-release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if err != nil {
		return nil, err
	}
	q, perr := tdx.ParseQuote(quote)
	if perr != nil {
		return nil, perr
	}
	v.Quote = q
	return &v, nil
}

func (f *fakeVerifier) set(fn func(f *fakeVerifier)) {
	f.mu.Lock()
	fn(f)
	f.mu.Unlock()
}

// serverResult is what a test server saw on one connection.
type serverResult struct {
	handshakeErr error
	appBytes     int // application bytes read after the handshake
	state        tls.ConnectionState
	report       *Report // from the server's report function, if any
}

// tlsServer is a raw TLS server on loopback. After its side of the
// handshake it answers "ping" with "pong" and counts every application byte
// it reads until the peer goes away.
type tlsServer struct {
	addr    string
	results chan serverResult
	// report, when set, is asked for the report of each handshake.
	report func(*tls.Conn) (*Report, bool)
}

func startTLSServer(t testing.TB, cfg *tls.Config) *tlsServer {
	return startReportingServer(t, cfg, nil)
}

func startReportingServer(t testing.TB, cfg *tls.Config, report func(*tls.Conn) (*Report, bool)) *tlsServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &tlsServer{addr: ln.Addr().String(), results: make(chan serverResult, 64), report: report}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.results <- s.serve(tls.Server(c, cfg))
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return s
}

func (s *tlsServer) serve(conn *tls.Conn) serverResult {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if err := conn.Handshake(); err != nil {
		return serverResult{handshakeErr: err}
	}
	res := serverResult{state: conn.ConnectionState()}
	if s.report != nil {
		res.report, _ = s.report(conn)
	}
	buf := make([]byte, 4)
	n, err := io.ReadFull(conn, buf)
	res.appBytes += n
	if err == nil && string(buf) == "ping" {
		conn.Write([]byte("pong"))
	}
	rest, _ := io.Copy(io.Discard, conn)
	res.appBytes += int(rest)
	return res
}

// result waits for the server's record of the next connection.
func (s *tlsServer) result(t testing.TB) serverResult {
	t.Helper()
	select {
	case r := <-s.results:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("the test server saw no connection")
		return serverResult{}
	}
}

// pingPong proves the connection carries application data both ways.
func pingPong(t testing.TB, conn net.Conn) {
	t.Helper()
	_, err := conn.Write([]byte("ping"))
	require.NoError(t, err)
	buf := make([]byte, 4)
	_, err = io.ReadFull(conn, buf)
	require.NoError(t, err)
	require.Equal(t, "pong", string(buf))
}

// logBuffer collects log output from concurrent handshakes.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) count(s string) int { return strings.Count(b.String(), s) }

func newLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// testClient builds a Client with a test verifier and a static client
// certificate, so that no agent is needed.
func testClient(t testing.TB, cfg Config) *Client {
	t.Helper()
	if cfg.ClientCertificate == nil {
		cert := mintCert(t, certSpec{})
		cfg.ClientCertificate = &cert
	}
	if cfg.Logger == nil {
		cfg.Logger = discardLogger()
	}
	c, err := NewClient(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// errorsIsAll asserts err matches every target.
func requireErrorIsAll(t testing.TB, err error, targets ...error) {
	t.Helper()
	require.Error(t, err)
	for _, target := range targets {
		require.True(t, errors.Is(err, target), "error %q does not match %q", err, target)
	}
}

func hexOf(b []byte) string { return hex.EncodeToString(b) }
