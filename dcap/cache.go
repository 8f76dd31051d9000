package dcap

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Defaults of CacheOptions.
const (
	DefaultRefreshMargin = time.Hour
	DefaultMaxAge        = 24 * time.Hour
	DefaultRetryBackoff  = 10 * time.Second
)

// CacheOptions configures a Cache. The zero value is a memory-only cache
// with the defaults below and no stale-if-error grace.
type CacheOptions struct {
	// Dir, if set, persists collateral across restarts, one file per
	// source, root, FMSPC and CA type, written atomically (temporary file
	// and rename, mode 0600). A file is verified again (signatures, CRLs,
	// dates) when read, never trusted as is; a corrupted or tampered file is
	// logged, ignored and replaced by a fresh fetch.
	Dir string
	// RefreshMargin: once the verification time is within this margin of
	// the collateral's earliest nextUpdate, it is refreshed in the
	// background while still in use. Zero: 1 hour.
	RefreshMargin time.Duration
	// MaxAge: collateral fetched longer ago than this is refreshed in the
	// background even far from its nextUpdate, to pick up a TCB recovery
	// that Intel publishes early. Zero: 24 hours.
	MaxAge time.Duration
	// RetryBackoff: after a failed fetch, no fetch for the same FMSPC and
	// CA is tried again for this long; verifications that need it meanwhile
	// fail with the last error at once instead of hammering the source.
	// Zero: 10 seconds.
	RetryBackoff time.Duration
	// StaleIfError lets verification use collateral up to this long past
	// its nextUpdate when fetching fresh collateral fails. Zero (the
	// default): never. Danger: this trades security for availability;
	// during the grace a TCB downgrade, QE identity change or revocation
	// that Intel has published goes unseen, and an attacker who can block
	// the collateral source chooses when it applies. Keep it short (hours).
	// Verdict.ValidUntil reflects the grace.
	StaleIfError time.Duration
	// Logger: nil, slog.Default().
	Logger *slog.Logger
}

// Cache holds fetched and verified collateral keyed by collateral source,
// trusted root, FMSPC and PCK CA type. Collateral is parsed and its
// signatures and CRLs are verified once per fetch, not once per quote.
// Concurrent verifications that miss share one fetch. Share one Cache
// between Verifiers to fetch once per platform family; a Verifier with
// another root or source never sees collateral checked for a different one.
//
// The zero Cache is ready to use with default CacheOptions. A Cache is safe
// for concurrent use.
type Cache struct {
	opts    CacheOptions
	mu      sync.Mutex
	entries map[cacheKey]*cacheEntry
}

// NewCache returns a Cache configured by opts, creating opts.Dir (mode
// 0700) if needed.
func NewCache(opts CacheOptions) (*Cache, error) {
	if opts.RefreshMargin < 0 || opts.MaxAge < 0 || opts.RetryBackoff < 0 || opts.StaleIfError < 0 {
		return nil, fmt.Errorf("dcap: negative duration in CacheOptions")
	}
	if opts.Dir != "" {
		if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
			return nil, fmt.Errorf("dcap: cache directory: %w", err)
		}
	}
	return &Cache{opts: opts}, nil
}

type cacheKey struct {
	source string
	root   [32]byte
	fmspc  string
	ca     string
}

type cacheEntry struct {
	cc        *checkedCollateral
	fetchedAt time.Time
	flight    *flight // the fetch in progress, if any
	diskTried bool

	lastErr     error
	lastAttempt time.Time
}

// flight is one fetch shared by every verification that waits for it.
type flight struct {
	done chan struct{}
	cc   *checkedCollateral // set before done is closed
	err  error
}

// loader fetches collateral and verifies it against a Verifier's root.
type loader struct {
	fetch func(ctx context.Context) (*Collateral, error)
	check func(*Collateral) (*checkedCollateral, error)
}

