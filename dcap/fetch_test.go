package dcap_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/teesql/ratls/dcap"
	"github.com/teesql/ratls/internal/testpki"
	"github.com/teesql/ratls/tdx"
)

// startPCCS serves c at the PCS v4 paths on a loopback httptest server.
func startPCCS(t testing.TB, c *dcap.Collateral) (*testpki.PCCS, *httptest.Server) {
	t.Helper()
	pccs, err := testpki.NewPCCS(c)
	require.NoError(t, err)
	srv := httptest.NewServer(pccs)
	t.Cleanup(func() {
		// Requests held by SetDelay end when their connection does.
		srv.CloseClientConnections()
		srv.Close()
	})
	return pccs, srv
}

// collateralRequests is how many requests reached each of the four
// collateral endpoints a fetch uses, in a fixed order.
func collateralRequests(p *testpki.PCCS) [4]int64 {
	return [4]int64{
		p.Requests(testpki.PathTCBInfo), p.Requests(testpki.PathQEIdentity),
		p.Requests(testpki.PathPCKCRL), p.Requests(testpki.PathRootCACRL),
	}
}

func fetches(n int64) [4]int64 { return [4]int64{n, n, n, n} }

func TestFetchCollateralMatchesRecorded(t *testing.T) {
	t.Parallel()
	want := recordedCollateral(t)
	pccs, srv := startPCCS(t, want)
	v := newVerifier(t, dcap.Options{CollateralURL: srv.URL + "/"}) // default HTTP client; trailing slash tolerated
	got, err := v.FetchCollateral(context.Background(), recordedQuote(t))
	require.NoError(t, err)
	// Byte for byte: the signed JSON text out of the response bodies, the
	// issuer chains out of URL-encoded headers, the CRLs (DER and hex) as
	// hex DER.
	assert.Equal(t, want, got)
	assert.Equal(t, fetches(1), collateralRequests(pccs))

	verdict, err := v.VerifyWithCollateral(context.Background(), recordedQuote(t), got, recordedValidAt)
	require.NoError(t, err)
	assert.Equal(t, tdx.TCBUpToDate, verdict.TCBStatus)
}

func TestVerifyQuoteFetchesOncePerFMSPC(t *testing.T) {
	t.Parallel()
	pccs, srv := startPCCS(t, recordedCollateral(t))
	// Hold responses so that every verification arrives while the first
	// fetch is in flight.
	pccs.SetDelay(50 * time.Millisecond)
	cache, err := dcap.NewCache(dcap.CacheOptions{})
	require.NoError(t, err)
	clk := newClock(recordedValidAt)
	v := newVerifier(t, dcap.Options{CollateralURL: srv.URL, HTTPClient: srv.Client(), Cache: cache, Now: clk.Now})
	quote := recordedQuote(t)

	const n = 100
	var wg sync.WaitGroup
	errs := make([]error, n)
	verdicts := make([]*tdx.Verdict, n)
	for i := range n {
		wg.Go(func() { verdicts[i], errs[i] = v.VerifyQuote(context.Background(), quote) })
	}
	wg.Wait()
	for i := range n {
		require.NoError(t, errs[i])
		assert.Equal(t, tdx.TCBUpToDate, verdicts[i].TCBStatus)
		assert.Equal(t, recordedFMSPC, verdicts[i].FMSPC)
	}
	assert.Equal(t, fetches(1), collateralRequests(pccs), "one fetch for %d concurrent verifications", n)

	// Another verifier sharing the cache uses the same collateral.
	v2 := newVerifier(t, dcap.Options{CollateralURL: srv.URL, HTTPClient: srv.Client(), Cache: cache, Now: clk.Now})
	_, err = v2.VerifyQuote(context.Background(), quote)
	require.NoError(t, err)
	assert.Equal(t, fetches(1), collateralRequests(pccs))

	// A verifier with another collateral source does not: the cache is
	// keyed by source (and root), not only by FMSPC.
	pccs3, srv3 := startPCCS(t, recordedCollateral(t))
	v3 := newVerifier(t, dcap.Options{CollateralURL: srv3.URL, HTTPClient: srv3.Client(), Cache: cache, Now: clk.Now})
	_, err = v3.VerifyQuote(context.Background(), quote)
	require.NoError(t, err)
	assert.Equal(t, fetches(1), collateralRequests(pccs3))
	assert.Equal(t, fetches(1), collateralRequests(pccs))

	// A verifier with a private cache fetches for itself.
	v4 := newVerifier(t, dcap.Options{CollateralURL: srv.URL, HTTPClient: srv.Client(), Now: clk.Now})
	_, err = v4.VerifyQuote(context.Background(), quote)
	require.NoError(t, err)
	assert.Equal(t, fetches(2), collateralRequests(pccs))
}

