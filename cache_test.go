package ratls

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/teesql/ratls/tdx"
)

// fakeClock is a settable clock for Config.Now.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func dialOK(t *testing.T, c *Client, srv *tlsServer) *Report {
	t.Helper()
	conn, err := c.DialContext(context.Background(), "tcp", srv.addr)
	require.NoError(t, err)
	rep, ok := c.Report(conn)
	require.True(t, ok)
	conn.Close()
	srv.result(t)
	return rep
}

func TestCacheVerifiesOnce(t *testing.T) {
	t.Parallel()
	srv := startTLSServer(t, &tls.Config{Certificates: []tls.Certificate{mintCert(t, certSpec{})}})
	fv := newFakeVerifier()
	c := testClient(t, Config{Verifier: fv})
	first := dialOK(t, c, srv)
	for range 4 {
		rep := dialOK(t, c, srv)
		// A cached report keeps the time of the verification it records.
		assert.Equal(t, first.VerifiedAt, rep.VerifiedAt)
	}
	assert.Equal(t, int32(1), fv.calls.Load())

	// Another certificate is another verification.
	other := startTLSServer(t, &tls.Config{Certificates: []tls.Certificate{mintCert(t, certSpec{})}})
	dialOK(t, c, other)
	assert.Equal(t, int32(2), fv.calls.Load())
}

func TestCacheTTL(t *testing.T) {
	t.Parallel()
	srv := startTLSServer(t, &tls.Config{Certificates: []tls.Certificate{mintCert(t, certSpec{})}})
	fv := newFakeVerifier()
	clock := &fakeClock{now: time.Now()}
	c := testClient(t, Config{Verifier: fv, CacheTTL: time.Minute, Now: clock.Now})

	rep := dialOK(t, c, srv)
	assert.Equal(t, clock.Now().Add(time.Minute), rep.ValidUntil)
	clock.advance(59 * time.Second)
	dialOK(t, c, srv)
	assert.Equal(t, int32(1), fv.calls.Load())
	clock.advance(time.Second)
	dialOK(t, c, srv)
	assert.Equal(t, int32(2), fv.calls.Load())
}

func TestCacheBoundedByVerdict(t *testing.T) {
	t.Parallel()
	srv := startTLSServer(t, &tls.Config{Certificates: []tls.Certificate{mintCert(t, certSpec{})}})
	fv := newFakeVerifier()
	clock := &fakeClock{now: time.Now()}
	fv.verdict.ValidUntil = clock.Now().Add(30 * time.Second) // collateral expiring
	c := testClient(t, Config{Verifier: fv, Now: clock.Now})

	rep := dialOK(t, c, srv)
	assert.Equal(t, fv.verdict.ValidUntil, rep.ValidUntil)
	clock.advance(31 * time.Second)
	// The verifier answers with fresh collateral's bound now.
	fv.set(func(f *fakeVerifier) { f.verdict.ValidUntil = clock.Now().Add(time.Hour) })
	dialOK(t, c, srv)
	assert.Equal(t, int32(2), fv.calls.Load())
}

func TestCacheBoundedByCertificate(t *testing.T) {
	t.Parallel()
	notAfter := time.Now().Add(time.Minute).Truncate(time.Second)
	srv := startTLSServer(t, &tls.Config{Certificates: []tls.Certificate{mintCert(t, certSpec{notAfter: notAfter})}})
	fv := newFakeVerifier()
	c := testClient(t, Config{Verifier: fv})
	rep := dialOK(t, c, srv)
	assert.True(t, notAfter.Equal(rep.ValidUntil), "ValidUntil %v, certificate NotAfter %v", rep.ValidUntil, notAfter)
}

