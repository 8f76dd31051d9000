package forward

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echo is an upstream that echoes everything and closes its write half on
// EOF, counting the connections it accepted.
type echo struct {
	ln    net.Listener
	wg    sync.WaitGroup
	conns atomic.Int64
}

func newEcho(t *testing.T) *echo {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	e := &echo{ln: ln}
	e.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.conns.Add(1)
			e.wg.Go(func() {
				defer c.Close()
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		e.wg.Wait()
	})
	return e
}

func startProxy(t *testing.T, p *Proxy) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- p.Serve(ln) }()
	t.Cleanup(func() {
		require.NoError(t, p.Close())
		require.ErrorIs(t, <-served, ErrClosed)
	})
	return ln.Addr().String()
}

func dialer(addr string) func(ctx context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
}

func TestRelayAndHalfClose(t *testing.T) {
	t.Parallel()
	up := newEcho(t)
	p := &Proxy{Dial: dialer(up.ln.Addr().String())}
	addr := startProxy(t, p)

	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	msg := []byte("hello through the proxy")
	_, err = c.Write(msg)
	require.NoError(t, err)
	// Half-close: the upstream sees EOF only if the proxy propagates it,
	// and the echo must still flow back afterwards.
	require.NoError(t, c.(*net.TCPConn).CloseWrite())
	got, err := io.ReadAll(c)
	require.NoError(t, err)
	assert.Equal(t, msg, got)

	require.NoError(t, p.Shutdown(context.Background()))
	s := p.Stats()
	assert.EqualValues(t, 1, s.Accepted)
	assert.EqualValues(t, 1, s.Relayed)
	assert.EqualValues(t, 0, s.Rejected)
	assert.EqualValues(t, 0, s.Active)
	assert.EqualValues(t, len(msg), s.BytesFromClients)
	assert.EqualValues(t, len(msg), s.BytesToClients)
}

func TestRejectedHandshakeNeverDials(t *testing.T) {
	t.Parallel()
	up := newEcho(t)
	var dials atomic.Int64
	p := &Proxy{
		Dial: func(ctx context.Context) (net.Conn, error) {
			dials.Add(1)
			return dialer(up.ln.Addr().String())(ctx)
		},
		Handshake: func(ctx context.Context, c net.Conn) (net.Conn, error) {
			// Read the "credentials" and refuse them.
			buf := make([]byte, 4)
			if _, err := io.ReadFull(c, buf); err != nil {
				return nil, err
			}
			return nil, errors.New("bad credentials")
		},
	}
	addr := startProxy(t, p)
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Write([]byte("nopeand some application data"))
	require.NoError(t, err)
	// The proxy hangs up (with a reset, since it left data unread).
	_, _ = io.ReadAll(c)

	require.NoError(t, p.Close())
	s := p.Stats()
	assert.EqualValues(t, 1, s.Rejected)
	assert.EqualValues(t, 0, s.Relayed)
	assert.EqualValues(t, 0, s.BytesFromClients)
	assert.EqualValues(t, 0, dials.Load())
	assert.EqualValues(t, 0, up.conns.Load())
}

func TestHandshakeTimeout(t *testing.T) {
	t.Parallel()
	p := &Proxy{
		Dial:             func(context.Context) (net.Conn, error) { return nil, errors.New("unreachable") },
		HandshakeTimeout: 50 * time.Millisecond,
		Handshake: func(ctx context.Context, c net.Conn) (net.Conn, error) {
			// Ignores ctx: only the connection deadline can end this.
			_, err := c.Read(make([]byte, 1))
			return nil, err
		},
	}
	addr := startProxy(t, p)
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	_, err = io.ReadAll(c) // silent client: the proxy gives up and hangs up
	require.NoError(t, err)
	require.NoError(t, p.Close())
	assert.EqualValues(t, 1, p.Stats().Rejected)
}

func TestDialFailure(t *testing.T) {
	t.Parallel()
	p := &Proxy{Dial: func(context.Context) (net.Conn, error) { return nil, errors.New("upstream down") }}
	addr := startProxy(t, p)
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	_, err = io.ReadAll(c)
	require.NoError(t, err)
	require.NoError(t, p.Close())
	assert.EqualValues(t, 1, p.Stats().Rejected)
}

func TestCloseEndsActiveRelays(t *testing.T) {
	t.Parallel()
	up := newEcho(t)
	p := &Proxy{Dial: dialer(up.ln.Addr().String())}
	addr := startProxy(t, p)
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Write([]byte("x"))
	require.NoError(t, err)
	_, err = io.ReadFull(c, make([]byte, 1))
	require.NoError(t, err)

	require.NoError(t, p.Close()) // must not wait for the idle client
	assert.EqualValues(t, 0, p.Stats().Active)
	_, err = io.ReadAll(c)
	require.NoError(t, err)
	// A closed proxy refuses to serve again.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	require.ErrorIs(t, p.Serve(ln), ErrClosed)
}

func TestShutdownDeadline(t *testing.T) {
	t.Parallel()
	up := newEcho(t)
	p := &Proxy{Dial: dialer(up.ln.Addr().String())}
	addr := startProxy(t, p)
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Write([]byte("x"))
	require.NoError(t, err)
	_, err = io.ReadFull(c, make([]byte, 1))
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, p.Shutdown(ctx), context.DeadlineExceeded)
	assert.EqualValues(t, 0, p.Stats().Active)
}

func TestIdleTimeout(t *testing.T) {
	t.Parallel()
	up := newEcho(t)
	p := &Proxy{Dial: dialer(up.ln.Addr().String()), IdleTimeout: 30 * time.Millisecond}
	addr := startProxy(t, p)
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Write([]byte("x"))
	require.NoError(t, err)
	// The proxy closes the silent relay; the client sees the echo, then EOF.
	got, err := io.ReadAll(c)
	require.NoError(t, err)
	assert.Equal(t, []byte("x"), got)
}

func TestServeRequiresDial(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var p Proxy
	require.Error(t, p.Serve(ln))
	require.NoError(t, p.Close())
}

// TestIdleTimeoutSparesOneWayStreams: a relay where only the upstream
// talks is not idle, even though the client's direction is silent for
// longer than IdleTimeout.
func TestIdleTimeoutSparesOneWayStreams(t *testing.T) {
	if testing.Short() {
		t.Skip("takes seconds of real time")
	}
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	// 50 ticks of 50ms outlast IdleTimeout twice over, and a tick would
	// have to stall 20 times over to look idle (the machine may be loaded).
	const ticks = 50
	var wg sync.WaitGroup
	wg.Go(func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		for range ticks {
			if _, err := c.Write([]byte{'.'}); err != nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	p := &Proxy{Dial: dialer(ln.Addr().String()), IdleTimeout: time.Second}
	addr := startProxy(t, p)
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	got, err := io.ReadAll(c)
	require.NoError(t, err)
	assert.Len(t, got, ticks)
}