func TestVerifyQuoteRefreshesAfterNextUpdate(t *testing.T) {
	t.Parallel()
	a := newAuthority(t, testpki.Options{})
	first, err := a.Collateral(testpki.CollateralOptions{}) // nextUpdate: Now + 29 days
	require.NoError(t, err)
	pccs, srv := startPCCS(t, first)
	quote, err := a.MintQuote(testpki.QuoteOptions{Version: 5, BodyType: tdx.BodyTypeTD15})
	require.NoError(t, err)
	clk := newClock(a.Now())
	v := newVerifier(t, dcap.Options{TrustedRoot: a.Root(), CollateralURL: srv.URL, HTTPClient: srv.Client(), Now: clk.Now})

	verdict, err := v.VerifyQuote(context.Background(), quote)
	require.NoError(t, err)
	firstUntil := verdict.ValidUntil
	assert.Equal(t, a.Now().AddDate(0, 0, 29), firstUntil.UTC())
	assert.Equal(t, fetches(1), collateralRequests(pccs))

	// Intel publishes the next collateral a month later.
	second, err := a.Collateral(testpki.CollateralOptions{IssueDate: a.Now().AddDate(0, 0, 28)})
	require.NoError(t, err)
	require.NoError(t, pccs.SetCollateral(second))

	clk.Set(firstUntil.Add(time.Minute))
	verdict, err = v.VerifyQuote(context.Background(), quote)
	require.NoError(t, err, "expired collateral is refetched before verifying")
	assert.Equal(t, a.Now().AddDate(0, 0, 58), verdict.ValidUntil.UTC())
	assert.Equal(t, fetches(2), collateralRequests(pccs))

	// Fresh collateral is not fetched again.
	clk.Add(time.Hour)
	_, err = v.VerifyQuote(context.Background(), quote)
	require.NoError(t, err)
	assert.Equal(t, fetches(2), collateralRequests(pccs))
}

// Collateral nearing its nextUpdate (or older than MaxAge) is refreshed in
// the background while verifications keep using it.
func TestVerifyQuoteRefreshesBeforeNextUpdate(t *testing.T) {
	t.Parallel()
	a := newAuthority(t, testpki.Options{})
	first, err := a.Collateral(testpki.CollateralOptions{})
	require.NoError(t, err)
	pccs, srv := startPCCS(t, first)
	quote, err := a.MintQuote(testpki.QuoteOptions{})
	require.NoError(t, err)
	cache, err := dcap.NewCache(dcap.CacheOptions{RefreshMargin: 2 * time.Hour, MaxAge: 365 * 24 * time.Hour})
	require.NoError(t, err)
	clk := newClock(a.Now())
	v := newVerifier(t, dcap.Options{TrustedRoot: a.Root(), CollateralURL: srv.URL, HTTPClient: srv.Client(), Now: clk.Now, Cache: cache})

	verdict, err := v.VerifyQuote(context.Background(), quote)
	require.NoError(t, err)
	firstUntil := verdict.ValidUntil
	second, err := a.Collateral(testpki.CollateralOptions{IssueDate: a.Now().AddDate(0, 0, 20)})
	require.NoError(t, err)
	require.NoError(t, pccs.SetCollateral(second))

	// Three hours before nextUpdate: not yet due.
	clk.Set(firstUntil.Add(-3 * time.Hour))
	_, err = v.VerifyQuote(context.Background(), quote)
	require.NoError(t, err)
	assert.Equal(t, fetches(1), collateralRequests(pccs))

	// One hour before: due. This verification uses the current collateral
	// and a refresh starts behind it.
	clk.Set(firstUntil.Add(-time.Hour))
	verdict, err = v.VerifyQuote(context.Background(), quote)
	require.NoError(t, err)
	assert.Equal(t, firstUntil, verdict.ValidUntil)
	require.Eventually(t, func() bool {
		verdict, err := v.VerifyQuote(context.Background(), quote)
		return err == nil && verdict.ValidUntil.After(firstUntil)
	}, 10*time.Second, 5*time.Millisecond)
	assert.Equal(t, fetches(2), collateralRequests(pccs))

	// Past the first collateral's nextUpdate, nothing is fetched: the
	// refreshed collateral is in use.
	clk.Set(firstUntil.Add(time.Minute))
	_, err = v.VerifyQuote(context.Background(), quote)
	require.NoError(t, err)
	assert.Equal(t, fetches(2), collateralRequests(pccs))
}

