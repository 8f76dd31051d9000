package ttlcache

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var t0 = time.Date(2025, 6, 25, 0, 0, 0, 0, time.UTC)

func TestGetPut(t *testing.T) {
	t.Parallel()
	c := New[string, int](4)
	_, ok := c.Get("a", t0)
	require.False(t, ok)

	c.Put("a", 1, t0.Add(time.Minute), t0)
	v, ok := c.Get("a", t0.Add(59*time.Second))
	require.True(t, ok)
	require.Equal(t, 1, v)

	// Expiry is exclusive and removes the entry.
	_, ok = c.Get("a", t0.Add(time.Minute))
	require.False(t, ok)
	require.Equal(t, 0, c.Len())
}

func TestPutExpiredIsIgnored(t *testing.T) {
	t.Parallel()
	c := New[string, int](4)
	c.Put("a", 1, t0, t0)
	c.Put("b", 1, t0.Add(-time.Second), t0)
	require.Equal(t, 0, c.Len())
}

func TestPutReplaces(t *testing.T) {
	t.Parallel()
	c := New[string, int](4)
	c.Put("a", 1, t0.Add(time.Second), t0)
	c.Put("a", 2, t0.Add(time.Hour), t0)
	v, ok := c.Get("a", t0.Add(time.Minute))
	require.True(t, ok)
	require.Equal(t, 2, v)
	require.Equal(t, 1, c.Len())
}

func TestEvictsExpiredFirstThenLeastRecentlyUsed(t *testing.T) {
	t.Parallel()
	c := New[string, int](3)
	c.Put("short", 1, t0.Add(time.Second), t0)
	c.Put("x", 2, t0.Add(time.Hour), t0)
	c.Put("y", 3, t0.Add(time.Hour), t0)

	now := t0.Add(time.Minute) // "short" has expired
	c.Put("z", 4, t0.Add(time.Hour), now)
	for _, k := range []string{"x", "y", "z"} {
		_, ok := c.Get(k, now)
		assert.True(t, ok, k)
	}

	// Full of live entries: "x" is the least recently used after the Gets
	// above touched x, y, z in that order.
	c.Put("w", 5, t0.Add(time.Hour), now)
	require.Equal(t, 3, c.Len())
	_, ok := c.Get("x", now)
	require.False(t, ok)
	for _, k := range []string{"y", "z", "w"} {
		_, ok := c.Get(k, now)
		assert.True(t, ok, k)
	}
}

func TestMinimumSize(t *testing.T) {
	t.Parallel()
	c := New[int, int](0)
	c.Put(1, 1, t0.Add(time.Hour), t0)
	c.Put(2, 2, t0.Add(time.Hour), t0)
	require.Equal(t, 1, c.Len())
	_, ok := c.Get(2, t0)
	require.True(t, ok)
}
