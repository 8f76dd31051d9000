package certsource

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2025, 6, 25, 0, 0, 0, 0, time.UTC)

// clock is a fake clock whose timers fire only when the test says so.
type clock struct {
	mu     sync.Mutex
	now    time.Time
	timers chan timer
}

type timer struct {
	d    time.Duration
	fire chan time.Time
}

func newClock() *clock { return &clock{now: t0, timers: make(chan timer, 16)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

func (c *clock) NewTimer(d time.Duration) (<-chan time.Time, func() bool) {
	t := timer{d: d, fire: make(chan time.Time, 1)}
	c.timers <- t
	return t.fire, func() bool { return true }
}

// next returns the next timer the renewal loop starts.
func (c *clock) next(t *testing.T) timer {
	t.Helper()
	select {
	case tm := <-c.timers:
		return tm
	case <-time.After(10 * time.Second):
		t.Fatal("renewal loop started no timer")
		return timer{}
	}
}

// issuer hands out certificates valid for lifetime from the clock's now,
// or the errors queued in fail.
type issuer struct {
	clock    *clock
	lifetime time.Duration
	key      *ecdsa.PrivateKey

	mu     sync.Mutex
	serial int64
	fail   []error
	calls  int
}

func newIssuer(t *testing.T, c *clock, lifetime time.Duration) *issuer {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	return &issuer{clock: c, lifetime: lifetime, key: key}
}

func (is *issuer) fetch(ctx context.Context) (*tls.Certificate, error) {
	is.mu.Lock()
	is.calls++
	if len(is.fail) > 0 {
		err := is.fail[0]
		is.fail = is.fail[1:]
		is.mu.Unlock()
		return nil, err
	}
	is.serial++
	serial := is.serial
	is.mu.Unlock()
	now := is.clock.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		NotBefore:    now,
		NotAfter:     now.Add(is.lifetime),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &is.key.PublicKey, is.key)
	if err != nil {
		return nil, err
	}
	// Leaf left nil on purpose: the Source must parse it.
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: is.key}, nil
}

func (is *issuer) failNext(errs ...error) {
	is.mu.Lock()
	is.fail = append(is.fail, errs...)
	is.mu.Unlock()
}

func (is *issuer) callCount() int {
	is.mu.Lock()
	defer is.mu.Unlock()
	return is.calls
}

func serialOf(t *testing.T, s *Source) int64 {
	t.Helper()
	cert, err := s.Certificate(context.Background())
	require.NoError(t, err)
	require.NotNil(t, cert.Leaf)
	return cert.Leaf.SerialNumber.Int64()
}