func TestVerifyQuoteMaxAgeRefresh(t *testing.T) {
	t.Parallel()
	pccs, srv := startPCCS(t, recordedCollateral(t))
	clk := newClock(recordedValidAt)
	v := newVerifier(t, dcap.Options{CollateralURL: srv.URL, HTTPClient: srv.Client(), Now: clk.Now})
	_, err := v.VerifyQuote(context.Background(), recordedQuote(t))
	require.NoError(t, err)
	clk.Add(dcap.DefaultMaxAge + time.Minute)
	_, err = v.VerifyQuote(context.Background(), recordedQuote(t))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return collateralRequests(pccs) == fetches(2) }, 10*time.Second, 5*time.Millisecond)
}

func TestFetchErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		setup    func(*testpki.PCCS)
		timeout  time.Duration
		contains []string
		is       error
	}{
		{name: "503", setup: func(p *testpki.PCCS) { p.SetStatus(503) }, contains: []string{"status 503"}},
		{name: "500", setup: func(p *testpki.PCCS) { p.SetStatus(500) }, contains: []string{"status 500"}},
		{name: "404", setup: func(p *testpki.PCCS) { p.SetStatus(404) }, contains: []string{"status 404"}},
		{name: "garbage body", setup: func(p *testpki.PCCS) { p.SetGarbage(true) }},
		{
			name: "timeout", setup: func(p *testpki.PCCS) { p.SetDelay(time.Minute) }, timeout: 50 * time.Millisecond,
			contains: []string{"no response within 50ms"}, is: context.DeadlineExceeded,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			pccs, srv := startPCCS(t, recordedCollateral(t))
			tt.setup(pccs)
			v := newVerifier(t, dcap.Options{CollateralURL: srv.URL, HTTPClient: srv.Client(), FetchTimeout: tt.timeout,
				Now: func() time.Time { return recordedValidAt }})

			_, err := v.FetchCollateral(context.Background(), recordedQuote(t))
			require.ErrorIs(t, err, dcap.ErrFetch)
			_, err = v.VerifyQuote(context.Background(), recordedQuote(t))
			require.ErrorIs(t, err, dcap.ErrFetch)
			if tt.is != nil {
				require.ErrorIs(t, err, tt.is)
			}
			assert.True(t, strings.HasPrefix(err.Error(), "dcap: collateral fetch failed: GET "+srv.URL+"/"), "message names the URL: %q", err)
			for _, s := range tt.contains {
				assert.Contains(t, err.Error(), s)
			}
		})
	}
}

