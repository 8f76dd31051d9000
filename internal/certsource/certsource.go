// Package certsource holds the certificate a TLS endpoint presents and
// renews it in the background before it expires, so that handshakes never
// wait for the issuer (the dstack guest agent) except when the current
// certificate has already expired.
package certsource

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// ErrClosed is returned when the certificate has expired and the Source,
// being closed, will not renew it.
var ErrClosed = errors.New("certsource: closed")

// Defaults for Options.
const (
	DefaultMinBackoff = time.Second
	DefaultMaxBackoff = time.Minute
)

// Options configures a Source.
type Options struct {
	// Fetch obtains a new certificate. It is called with a context that
	// ends when the Source is closed; it must bound its own I/O.
	Fetch func(ctx context.Context) (*tls.Certificate, error)
	// MaxAge renews a certificate once it is this old, even if it is still
	// valid. Zero: renew at two thirds of the certificate's lifetime only.
	MaxAge time.Duration
	// MinBackoff is the first retry delay after a failed renewal, doubling
	// up to MaxBackoff. It is also the shortest time between two
	// renewals, so that an issuer handing out nearly expired certificates
	// is not called in a tight loop. Zero: the defaults.
	MinBackoff, MaxBackoff time.Duration
	// Now is the clock. Nil: time.Now.
	Now func() time.Time
	// Logger receives renewal failures. Nil: slog.Default().
	Logger *slog.Logger
	// NewTimer lets tests replace real timers. Nil: time.NewTimer.
	NewTimer func(time.Duration) (c <-chan time.Time, stop func() bool)
}

// Source serves a certificate and keeps it fresh. It is safe for concurrent
// use.
type Source struct {
	opts Options
	cur  atomic.Pointer[current]

	// kick asks the renewal loop for an immediate attempt (a handshake is
	// waiting on an expired certificate).
	kick   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}

	mu sync.Mutex
	// attempted is closed, and replaced, after every renewal attempt;
	// lastErr is that attempt's error.
	attempted chan struct{}
	lastErr   error
	closed    bool
}

type current struct {
	cert     *tls.Certificate
	notAfter time.Time
	renewAt  time.Time
}

// Static returns a Source that always serves cert and never renews it.
func Static(cert *tls.Certificate) *Source {
	s := &Source{}
	s.cur.Store(&current{cert: cert})
	return s
}

// New fetches the first certificate with ctx and starts renewing it.
func New(ctx context.Context, opts Options) (*Source, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = DefaultMinBackoff
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(DefaultMaxBackoff, opts.MinBackoff)
	}
	if opts.NewTimer == nil {
		opts.NewTimer = func(d time.Duration) (<-chan time.Time, func() bool) {
			t := time.NewTimer(d)
			return t.C, t.Stop
		}
	}
	s := &Source{
		opts:      opts,
		kick:      make(chan struct{}, 1),
		done:      make(chan struct{}),
		attempted: make(chan struct{}),
	}
	cur, err := s.fetch(ctx)
	if err != nil {
		return nil, err
	}
	s.cur.Store(cur)
	loopCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	go s.loop(loopCtx)
	return s, nil
}

// Certificate returns the current certificate. It only blocks when the
// certificate has expired: it then asks for an immediate renewal and waits
// for that attempt, or for ctx to end.
func (s *Source) Certificate(ctx context.Context) (*tls.Certificate, error) {
	cur := s.cur.Load()
	if s.opts.Fetch == nil || s.opts.Now().Before(cur.notAfter) {
		return cur.cert, nil
	}
	s.mu.Lock()
	attempted, closed := s.attempted, s.closed
	s.mu.Unlock()
	// A renewal may have landed between the two loads.
	if cur := s.cur.Load(); s.opts.Now().Before(cur.notAfter) {
		return cur.cert, nil
	}
	if closed {
		return nil, fmt.Errorf("%w: certificate expired at %s", ErrClosed, cur.notAfter.UTC().Format(time.RFC3339))
	}
	select {
	case s.kick <- struct{}{}:
	default: // an attempt is already requested
	}
	select {
	case <-attempted:
	case <-ctx.Done():
		return nil, fmt.Errorf("certsource: certificate expired at %s, renewal not done: %w",
			cur.notAfter.UTC().Format(time.RFC3339), ctx.Err())
	}
	if cur := s.cur.Load(); s.opts.Now().Before(cur.notAfter) {
		return cur.cert, nil
	}
	s.mu.Lock()
	err := s.lastErr
	s.mu.Unlock()
	if err == nil {
		err = ErrClosed
	}
	return nil, fmt.Errorf("certsource: certificate expired at %s and renewal failed: %w",
		cur.notAfter.UTC().Format(time.RFC3339), err)
}