func (c *Cache) logger() *slog.Logger {
	if c.opts.Logger != nil {
		return c.opts.Logger
	}
	return slog.Default()
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// get returns verified collateral for key valid at now, and the
// stale-if-error grace the caller must allow (zero unless the collateral is
// past its nextUpdate).
func (c *Cache) get(ctx context.Context, key cacheKey, now time.Time, l loader) (*checkedCollateral, time.Duration, error) {
	c.mu.Lock()
	if c.entries == nil {
		c.entries = make(map[cacheKey]*cacheEntry)
	}
	e := c.entries[key]
	if e == nil {
		e = &cacheEntry{}
		c.entries[key] = e
	}
	if cc := e.cc; cc != nil && cc.checkTime(now, 0) == nil {
		// Valid collateral never waits for the network: when it is due,
		// refresh it in the background and use it meanwhile.
		if !now.Before(c.refreshAt(e)) && e.flight == nil && !c.backingOff(e, now) {
			c.start(ctx, key, e, now, l)
		}
		c.mu.Unlock()
		return cc, 0, nil
	}
	f := e.flight
	if f == nil {
		if c.backingOff(e, now) {
			defer c.mu.Unlock()
			return c.fallback(key, e, now, e.lastErr)
		}
		f = c.start(ctx, key, e, now, l)
	}
	c.mu.Unlock()

	select {
	case <-f.done:
	case <-ctx.Done():
		return nil, 0, fmt.Errorf("%w: waiting for the collateral of FMSPC %s: %w", ErrFetch, key.fmspc, ctx.Err())
	}
	if f.err == nil {
		return f.cc, 0, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fallback(key, e, now, f.err)
}

// refreshAt is when e's collateral is due for a refresh.
func (c *Cache) refreshAt(e *cacheEntry) time.Time {
	t := e.cc.expires.Add(-orDefault(c.opts.RefreshMargin, DefaultRefreshMargin))
	if age := e.fetchedAt.Add(orDefault(c.opts.MaxAge, DefaultMaxAge)); age.Before(t) {
		t = age
	}
	return t
}

func (c *Cache) backingOff(e *cacheEntry, now time.Time) bool {
	return e.lastErr != nil && now.Before(e.lastAttempt.Add(orDefault(c.opts.RetryBackoff, DefaultRetryBackoff)))
}

// fallback decides what a verification gets when fetching failed with err:
// cached collateral that is still valid (for example loaded from disk), or
// expired collateral within the stale-if-error grace, or err.
func (c *Cache) fallback(key cacheKey, e *cacheEntry, now time.Time, err error) (*checkedCollateral, time.Duration, error) {
	cc := e.cc
	if cc == nil {
		return nil, 0, err
	}
	if cc.checkTime(now, 0) == nil {
		return cc, 0, nil
	}
	if g := c.opts.StaleIfError; g > 0 && cc.checkTime(now, g) == nil {
		c.logger().Warn("dcap: using expired collateral (stale-if-error)",
			"fmspc", key.fmspc, "ca", key.ca, "next_update", cc.expires, "grace_until", cc.expires.Add(g), "error", err)
		return cc, g, nil
	}
	return nil, 0, err
}

// start launches a fetch for e. c.mu must be held.
func (c *Cache) start(ctx context.Context, key cacheKey, e *cacheEntry, now time.Time, l loader) *flight {
	f := &flight{done: make(chan struct{})}
	e.flight = f
	e.lastAttempt = now
	loadDisk := c.opts.Dir != "" && !e.diskTried
	e.diskTried = true
	// Others wait for this fetch: the caller that happened to start it must
	// not cancel it for them. Each request stays bounded by FetchTimeout.
	go c.run(context.WithoutCancel(ctx), key, e, f, now, l, loadDisk)
	return f
}

func (c *Cache) run(ctx context.Context, key cacheKey, e *cacheEntry, f *flight, now time.Time, l loader, loadDisk bool) {
	var (
		cc        *checkedCollateral
		fetchedAt = now
		err       error
		disk      *checkedCollateral
		diskAt    time.Time
	)
	if loadDisk {
		disk, diskAt = c.load(key, l.check)
		if disk != nil && disk.checkTime(now, 0) == nil &&
			now.Before(c.refreshAt(&cacheEntry{cc: disk, fetchedAt: diskAt})) {
			cc, fetchedAt = disk, diskAt
		}
	}
	if cc == nil {
		var col *Collateral
		if col, err = l.fetch(ctx); err == nil {
			cc, err = l.check(col)
		}
		if err == nil {
			if err = cc.checkTime(now, 0); err == nil && c.opts.Dir != "" {
				c.save(key, col, now)
			}
		}
	}

	c.mu.Lock()
	haveValid := e.cc != nil && e.cc.checkTime(now, 0) == nil
	switch {
	case err == nil && (!haveValid || !cc.expires.Before(e.cc.expires)):
		e.cc, e.fetchedAt = cc, fetchedAt
	case err == nil:
		// The source has nothing newer than what is cached (a lagging
		// PCCS): keep the newer one, ask again when it is next due.
		e.fetchedAt = fetchedAt
	case !haveValid:
		// Nothing valid to serve: keep the latest verified collateral, for
		// stale-if-error and for a disk copy that is still valid.
		for _, cand := range []struct {
			cc *checkedCollateral
			at time.Time
		}{{cc, fetchedAt}, {disk, diskAt}} {
			if cand.cc != nil && (e.cc == nil || cand.cc.expires.After(e.cc.expires)) {
				e.cc, e.fetchedAt = cand.cc, cand.at
			}
		}
	}
	e.lastErr = err
	e.flight = nil
	c.mu.Unlock()

	if err != nil {
		c.logger().Warn("dcap: collateral fetch failed", "fmspc", key.fmspc, "ca", key.ca, "error", err)
	}
	f.cc, f.err = cc, err
	close(f.done)
}

// cacheFile is the on-disk form of a cache entry.
type cacheFile struct {
	Version    int         `json:"version"`
	Source     string      `json:"source"`
	RootSHA256 string      `json:"root_sha256"`
	FMSPC      string      `json:"fmspc"`
	CA         string      `json:"ca"`
	FetchedAt  time.Time   `json:"fetched_at"`
	Collateral *Collateral `json:"collateral"`
}

func (c *Cache) path(key cacheKey) string {
	h := sha256.Sum256([]byte(key.source + "\x00" + hex.EncodeToString(key.root[:]) + "\x00" + key.fmspc + "\x00" + key.ca))
	// fmspc is 12 hex digits and ca a fixed word, both checked before a
	// key is made, so they are safe in a file name.
	return filepath.Join(c.opts.Dir, fmt.Sprintf("tdx-%s-%s-%x.json", key.fmspc, key.ca, h[:8]))
}

// load reads and re-verifies the persisted collateral of key. A missing
// file is silent; an unreadable, corrupted or forged one is logged and
// ignored.
func (c *Cache) load(key cacheKey, check func(*Collateral) (*checkedCollateral, error)) (*checkedCollateral, time.Time) {
	p := c.path(key)
	fh, err := os.Open(p)
	if err != nil {
		if !os.IsNotExist(err) {
			c.logger().Warn("dcap: ignoring unreadable collateral cache file", "path", p, "error", err)
		}
		return nil, time.Time{}
	}
	defer fh.Close()
	b, err := io.ReadAll(io.LimitReader(fh, 4*maxResponseSize))
	if err == nil {
		var cf cacheFile
		if err = json.Unmarshal(b, &cf); err == nil {
			switch {
			case cf.Version != 1 || cf.Source != key.source || cf.RootSHA256 != hex.EncodeToString(key.root[:]) ||
				cf.FMSPC != key.fmspc || cf.CA != key.ca:
				err = fmt.Errorf("file is for another source, root, FMSPC or CA")
			case cf.Collateral == nil:
				err = fmt.Errorf("no collateral")
			default:
				var cc *checkedCollateral
				if cc, err = check(cf.Collateral); err == nil {
					return cc, cf.FetchedAt
				}
			}
		}
	}
	c.logger().Warn("dcap: ignoring corrupted collateral cache file; refetching", "path", p, "error", err)
	return nil, time.Time{}
}

// save writes the collateral of key atomically: readers see the old file
// or the new one, never a torn one.
func (c *Cache) save(key cacheKey, col *Collateral, fetchedAt time.Time) {
	b, err := json.Marshal(cacheFile{
		Version: 1, Source: key.source, RootSHA256: hex.EncodeToString(key.root[:]),
		FMSPC: key.fmspc, CA: key.ca, FetchedAt: fetchedAt, Collateral: col,
	})
	if err == nil {
		err = writeFileAtomic(c.path(key), b)
	}
	if err != nil {
		c.logger().Warn("dcap: could not persist collateral", "dir", c.opts.Dir, "error", err)
	}
}

func writeFileAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".collateral-*.tmp")
	if err != nil {
		return err
	}
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}
