// Package flight merges concurrent calls for the same key into one, so that
// a burst of handshakes to one server verifies its quote once.
//
// Unlike golang.org/x/sync/singleflight, a caller can stop waiting when its
// own context ends, and a result that failed only because the caller running
// it was cancelled is not handed to the others: they run the call again.
package flight

import (
	"context"
	"sync"
)

// Group runs at most one call per key at a time. The zero Group is ready to
// use; a Group must not be copied after first use.
type Group[K comparable, V any] struct {
	mu    sync.Mutex
	calls map[K]*call[V]
}

type call[V any] struct {
	done    chan struct{}
	waiters int // callers parked on done
	val     V
	err     error
	// abandoned: the call failed while its runner's context was done, so
	// the error says nothing about the key and waiters must retry.
	abandoned bool
}

// Do runs fn for key unless a call for key is already running, in which case
// it waits for that call's result. fn receives the context of the caller
// that runs it. Do returns early with ctx.Err() if ctx ends while waiting.
// shared reports whether the result came from another caller's run.
func (g *Group[K, V]) Do(ctx context.Context, key K, fn func(context.Context) (V, error)) (v V, err error, shared bool) {
	for {
		g.mu.Lock()
		if c, ok := g.calls[key]; ok {
			c.waiters++
			g.mu.Unlock()
			select {
			case <-c.done:
				if c.abandoned {
					continue
				}
				return c.val, c.err, true
			case <-ctx.Done():
				var zero V
				return zero, ctx.Err(), false
			}
		}
		if g.calls == nil {
			g.calls = make(map[K]*call[V])
		}
		c := &call[V]{done: make(chan struct{})}
		g.calls[key] = c
		g.mu.Unlock()

		g.run(ctx, key, c, fn)
		return c.val, c.err, false
	}
}

// Waiters returns how many callers are waiting on the running call for key
// (zero if none is running). Tests use it to know a burst has merged.
func (g *Group[K, V]) Waiters(key K) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if c := g.calls[key]; c != nil {
		return c.waiters
	}
	return 0
}

func (g *Group[K, V]) run(ctx context.Context, key K, c *call[V], fn func(context.Context) (V, error)) {
	// The deferred cleanup also runs if fn panics, so that waiters are not
	// stuck; they then retry as if the call had been abandoned.
	c.abandoned = true
	defer func() {
		g.mu.Lock()
		delete(g.calls, key)
		g.mu.Unlock()
		close(c.done)
	}()
	c.val, c.err = fn(ctx)
	c.abandoned = c.err != nil && ctx.Err() != nil
}