// Close stops renewal and waits for the renewal goroutine to exit. The
// current certificate is still served until it expires.
func (s *Source) Close() {
	if s.cancel == nil {
		return
	}
	s.mu.Lock()
	already := s.closed
	s.closed = true
	s.mu.Unlock()
	if !already {
		s.cancel()
	}
	<-s.done
}

func (s *Source) loop(ctx context.Context) {
	defer close(s.done)
	defer s.finishAttempts()
	backoff := time.Duration(0) // non-zero while renewals are failing
	for {
		cur := s.cur.Load()
		wait := max(cur.renewAt.Sub(s.opts.Now()), s.opts.MinBackoff)
		if backoff > 0 {
			wait = backoff
		}
		c, stop := s.opts.NewTimer(wait)
		select {
		case <-ctx.Done():
			stop()
			return
		case <-c:
		case <-s.kick:
			stop()
		}
		next, err := s.fetch(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			backoff = min(max(2*backoff, s.opts.MinBackoff), s.opts.MaxBackoff)
			s.opts.Logger.Warn("ratls: certificate renewal failed; keeping the current certificate until it expires",
				"err", err, "expires", cur.notAfter, "retry_in", backoff)
		} else {
			backoff = 0
			s.cur.Store(next)
			s.opts.Logger.Debug("ratls: certificate renewed", "expires", next.notAfter, "renew_at", next.renewAt)
		}
		s.mu.Lock()
		// Waiters that kicked before this point are woken by this attempt;
		// a stale kick must not cause another one.
		select {
		case <-s.kick:
		default:
		}
		s.lastErr = err
		close(s.attempted)
		s.attempted = make(chan struct{})
		s.mu.Unlock()
	}
}

// finishAttempts releases handshakes waiting for an attempt that will not
// happen because the Source is closing.
func (s *Source) finishAttempts() {
	s.mu.Lock()
	s.lastErr = ErrClosed
	close(s.attempted)
	s.attempted = make(chan struct{})
	s.mu.Unlock()
}

func (s *Source) fetch(ctx context.Context) (*current, error) {
	cert, err := s.opts.Fetch(ctx)
	if err != nil {
		return nil, err
	}
	if cert == nil || len(cert.Certificate) == 0 {
		return nil, errors.New("certsource: issuer returned no certificate")
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("certsource: issued certificate: %w", err)
		}
		// Copy rather than mutate the issuer's value.
		c := *cert
		c.Leaf = leaf
		cert = &c
	}
	now := s.opts.Now()
	if !now.Before(leaf.NotAfter) {
		return nil, fmt.Errorf("certsource: issued certificate already expired at %s", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return &current{cert: cert, notAfter: leaf.NotAfter, renewAt: renewalTime(leaf, now, s.opts.MaxAge)}, nil
}

// renewalTime is two thirds into the certificate's lifetime, or maxAge after
// it was obtained if that is sooner: early enough that a renewal failing
// for a while (agent restarting) is retried long before expiry.
func renewalTime(leaf *x509.Certificate, obtained time.Time, maxAge time.Duration) time.Time {
	start := leaf.NotBefore
	if start.After(obtained) {
		start = obtained // a future NotBefore (clock skew) must not delay renewal
	}
	at := start.Add(leaf.NotAfter.Sub(start) * 2 / 3)
	if maxAge > 0 {
		if byAge := obtained.Add(maxAge); byAge.Before(at) {
			at = byAge
		}
	}
	return at
}
