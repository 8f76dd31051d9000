package testpki

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/teesql/ratls/dcap"
)

func startPCCS(t *testing.T, c *dcap.Collateral) (*PCCS, string) {
	t.Helper()
	p, err := NewPCCS(c)
	require.NoError(t, err)
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return p, srv.URL
}

type response struct {
	code   int
	header http.Header
	body   []byte
}

func get(t *testing.T, rawURL string) response {
	t.Helper()
	resp, err := http.Get(rawURL)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return response{resp.StatusCode, resp.Header, body}
}

// decodeChain decodes an issuer-chain header both ways clients do
// (query-style like go-tdx-guest, path-style like Rust's urlencoding) and
// requires the same PEM from both.
func decodeChain(t *testing.T, h string) string {
	t.Helper()
	q, err := url.QueryUnescape(h)
	require.NoError(t, err)
	p, err := url.PathUnescape(h)
	require.NoError(t, err)
	require.Equal(t, q, p)
	return q
}

func TestPCCSServesCollateral(t *testing.T) {
	t.Parallel()
	a := newAuthority(t, Options{Now: testNow})
	c, err := a.Collateral(CollateralOptions{})
	require.NoError(t, err)
	p, base := startPCCS(t, c)

	for _, fmspc := range []string{a.FMSPCHex(), strings.ToLower(a.FMSPCHex())} {
		r := get(t, base+PathTCBInfo+"?fmspc="+fmspc)
		require.Equal(t, http.StatusOK, r.code)
		assert.Equal(t, c.TCBInfoIssuerChain, decodeChain(t, r.header.Get(HeaderTCBInfoIssuerChain)))
		assert.NotContains(t, r.header.Get(HeaderTCBInfoIssuerChain), "+")
		assert.Equal(t, "application/json", r.header.Get("Content-Type"))
		var body struct {
			TCBInfo   json.RawMessage `json:"tcbInfo"`
			Signature string          `json:"signature"`
		}
		require.NoError(t, json.Unmarshal(r.body, &body))
		assert.Equal(t, c.TCBInfo, string(body.TCBInfo), "the exact signed text")
		assert.Equal(t, c.TCBInfoSignature, body.Signature)
		assert.Equal(t, `{"tcbInfo":`+c.TCBInfo+`,"signature":"`+c.TCBInfoSignature+`"}`, string(r.body))
	}

	r := get(t, base+PathQEIdentity+"?update=standard")
	require.Equal(t, http.StatusOK, r.code)
	assert.Equal(t, c.QEIdentityIssuerChain, decodeChain(t, r.header.Get(HeaderQEIdentityIssuerChain)))
	assert.Equal(t, `{"enclaveIdentity":`+c.QEIdentity+`,"signature":"`+c.QEIdentitySignature+`"}`, string(r.body))

	r = get(t, base+PathPCKCRL+"?ca=platform&encoding=der")
	require.Equal(t, http.StatusOK, r.code)
	assert.Equal(t, c.PCKCRLIssuerChain, decodeChain(t, r.header.Get(HeaderPCKCRLIssuerChain)))
	assert.Equal(t, c.PCKCRL, hex.EncodeToString(r.body))

	r = get(t, base+PathPCKCRL+"?ca=PLATFORM")
	require.Equal(t, http.StatusOK, r.code)
	blk, rest := pem.Decode(r.body)
	require.NotNil(t, blk)
	assert.Equal(t, "X509 CRL", blk.Type)
	assert.Empty(t, rest)
	assert.Equal(t, c.PCKCRL, hex.EncodeToString(blk.Bytes))

	r = get(t, base+PathRootCACRL)
	require.Equal(t, http.StatusOK, r.code)
	assert.Equal(t, c.RootCACRL, string(r.body))

	r = get(t, base+PathRootCRLDER)
	require.Equal(t, http.StatusOK, r.code)
	assert.Equal(t, c.RootCACRL, hex.EncodeToString(r.body))
	assert.Equal(t, a.Root().CRLDistributionPoints[0], "https://ratls-test-pki.invalid"+PathRootCRLDER)

	for _, tc := range []struct {
		path string
		code int
	}{
		{PathTCBInfo + "?fmspc=00606A000000", http.StatusNotFound},
		{PathTCBInfo, http.StatusBadRequest},
		{PathPCKCRL + "?ca=processor&encoding=der", http.StatusNotFound},
		{PathPCKCRL + "?ca=nonsense", http.StatusBadRequest},
		{"/sgx/certification/v4/pckcert", http.StatusNotFound},
	} {
		assert.Equal(t, tc.code, get(t, base+tc.path).code, tc.path)
	}
	resp, err := http.Post(base+PathQEIdentity, "text/plain", strings.NewReader("x"))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)

	assert.Equal(t, int64(4), p.Requests(PathTCBInfo))
	assert.Equal(t, int64(2), p.Requests(PathQEIdentity))
	assert.Equal(t, int64(4), p.Requests(PathPCKCRL))
	assert.Equal(t, int64(1), p.Requests(PathRootCACRL))
	assert.Equal(t, int64(1), p.Requests(PathRootCRLDER))
	assert.Equal(t, int64(1), p.Requests("/sgx/certification/v4/pckcert"))
	assert.Equal(t, int64(0), p.Requests("/never"))
	assert.Equal(t, int64(13), p.TotalRequests())
}

func TestPCCSProcessorCA(t *testing.T) {
	t.Parallel()
	a := newAuthority(t, Options{Now: testNow, CA: ProcessorCA})
	c, err := a.Collateral(CollateralOptions{})
	require.NoError(t, err)
	_, base := startPCCS(t, c)
	assert.Equal(t, http.StatusOK, get(t, base+PathPCKCRL+"?ca=processor&encoding=der").code)
	assert.Equal(t, http.StatusNotFound, get(t, base+PathPCKCRL+"?ca=platform&encoding=der").code)
}

