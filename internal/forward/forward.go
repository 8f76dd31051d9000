// Package forward relays byte streams between accepted connections and an
// upstream: the data path of the RA-TLS sidecar (TLS in, plain TCP out) and
// of the client-side proxy (plain TCP in, RA-TLS out).
//
// A Proxy authenticates each accepted connection (Handshake) before it dials
// the upstream, so a peer that fails the handshake never causes an upstream
// connection and never has a byte relayed. Half-closes are propagated in
// both directions, every connection is tracked, and Close returns only once
// every goroutine the Proxy started has ended.
package forward

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// ErrClosed is returned by Serve after Close or Shutdown.
var ErrClosed = errors.New("forward: proxy closed")

// DefaultHandshakeTimeout bounds Handshake and Dial when
// Proxy.HandshakeTimeout is zero.
const DefaultHandshakeTimeout = 10 * time.Second

// Proxy accepts connections and relays each one to a fresh upstream
// connection. Set its fields before the first call to Serve and do not change
// them afterwards. A Proxy is safe for concurrent use; it must not be copied
// after first use.
type Proxy struct {
	// Dial connects to the upstream for one accepted connection. Required.
	// ctx carries the handshake deadline and ends when the Proxy closes.
	Dial func(ctx context.Context) (net.Conn, error)
	// Handshake, if set, runs on each accepted connection before the
	// upstream is dialed (typically a TLS server handshake) and returns the
	// connection to relay. An error drops the connection: nothing is read
	// from it past the handshake and the upstream is never dialed.
	Handshake func(ctx context.Context, c net.Conn) (net.Conn, error)
	// HandshakeTimeout bounds Handshake and Dial together. Zero:
	// DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// IdleTimeout closes a relay in which neither side has sent anything
	// for this long. Zero: no limit (database sessions may idle for hours).
	IdleTimeout time.Duration
	// Logger receives connection events: handshake failures at Info,
	// relay starts and ends at Debug. Nil: slog.Default().
	Logger *slog.Logger

	initOnce sync.Once
	ctx      context.Context // ends on Close: handshakes and dials stop
	cancel   context.CancelFunc
	stopped  chan struct{} // closed once the Proxy stops accepting

	mu        sync.Mutex
	closed    bool
	listeners map[net.Listener]struct{}
	conns     map[net.Conn]struct{}
	wg        sync.WaitGroup

	accepted, rejected, relayed, active atomic.Int64
	fromClients, toClients              atomic.Int64
}

// Stats counts what a Proxy has done since it was created.
type Stats struct {
	// Accepted is the number of connections accepted.
	Accepted int64
	// Rejected is the number of connections dropped because Handshake or
	// Dial failed.
	Rejected int64
	// Relayed is the number of connections that reached the relay stage
	// (handshake done, upstream connected).
	Relayed int64
	// Active is the number of connections currently open (any stage).
	Active int64
	// BytesFromClients counts bytes read from accepted connections after
	// their handshake: application data, never handshake bytes.
	BytesFromClients int64
	// BytesToClients counts bytes written back to accepted connections.
	BytesToClients int64
}

// Stats returns a snapshot of p's counters.
func (p *Proxy) Stats() Stats {
	return Stats{
		Accepted:         p.accepted.Load(),
		Rejected:         p.rejected.Load(),
		Relayed:          p.relayed.Load(),
		Active:           p.active.Load(),
		BytesFromClients: p.fromClients.Load(),
		BytesToClients:   p.toClients.Load(),
	}
}

func (p *Proxy) init() {
	p.initOnce.Do(func() {
		p.ctx, p.cancel = context.WithCancel(context.Background())
		p.stopped = make(chan struct{})
		p.listeners = make(map[net.Listener]struct{})
		p.conns = make(map[net.Conn]struct{})
	})
}

func (p *Proxy) logger() *slog.Logger {
	if p.Logger != nil {
		return p.Logger
	}
	return slog.Default()
}

// Serve accepts connections on ln and relays each until ln fails or the
// Proxy is closed. It always closes ln. After Close or Shutdown it returns
// ErrClosed.
func (p *Proxy) Serve(ln net.Listener) error {
	p.init()
	if p.Dial == nil {
		ln.Close()
		return errors.New("forward: Proxy.Dial is nil")
	}
	if !add(p, p.listeners, ln) {
		ln.Close()
		return ErrClosed
	}
	defer remove(p, p.listeners, ln)
	defer ln.Close()

	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if p.isClosed() {
				return ErrClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Transient failures (EMFILE, ECONNABORTED) must not end the
			// service: back off and retry, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			p.logger().Warn("forward: accept failed; retrying", "addr", ln.Addr().String(), "err", err, "backoff", backoff)
			select {
			case <-time.After(backoff):
			case <-p.stopped:
				return ErrClosed
			}
			continue
		}
		backoff = 0
		p.accepted.Add(1)
		if !p.startConn(c) {
			c.Close()
			return ErrClosed
		}
		p.active.Add(1)
		go func() {
			defer p.wg.Done()
			defer p.active.Add(-1)
			defer remove(p, p.conns, c)
			defer c.Close()
			p.handle(c)
		}()
	}
}

// add registers x in set unless the Proxy is closed. Registration and the
// closed check share p.mu so that Close never misses a connection.
func add[T comparable](p *Proxy, set map[T]struct{}, x T) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	set[x] = struct{}{}
	return true
}