func TestCacheDoesNotKeepFailures(t *testing.T) {
	t.Parallel()
	srv := startTLSServer(t, &tls.Config{Certificates: []tls.Certificate{mintCert(t, certSpec{})}})
	fv := newFakeVerifier()
	boom := errors.New("PCS unreachable")
	fv.err = boom
	c := testClient(t, Config{Verifier: fv})

	_, err := c.DialContext(context.Background(), "tcp", srv.addr)
	requireErrorIsAll(t, err, ErrQuoteInvalid, boom)
	srv.result(t)

	fv.set(func(f *fakeVerifier) { f.err = nil })
	dialOK(t, c, srv)
	dialOK(t, c, srv)
	assert.Equal(t, int32(2), fv.calls.Load())
}

func TestCacheDisabled(t *testing.T) {
	t.Parallel()
	srv := startTLSServer(t, &tls.Config{Certificates: []tls.Certificate{mintCert(t, certSpec{})}})
	fv := newFakeVerifier()
	c := testClient(t, Config{Verifier: fv, CacheTTL: -1})
	for range 3 {
		rep := dialOK(t, c, srv)
		// Without a cache the report's validity is not cut by a TTL.
		assert.True(t, rep.ValidUntil.After(time.Now().Add(30*time.Minute)))
	}
	assert.Equal(t, int32(3), fv.calls.Load())
}

// Concurrent handshakes to one server verify once even with the cache off:
// they merge while the first verification runs.
func TestConcurrentHandshakesVerifyOnce(t *testing.T) {
	t.Parallel()
	cert := mintCert(t, certSpec{})
	srv := startTLSServer(t, &tls.Config{Certificates: []tls.Certificate{cert}})
	fv := newFakeVerifier()
	fv.release = make(chan struct{})
	c := testClient(t, Config{Verifier: fv, CacheTTL: -1})

	const n = 6
	errs := make(chan error, n)
	for range n {
		go func() {
			conn, err := c.DialContext(context.Background(), "tcp", srv.addr)
			if err == nil {
				_, ok := c.Report(conn)
				if !ok {
					err = errors.New("no report")
				}
				conn.Close()
			}
			errs <- err
		}()
	}
	key := sha256.Sum256(cert.Leaf.Raw)
	for fv.calls.Load() < 1 || c.pv.flight.Waiters(key) < n-1 {
		runtime.Gosched()
	}
	close(fv.release)
	for range n {
		require.NoError(t, <-errs)
		srv.result(t)
	}
	assert.Equal(t, int32(1), fv.calls.Load())
}

// Concurrent handshakes presenting different certificates do not merge: a
// failing certificate verified at the same moment as a good one gets its
// own result, and the good one is not refused with it (nor the other way).
func TestConcurrentHandshakesDifferentCertificates(t *testing.T) {
	t.Parallel()
	good := startTLSServer(t, &tls.Config{Certificates: []tls.Certificate{mintCert(t, certSpec{})}})
	debug := startTLSServer(t, &tls.Config{Certificates: []tls.Certificate{
		mintCert(t, certSpec{mutate: func(q *tdx.Quote) { q.Body.TDAttributes[0] |= 1 }}),
	}})
	fv := newFakeVerifier()
	fv.release = make(chan struct{})
	c := testClient(t, Config{Verifier: fv})

	dial := func(srv *tlsServer) <-chan error {
		errc := make(chan error, 1)
		go func() {
			conn, err := c.DialContext(context.Background(), "tcp", srv.addr)
			if err == nil {
				conn.Close()
			}
			errc <- err
		}()
		return errc
	}
	goodErr, debugErr := dial(good), dial(debug)
	for fv.calls.Load() < 2 { // both verifications are running
		runtime.Gosched()
	}
	close(fv.release)
	require.NoError(t, <-goodErr)
	requireOnlySentinel(t, <-debugErr, ErrDebugMode)
	good.result(t)
	assertNothingSent(t, debug)

	// The failure was not cached; the success was.
	_, err := c.DialContext(context.Background(), "tcp", debug.addr)
	requireOnlySentinel(t, err, ErrDebugMode)
	debug.result(t)
	dialOK(t, c, good)
	assert.Equal(t, int32(3), fv.calls.Load())
}
