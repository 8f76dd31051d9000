package flight

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDoMergesConcurrentCalls(t *testing.T) {
	t.Parallel()
	var g Group[string, int]
	var calls atomic.Int32
	release := make(chan struct{})
	started := make(chan struct{})
	fn := func(context.Context) (int, error) {
		calls.Add(1)
		close(started) // a second run would panic here
		<-release
		return 42, nil
	}

	const n = 8
	var wg sync.WaitGroup
	results := make([]int, n)
	shared := make([]bool, n)
	wg.Add(1)
	go func() {
		defer wg.Done()
		v, err, sh := g.Do(context.Background(), "k", fn)
		assert.NoError(t, err)
		results[0], shared[0] = v, sh
	}()
	<-started
	for i := 1; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err, sh := g.Do(context.Background(), "k", fn)
			assert.NoError(t, err)
			results[i], shared[i] = v, sh
		}()
	}
	// Release the call only once every other caller is parked on it.
	for g.Waiters("k") < n-1 {
		runtime.Gosched()
	}
	close(release)
	wg.Wait()
	assert.Equal(t, int32(1), calls.Load())
	for i := range n {
		assert.Equal(t, 42, results[i])
		assert.Equal(t, i != 0, shared[i])
	}
}

func TestDoWaiterContextEnds(t *testing.T) {
	t.Parallel()
	var g Group[string, int]
	release := make(chan struct{})
	started := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _, _ = g.Do(context.Background(), "k", func(context.Context) (int, error) {
			close(started)
			<-release
			return 1, nil
		})
	}()
	<-started
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err, _ := g.Do(ctx, "k", func(context.Context) (int, error) { return 2, nil })
	require.ErrorIs(t, err, context.Canceled)
	close(release)
	<-done
}

func TestDoRetriesAbandonedCall(t *testing.T) {
	t.Parallel()
	var g Group[string, int]
	leaderCtx, cancelLeader := context.WithCancel(context.Background())
	started := make(chan struct{})
	leaderDone := make(chan error, 1)
	go func() {
		_, err, _ := g.Do(leaderCtx, "k", func(ctx context.Context) (int, error) {
			close(started)
			<-ctx.Done()
			return 0, ctx.Err()
		})
		leaderDone <- err
	}()
	<-started

	waiterDone := make(chan int, 1)
	go func() {
		v, err, _ := g.Do(context.Background(), "k", func(context.Context) (int, error) { return 7, nil })
		assert.NoError(t, err)
		waiterDone <- v
	}()
	cancelLeader()
	require.ErrorIs(t, <-leaderDone, context.Canceled)
	// Whether the waiter joined the abandoned call or arrived after it, it
	// must not inherit the leader's cancellation.
	require.Equal(t, 7, <-waiterDone)
}

func TestDoSharesErrors(t *testing.T) {
	t.Parallel()
	var g Group[int, int]
	boom := errors.New("boom")
	_, err, shared := g.Do(context.Background(), 1, func(context.Context) (int, error) { return 0, boom })
	require.ErrorIs(t, err, boom)
	require.False(t, shared)
	// Nothing is remembered once a call returns.
	v, err, _ := g.Do(context.Background(), 1, func(context.Context) (int, error) { return 3, nil })
	require.NoError(t, err)
	require.Equal(t, 3, v)
}

func TestDoPanicReleasesWaiters(t *testing.T) {
	t.Parallel()
	var g Group[int, int]
	func() {
		defer func() { require.NotNil(t, recover()) }()
		g.Do(context.Background(), 1, func(context.Context) (int, error) { panic("x") })
	}()
	v, err, _ := g.Do(context.Background(), 1, func(context.Context) (int, error) { return 5, nil })
	require.NoError(t, err)
	require.Equal(t, 5, v)
}