// startConn registers an accepted connection and counts its goroutine in
// p.wg under p.mu, so that a concurrent Close either sees it or prevents it.
func (p *Proxy) startConn(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	p.wg.Add(1)
	return true
}

func remove[T comparable](p *Proxy, set map[T]struct{}, x T) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(set, x)
}

func (p *Proxy) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// handle authenticates c, dials the upstream and relays until both
// directions end.
func (p *Proxy) handle(raw net.Conn) {
	log := p.logger().With("remote", raw.RemoteAddr().String())
	timeout := p.HandshakeTimeout
	if timeout <= 0 {
		timeout = DefaultHandshakeTimeout
	}
	// Derived from p.ctx: Close ends handshakes and dials; Shutdown lets
	// them finish.
	ctx, cancel := context.WithTimeout(p.ctx, timeout)
	defer cancel()

	client := raw
	if p.Handshake != nil {
		// The deadline backs up ctx for Handshake functions that ignore it.
		raw.SetDeadline(time.Now().Add(timeout))
		c, err := p.Handshake(ctx, raw)
		if err != nil {
			p.rejected.Add(1)
			log.Info("forward: handshake failed; connection dropped", "err", err)
			return
		}
		raw.SetDeadline(time.Time{})
		client = c
	}
	upstream, err := p.Dial(ctx)
	if err != nil {
		p.rejected.Add(1)
		log.Warn("forward: upstream dial failed; connection dropped", "err", err)
		return
	}
	cancel()
	if !add(p, p.conns, upstream) {
		upstream.Close()
		return
	}
	defer remove(p, p.conns, upstream)
	defer upstream.Close()
	defer client.Close()

	p.relayed.Add(1)
	log.Debug("forward: relaying", "upstream", upstream.RemoteAddr().String())
	up, down, err := p.relay(client, upstream)
	log.Debug("forward: relay ended", "bytes_from_client", up, "bytes_to_client", down, "err", err)
}

// relay copies both ways. Each direction ends on EOF (then the other
// side's write half is closed, so the peer sees EOF and can finish) or on an
// error (then both connections are closed, ending the other direction too).
func (p *Proxy) relay(client, upstream net.Conn) (up, down int64, err error) {
	errc := make(chan error, 2)
	var upN, downN atomic.Int64
	var lastActive atomic.Int64 // unix nanoseconds of the last byte either way
	lastActive.Store(time.Now().UnixNano())
	go func() {
		errc <- p.copy(upstream, client, &p.fromClients, &upN, &lastActive)
	}()
	go func() {
		errc <- p.copy(client, upstream, &p.toClients, &downN, &lastActive)
	}()
	var first error
	for range 2 {
		if e := <-errc; e != nil && first == nil {
			first = e
			client.Close()
			upstream.Close()
		}
	}
	return upN.Load(), downN.Load(), first
}

// copy copies src to dst, then half-closes dst. It counts bytes read from
// src into both counters as they arrive, so that a test can see bytes that
// reached the proxy even if the upstream never read them. With an
// IdleTimeout, a read that times out ends the copy only if no byte moved in
// either direction meanwhile: a one-way stream is not idle.
func (p *Proxy) copy(dst, src net.Conn, total, conn, lastActive *atomic.Int64) error {
	buf := make([]byte, 32<<10)
	for {
		if p.IdleTimeout > 0 {
			src.SetReadDeadline(time.Now().Add(p.IdleTimeout))
		}
		n, rerr := src.Read(buf)
		if n > 0 {
			lastActive.Store(time.Now().UnixNano())
			total.Add(int64(n))
			conn.Add(int64(n))
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return fmt.Errorf("forward: write: %w", werr)
			}
		}
		if rerr == io.EOF {
			return closeWrite(dst)
		}
		if rerr != nil && p.IdleTimeout > 0 && errors.Is(rerr, os.ErrDeadlineExceeded) &&
			time.Since(time.Unix(0, lastActive.Load())) < p.IdleTimeout {
			continue
		}
		if rerr != nil {
			return fmt.Errorf("forward: read: %w", rerr)
		}
	}
}

// closeWrite signals EOF to dst's peer while keeping the read half open.
func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		if err := cw.CloseWrite(); err != nil {
			return fmt.Errorf("forward: half-close: %w", err)
		}
		return nil
	}
	// No half-close: closing entirely is the only way to pass the EOF on.
	return c.Close()
}

// Shutdown stops accepting, then waits for connections in progress to end
// by themselves: handshakes finish (within HandshakeTimeout) and relays run
// until both sides are done. If ctx ends first, it closes them (as Close
// does) and returns ctx's error.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.stopAccepting()
	done := make(chan struct{})
	go func() {
		p.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		p.closeConns()
		<-done
		return ctx.Err()
	}
}

// Close closes the listeners and every connection, ending handshakes and
// dials in progress, and waits for every goroutine the Proxy started.
func (p *Proxy) Close() error {
	p.stopAccepting()
	p.closeConns()
	p.wg.Wait()
	return nil
}

func (p *Proxy) stopAccepting() {
	p.init()
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed {
		close(p.stopped)
	}
	p.closed = true
	for ln := range p.listeners {
		ln.Close()
	}
}

// closeConns ends everything in progress: handshakes and dials through
// p.ctx, relays by closing their connections.
func (p *Proxy) closeConns() {
	p.cancel()
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}