// A hung collateral source cannot hold a verification past its context's
// deadline, however long FetchTimeout is.
func TestSlowServerBoundedByContext(t *testing.T) {
	t.Parallel()
	pccs, srv := startPCCS(t, recordedCollateral(t))
	pccs.SetDelay(time.Minute)
	v := newVerifier(t, dcap.Options{CollateralURL: srv.URL, HTTPClient: srv.Client(), FetchTimeout: time.Minute,
		Now: func() time.Time { return recordedValidAt }})

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := v.VerifyQuote(ctx, recordedQuote(t))
	require.ErrorIs(t, err, dcap.ErrFetch)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), recordedFMSPC)

	ctx2, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	_, err = v.FetchCollateral(ctx2, recordedQuote(t))
	require.ErrorIs(t, err, dcap.ErrFetch)
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestStaleIfError(t *testing.T) {
	t.Parallel()
	pckCRLNext := time.Date(2025, 7, 19, 10, 0, 35, 0, time.UTC) // earliest nextUpdate of the recorded collateral
	for _, grace := range []time.Duration{0, 48 * time.Hour} {
		t.Run(grace.String(), func(t *testing.T) {
			t.Parallel()
			pccs, srv := startPCCS(t, recordedCollateral(t))
			var logs logBuffer
			cache, err := dcap.NewCache(dcap.CacheOptions{StaleIfError: grace, Logger: logs.Logger()})
			require.NoError(t, err)
			clk := newClock(recordedValidAt)
			v := newVerifier(t, dcap.Options{CollateralURL: srv.URL, HTTPClient: srv.Client(), Cache: cache, Now: clk.Now})
			_, err = v.VerifyQuote(context.Background(), recordedQuote(t))
			require.NoError(t, err)

			pccs.SetStatus(500)
			clk.Set(pckCRLNext.Add(time.Hour))
			verdict, err := v.VerifyQuote(context.Background(), recordedQuote(t))
			if grace == 0 {
				require.ErrorIs(t, err, dcap.ErrFetch, "expired collateral is never used by default")
				assert.Contains(t, err.Error(), "status 500")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tdx.TCBUpToDate, verdict.TCBStatus)
			assert.Equal(t, pckCRLNext.Add(grace), verdict.ValidUntil.UTC(), "the verdict holds only until the grace ends")
			assert.Contains(t, logs.String(), "stale-if-error")
			assert.Equal(t, fetches(2), collateralRequests(pccs))

			clk.Set(pckCRLNext.Add(grace + time.Minute))
			_, err = v.VerifyQuote(context.Background(), recordedQuote(t))
			require.ErrorIs(t, err, dcap.ErrFetch, "past the grace")
		})
	}
}

// After a failed fetch the source is not asked again until RetryBackoff
// has passed; verifications meanwhile get the last error.
func TestRetryBackoff(t *testing.T) {
	t.Parallel()
	pccs, srv := startPCCS(t, recordedCollateral(t))
	pccs.SetStatus(503)
	clk := newClock(recordedValidAt)
	v := newVerifier(t, dcap.Options{CollateralURL: srv.URL, HTTPClient: srv.Client(), Now: clk.Now})
	for range 5 {
		_, err := v.VerifyQuote(context.Background(), recordedQuote(t))
		require.ErrorIs(t, err, dcap.ErrFetch)
		assert.Contains(t, err.Error(), "status 503")
	}
	assert.Equal(t, fetches(1), collateralRequests(pccs))

	pccs.SetStatus(0)
	clk.Add(dcap.DefaultRetryBackoff)
	_, err := v.VerifyQuote(context.Background(), recordedQuote(t))
	require.NoError(t, err)
	assert.Equal(t, fetches(2), collateralRequests(pccs))
}

func TestPersistentCache(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pccs, srv := startPCCS(t, recordedCollateral(t))
	clk := newClock(recordedValidAt)
	var logs logBuffer
	verifier := func() *dcap.Verifier {
		cache, err := dcap.NewCache(dcap.CacheOptions{Dir: dir, Logger: logs.Logger()})
		require.NoError(t, err)
		return newVerifier(t, dcap.Options{CollateralURL: srv.URL, HTTPClient: srv.Client(), Cache: cache, Now: clk.Now})
	}
	verify := func() {
		t.Helper()
		verdict, err := verifier().VerifyQuote(context.Background(), recordedQuote(t))
		require.NoError(t, err)
		require.Equal(t, tdx.TCBUpToDate, verdict.TCBStatus)
	}

	verify()
	assert.Equal(t, fetches(1), collateralRequests(pccs))
	files, err := filepath.Glob(filepath.Join(dir, "*"))
	require.NoError(t, err)
	require.Len(t, files, 1, "one file, no temporary left behind")
	file := files[0]
	assert.Contains(t, filepath.Base(file), recordedFMSPC)
	st, err := os.Stat(file)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())

	// A new process (new cache, same directory) verifies without the
	// network.
	pccs.SetStatus(500)
	verify()
	assert.Equal(t, fetches(1), collateralRequests(pccs))
	pccs.SetStatus(0)

	good, err := os.ReadFile(file)
	require.NoError(t, err)
	corruptions := map[string][]byte{
		"garbage":   []byte("\x00not json"),
		"truncated": good[:len(good)/2],
		// Valid JSON, but the signed TCB info no longer matches its
		// signature: a file is re-verified, never trusted.
		"forged": []byte(strings.Replace(string(good), `UpToDate`, `Revoked`, 1)),
	}
	n := int64(1)
	for _, name := range []string{"garbage", "truncated", "forged"} {
		require.NoError(t, os.WriteFile(file, corruptions[name], 0o600))
		before := logs.String()
		verify()
		n++
		assert.Equal(t, fetches(n), collateralRequests(pccs), "%s file ignored and refetched", name)
		assert.Contains(t, strings.TrimPrefix(logs.String(), before), "ignoring corrupted collateral cache file", name)
		rewritten, err := os.ReadFile(file)
		require.NoError(t, err)
		assert.True(t, json.Valid(rewritten), "the refetched collateral replaced the %s file", name)
		assert.NotContains(t, string(rewritten), `\"tcbStatus\":\"Revoked\"`)
	}
}

