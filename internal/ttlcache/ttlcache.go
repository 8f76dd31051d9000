// Package ttlcache is a small, size-bounded map whose entries expire at a
// time given when they are stored. It holds verification results: a bound on
// its size keeps a client that talks to many servers (or is fed many
// certificates by an attacker) from growing without limit.
package ttlcache

import (
	"container/list"
	"sync"
	"time"
)

// Cache maps keys to values until each value's expiry. When full, storing a
// new key first drops expired entries, then the least recently used one. It
// is safe for concurrent use.
type Cache[K comparable, V any] struct {
	mu      sync.Mutex
	max     int
	entries map[K]*list.Element
	lru     list.List // of *entry[K, V]; front is most recently used
}

type entry[K comparable, V any] struct {
	key     K
	val     V
	expires time.Time
}

// New returns a cache holding at most size entries (at least 1).
func New[K comparable, V any](size int) *Cache[K, V] {
	return &Cache[K, V]{max: max(size, 1), entries: make(map[K]*list.Element)}
}

// Get returns the value for key if it has not expired at now.
func (c *Cache[K, V]) Get(key K, now time.Time) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[key]
	if !ok {
		var zero V
		return zero, false
	}
	e := el.Value.(*entry[K, V])
	if !now.Before(e.expires) {
		c.remove(el)
		var zero V
		return zero, false
	}
	c.lru.MoveToFront(el)
	return e.val, true
}

// Put stores val for key until expires. An entry already expired at now is
// not stored.
func (c *Cache[K, V]) Put(key K, val V, expires, now time.Time) {
	if !now.Before(expires) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[key]; ok {
		e := el.Value.(*entry[K, V])
		e.val, e.expires = val, expires
		c.lru.MoveToFront(el)
		return
	}
	if len(c.entries) >= c.max {
		c.evict(now)
	}
	c.entries[key] = c.lru.PushFront(&entry[K, V]{key: key, val: val, expires: expires})
}

// Len returns the number of entries, expired or not.
func (c *Cache[K, V]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// evict makes room for one entry. The sweep for expired entries is linear,
// but it only runs when the cache is full.
func (c *Cache[K, V]) evict(now time.Time) {
	for el := c.lru.Front(); el != nil; {
		next := el.Next()
		if !now.Before(el.Value.(*entry[K, V]).expires) {
			c.remove(el)
		}
		el = next
	}
	for len(c.entries) >= c.max {
		c.remove(c.lru.Back())
	}
}

func (c *Cache[K, V]) remove(el *list.Element) {
	delete(c.entries, el.Value.(*entry[K, V]).key)
	c.lru.Remove(el)
}