func newSource(t *testing.T, c *clock, is *issuer, maxAge time.Duration) *Source {
	t.Helper()
	s, err := New(context.Background(), Options{
		Fetch:      is.fetch,
		MaxAge:     maxAge,
		MinBackoff: time.Second,
		MaxBackoff: 4 * time.Second,
		Now:        c.Now,
		NewTimer:   c.NewTimer,
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	require.NoError(t, err)
	t.Cleanup(s.Close)
	return s
}

func TestNewFailsWhenFirstFetchFails(t *testing.T) {
	t.Parallel()
	c := newClock()
	is := newIssuer(t, c, time.Hour)
	boom := errors.New("agent down")
	is.failNext(boom)
	_, err := New(context.Background(), Options{Fetch: is.fetch, Now: c.Now, NewTimer: c.NewTimer})
	require.ErrorIs(t, err, boom)
}

func TestRenewsAtTwoThirdsOfLifetime(t *testing.T) {
	t.Parallel()
	c := newClock()
	is := newIssuer(t, c, 3*time.Hour)
	s := newSource(t, c, is, 0)
	require.Equal(t, int64(1), serialOf(t, s))

	tm := c.next(t)
	require.Equal(t, 2*time.Hour, tm.d)
	c.set(t0.Add(2 * time.Hour))
	tm.fire <- c.Now()

	// The loop starts the next timer only after storing the renewal.
	tm = c.next(t)
	require.Equal(t, 2*time.Hour, tm.d)
	require.Equal(t, int64(2), serialOf(t, s))
}

func TestRenewsAtMaxAge(t *testing.T) {
	t.Parallel()
	c := newClock()
	is := newIssuer(t, c, 3*time.Hour)
	s := newSource(t, c, is, 10*time.Minute)
	tm := c.next(t)
	require.Equal(t, 10*time.Minute, tm.d)
	c.set(t0.Add(10 * time.Minute))
	tm.fire <- c.Now()
	c.next(t)
	require.Equal(t, int64(2), serialOf(t, s))
}

func TestFailedRenewalKeepsCertificateAndBacksOff(t *testing.T) {
	t.Parallel()
	c := newClock()
	is := newIssuer(t, c, 3*time.Hour)
	s := newSource(t, c, is, 0)
	is.failNext(errors.New("e1"), errors.New("e2"), errors.New("e3"), errors.New("e4"))

	tm := c.next(t)
	c.set(t0.Add(2 * time.Hour))
	// Backoff doubles from MinBackoff and stops at MaxBackoff.
	for _, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second} {
		tm.fire <- c.Now()
		tm = c.next(t)
		require.Equal(t, want, tm.d)
		require.Equal(t, int64(1), serialOf(t, s), "the current certificate is kept")
	}
	// Recovery resets the schedule to the new certificate.
	tm.fire <- c.Now()
	tm = c.next(t)
	require.Equal(t, 2*time.Hour, tm.d)
	require.Equal(t, int64(2), serialOf(t, s))
}

func TestExpiredCertificateWaitsForRenewal(t *testing.T) {
	t.Parallel()
	c := newClock()
	is := newIssuer(t, c, time.Hour)
	s := newSource(t, c, is, 0)
	c.next(t) // the scheduled renewal, never fired

	c.set(t0.Add(2 * time.Hour)) // expired
	cert, err := s.Certificate(context.Background())
	require.NoError(t, err)
	require.Equal(t, int64(2), cert.Leaf.SerialNumber.Int64())
	require.True(t, c.Now().Before(cert.Leaf.NotAfter))
}

func TestExpiredCertificateAndFailingIssuer(t *testing.T) {
	t.Parallel()
	c := newClock()
	is := newIssuer(t, c, time.Hour)
	s := newSource(t, c, is, 0)
	c.next(t)
	boom := errors.New("agent down")
	is.failNext(boom)
	c.set(t0.Add(2 * time.Hour))
	_, err := s.Certificate(context.Background())
	require.ErrorIs(t, err, boom)
	require.Equal(t, 2, is.callCount())
}

func TestExpiredCertificateContextEnds(t *testing.T) {
	t.Parallel()
	c := newClock()
	is := newIssuer(t, c, time.Hour)
	block := make(chan struct{})
	defer close(block)
	slow := func(ctx context.Context) (*tls.Certificate, error) {
		if is.callCount() == 0 {
			return is.fetch(ctx)
		}
		select {
		case <-block:
		case <-ctx.Done():
		}
		return nil, errors.New("never")
	}
	s, err := New(context.Background(), Options{Fetch: slow, Now: c.Now, NewTimer: c.NewTimer})
	require.NoError(t, err)
	defer s.Close()
	c.next(t)
	c.set(t0.Add(2 * time.Hour))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = s.Certificate(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestCloseStopsRenewal(t *testing.T) {
	t.Parallel()
	c := newClock()
	is := newIssuer(t, c, time.Hour)
	s := newSource(t, c, is, 0)
	c.next(t)
	s.Close()
	s.Close() // idempotent
	// Still served while valid.
	require.Equal(t, int64(1), serialOf(t, s))
	c.set(t0.Add(2 * time.Hour))
	_, err := s.Certificate(context.Background())
	require.ErrorIs(t, err, ErrClosed)
	require.Equal(t, 1, is.callCount())
}

func TestIssuerReturningExpiredCertificate(t *testing.T) {
	t.Parallel()
	c := newClock()
	is := newIssuer(t, c, -time.Minute)
	_, err := New(context.Background(), Options{Fetch: is.fetch, Now: c.Now, NewTimer: c.NewTimer})
	require.ErrorContains(t, err, "already expired")
}

func TestStatic(t *testing.T) {
	t.Parallel()
	cert := &tls.Certificate{}
	s := Static(cert)
	got, err := s.Certificate(context.Background())
	require.NoError(t, err)
	assert.Same(t, cert, got)
	s.Close()
}

func TestRenewalTime(t *testing.T) {
	t.Parallel()
	leaf := &x509.Certificate{NotBefore: t0, NotAfter: t0.Add(90 * time.Minute)}
	assert.Equal(t, t0.Add(time.Hour), renewalTime(leaf, t0, 0))
	assert.Equal(t, t0.Add(time.Hour), renewalTime(leaf, t0, 2*time.Hour))
	assert.Equal(t, t0.Add(10*time.Minute), renewalTime(leaf, t0, 10*time.Minute))
	// NotBefore in the future (skewed issuer clock) counts from now.
	skewed := &x509.Certificate{NotBefore: t0.Add(time.Hour), NotAfter: t0.Add(3 * time.Hour)}
	assert.Equal(t, t0.Add(2*time.Hour), renewalTime(skewed, t0, 0))
}