func TestPCCSServesRecordedCollateral(t *testing.T) {
	t.Parallel()
	c := recordedCollateral(t)
	_, base := startPCCS(t, c)
	r := get(t, base+PathTCBInfo+"?fmspc=b0c06f000000")
	require.Equal(t, http.StatusOK, r.code)
	var body struct {
		TCBInfo json.RawMessage `json:"tcbInfo"`
	}
	require.NoError(t, json.Unmarshal(r.body, &body))
	assert.Equal(t, c.TCBInfo, string(body.TCBInfo))
	assert.Equal(t, http.StatusOK, get(t, base+PathPCKCRL+"?ca=platform&encoding=der").code)
}

func TestNewPCCSRejectsBadCollateral(t *testing.T) {
	t.Parallel()
	a := newAuthority(t, Options{Now: testNow})
	good, err := a.Collateral(CollateralOptions{})
	require.NoError(t, err)
	for name, mutate := range map[string]func(c *dcap.Collateral){
		"no fmspc":     func(c *dcap.Collateral) { c.TCBInfo = `{"id":"TDX"}` },
		"not JSON":     func(c *dcap.Collateral) { c.TCBInfo = "{" },
		"PCK CRL hex":  func(c *dcap.Collateral) { c.PCKCRL = "zz" },
		"PCK CRL DER":  func(c *dcap.Collateral) { c.PCKCRL = "3000" },
		"root CRL hex": func(c *dcap.Collateral) { c.RootCACRL = "x" },
	} {
		c := *good
		mutate(&c)
		_, err := NewPCCS(&c)
		assert.ErrorIs(t, err, ErrOptions, name)
	}
	_, err = NewPCCS(nil)
	assert.ErrorIs(t, err, ErrOptions)

	p, err := NewPCCS(good)
	require.NoError(t, err)
	bad := *good
	bad.PCKCRL = "zz"
	require.Error(t, p.SetCollateral(&bad))
	assert.Equal(t, good, p.Collateral(), "a rejected update leaves the served collateral alone")
}

func TestPCCSFaults(t *testing.T) {
	t.Parallel()
	a := newAuthority(t, Options{Now: testNow})
	c, err := a.Collateral(CollateralOptions{})
	require.NoError(t, err)
	p, base := startPCCS(t, c)
	qe := base + PathQEIdentity

	p.SetStatus(http.StatusServiceUnavailable)
	assert.Equal(t, http.StatusServiceUnavailable, get(t, qe).code)
	p.SetStatus(http.StatusInternalServerError)
	assert.Equal(t, http.StatusInternalServerError, get(t, qe).code)
	p.SetStatus(0)
	assert.Equal(t, http.StatusOK, get(t, qe).code)

	p.SetGarbage(true)
	r := get(t, qe)
	assert.Equal(t, http.StatusOK, r.code)
	assert.Equal(t, GarbageBody, string(r.body))
	assert.False(t, json.Valid(r.body))
	assert.NotEmpty(t, r.header.Get(HeaderQEIdentityIssuerChain))
	p.SetGarbage(false)

	expired, err := a.Collateral(CollateralOptions{Expired: true})
	require.NoError(t, err)
	require.NoError(t, p.SetCollateral(expired))
	r = get(t, base+PathTCBInfo+"?fmspc="+a.FMSPCHex())
	var body struct {
		TCBInfo struct{ NextUpdate time.Time } `json:"tcbInfo"`
	}
	require.NoError(t, json.Unmarshal(r.body, &body))
	assert.True(t, body.TCBInfo.NextUpdate.Before(a.Now()))
	assert.Equal(t, expired, p.Collateral())

	p.SetDelay(time.Millisecond)
	assert.Equal(t, http.StatusOK, get(t, qe).code)
	assert.Equal(t, int64(5), p.Requests(PathQEIdentity))
}

// A delayed request must end when its client gives up, so that servers
// shut down promptly (srv.Close waits for handlers).
func TestPCCSDelayRespectsCancellation(t *testing.T) {
	t.Parallel()
	a := newAuthority(t, Options{Now: testNow})
	c, err := a.Collateral(CollateralOptions{})
	require.NoError(t, err)
	p, err := NewPCCS(c)
	require.NoError(t, err)
	srv := httptest.NewServer(p)
	p.SetDelay(time.Hour)

	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+PathQEIdentity, nil)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() {
		resp, err := srv.Client().Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	require.Eventually(t, func() bool { return p.Requests(PathQEIdentity) == 1 }, 10*time.Second, time.Millisecond)
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
	srv.Close() // returns only once the handler has returned
}

func TestPCCSConcurrentKnobs(t *testing.T) {
	t.Parallel()
	a := newAuthority(t, Options{Now: testNow})
	fresh, err := a.Collateral(CollateralOptions{})
	require.NoError(t, err)
	expired, err := a.Collateral(CollateralOptions{Expired: true})
	require.NoError(t, err)
	p, base := startPCCS(t, fresh)

	var wg sync.WaitGroup
	const n = 40
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(base + PathTCBInfo + "?fmspc=" + a.FMSPCHex())
			if !assert.NoError(t, err) {
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			assert.Contains(t, []int{http.StatusOK, http.StatusBadGateway}, resp.StatusCode)
		}()
		switch i % 4 {
		case 0:
			p.SetStatus(http.StatusBadGateway)
		case 1:
			p.SetStatus(0)
		case 2:
			assert.NoError(t, p.SetCollateral(expired))
		case 3:
			p.SetGarbage(i%8 == 3)
		}
	}
	wg.Wait()
	assert.Equal(t, int64(n), p.Requests(PathTCBInfo))
}