func TestNewCacheRejectsNegative(t *testing.T) {
	t.Parallel()
	_, err := dcap.NewCache(dcap.CacheOptions{StaleIfError: -time.Second})
	require.Error(t, err)
}

// The zero Cache is usable.
func TestZeroCache(t *testing.T) {
	t.Parallel()
	_, srv := startPCCS(t, recordedCollateral(t))
	v := newVerifier(t, dcap.Options{CollateralURL: srv.URL, HTTPClient: srv.Client(), Cache: &dcap.Cache{},
		Now: func() time.Time { return recordedValidAt }})
	_, err := v.VerifyQuote(context.Background(), recordedQuote(t))
	require.NoError(t, err)
}

// A source serving authentic collateral of another platform is refused
// like a failed fetch, not cached.
func TestFetchRefusesOtherPlatform(t *testing.T) {
	t.Parallel()
	a := newAuthority(t, testpki.Options{})
	const other = "00906ED50000"
	coll, err := a.Collateral(testpki.CollateralOptions{FMSPC: other})
	require.NoError(t, err)
	pccs, err := testpki.NewPCCS(coll)
	require.NoError(t, err)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == testpki.PathTCBInfo { // answer whatever FMSPC is asked
			q := r.URL.Query()
			q.Set("fmspc", other)
			r.URL.RawQuery = q.Encode()
		}
		pccs.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	quote, err := a.MintQuote(testpki.QuoteOptions{})
	require.NoError(t, err)
	v := newVerifier(t, dcap.Options{TrustedRoot: a.Root(), CollateralURL: srv.URL, HTTPClient: srv.Client(), Now: a.Now})
	for range 2 {
		_, err = v.VerifyQuote(context.Background(), quote)
		require.ErrorIs(t, err, dcap.ErrFMSPCMismatch)
		assert.Contains(t, err.Error(), srv.URL)
		assert.Contains(t, err.Error(), other)
	}
	assert.Equal(t, int64(1), pccs.Requests(testpki.PathTCBInfo), "the failure is remembered for RetryBackoff")
}

// Collateral persisted on disk that is due for a refresh is still used,
// while valid, when the refresh fails.
func TestPersistentCacheDueButSourceDown(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pccs, srv := startPCCS(t, recordedCollateral(t))
	clk := newClock(recordedValidAt)
	verifier := func() *dcap.Verifier {
		cache, err := dcap.NewCache(dcap.CacheOptions{Dir: dir})
		require.NoError(t, err)
		return newVerifier(t, dcap.Options{CollateralURL: srv.URL, HTTPClient: srv.Client(), Cache: cache, Now: clk.Now})
	}
	_, err := verifier().VerifyQuote(context.Background(), recordedQuote(t))
	require.NoError(t, err)

	pccs.SetStatus(503)
	clk.Add(dcap.DefaultMaxAge + time.Hour) // due, not expired
	verdict, err := verifier().VerifyQuote(context.Background(), recordedQuote(t))
	require.NoError(t, err)
	assert.Equal(t, tdx.TCBUpToDate, verdict.TCBStatus)
	assert.Equal(t, fetches(2), collateralRequests(pccs), "a refresh was tried")
}
