// Package dcap verifies Intel TDX quotes locally with Intel's DCAP rules.
//
// A Verifier checks a quote (version 4 or 5, TD 1.0 or TD 1.5 body) the
// way Intel's Quote Verification Library does: the PCK certificate chain to
// Intel's SGX Root CA (pinned in the package), the QE report signature and
// its binding of the attestation key, the quote signature, revocation
// through the root CA and PCK CRLs, the signed TCB info and QE identity, and
// the TCB level of the platform, the TDX module and the quoting enclave.
//
// It does not decide whether a TCB status is acceptable: the Verdict
// carries the status (even OutOfDate or Revoked) and the advisories, and the
// caller's policy decides. Quotes that DCAP rules say are invalid (bad
// signature, broken chain, expired collateral, unknown QE, a TDX module not
// signed by Intel) are refused with an error wrapping one of the Err*
// sentinels.
//
// Collateral comes from Intel PCS or a PCCS (VerifyQuote), fetched once per
// platform family and kept verified in a Cache, or is supplied by the caller
// (VerifyWithCollateral) for air-gapped use.
package dcap

import (
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// IntelPCS is the default collateral source.
const IntelPCS = "https://api.trustedservices.intel.com"

// DefaultFetchTimeout bounds each collateral request when
// Options.FetchTimeout is zero.
const DefaultFetchTimeout = 10 * time.Second

// Options configures a Verifier. The zero Options verify against Intel's
// pinned SGX root with collateral from Intel PCS.
type Options struct {
	// CollateralURL is the base URL of Intel PCS or a PCCS serving the PCS
	// v4 API (for example https://pccs.phala.network). Empty: IntelPCS.
	// The root CA CRL comes from the root certificate's CRL distribution
	// point for IntelPCS, and from the PCCS's /sgx/certification/v4/rootcacrl
	// otherwise. Collateral is verified whatever its source: a PCCS can
	// withhold it, not forge it.
	CollateralURL string
	// TrustedRoot replaces Intel's pinned root CA. Danger: a quote chaining
	// to this root is believed; only for tests and private PKIs. New logs a
	// warning when it is not Intel's root.
	TrustedRoot *x509.Certificate
	// HTTPClient fetches collateral. Nil: a client with sane dial, TLS and
	// header timeouts. Every request is also bounded by FetchTimeout and
	// by the caller's context.
	HTTPClient *http.Client
	// FetchTimeout bounds each collateral request. Zero: 10 seconds.
	FetchTimeout time.Duration
	// Cache holds verified collateral; share one between verifiers to
	// fetch once per FMSPC. Nil: a private cache with default CacheOptions.
	Cache *Cache
	// Now is the verification clock. Nil: time.Now.
	Now func() time.Time
	// Logger receives warnings (non-Intel root, failed background
	// refreshes, stale or corrupted cache entries). Nil: slog.Default().
	Logger *slog.Logger
}

// Verifier verifies quotes. It is safe for concurrent use.
type Verifier struct {
	root         *x509.Certificate
	rootFP       [32]byte
	source       string
	client       *http.Client
	fetchTimeout time.Duration
	cache        *Cache
	now          func() time.Time
	log          *slog.Logger
	cas          caCache
}

// New returns a Verifier configured by opts.
func New(opts Options) (*Verifier, error) {
	v := &Verifier{
		root:         opts.TrustedRoot,
		source:       opts.CollateralURL,
		client:       opts.HTTPClient,
		fetchTimeout: opts.FetchTimeout,
		cache:        opts.Cache,
		now:          opts.Now,
		log:          opts.Logger,
	}
	if v.log == nil {
		v.log = slog.Default()
	}
	intel := IntelRootCA()
	if v.root == nil {
		v.root = intel
	} else {
		if !v.root.IsCA {
			return nil, fmt.Errorf("dcap: TrustedRoot %q is not a CA certificate", v.root.Subject.CommonName)
		}
		if fingerprintHex(v.root) != IntelRootCASHA256 {
			v.log.Warn("dcap: verifying quotes against a root that is not Intel's SGX Root CA; quotes from real TDX hardware will fail and quotes minted under this root will pass",
				"subject", v.root.Subject.String(), "sha256", fingerprintHex(v.root))
		}
	}
	v.rootFP = fingerprint(v.root)
	if v.source == "" {
		v.source = IntelPCS
	}
	u, err := url.Parse(v.source)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("dcap: CollateralURL %q is not an http(s) URL", opts.CollateralURL)
	}
	v.source = strings.TrimRight(v.source, "/")
	if v.fetchTimeout < 0 {
		return nil, fmt.Errorf("dcap: negative FetchTimeout %v", v.fetchTimeout)
	}
	if v.fetchTimeout == 0 {
		v.fetchTimeout = DefaultFetchTimeout
	}
	if v.client == nil {
		v.client = defaultHTTPClient()
	}
	if v.cache == nil {
		v.cache, _ = NewCache(CacheOptions{Logger: v.log})
	}
	if v.now == nil {
		v.now = time.Now
	}
	return v, nil
}

func defaultHTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: DefaultFetchTimeout,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   4,
		ForceAttemptHTTP2:     true,
	}}
}
