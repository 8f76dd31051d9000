// Package dcap verifies Intel TDX quotes locally with Intel's DCAP rules.
//
// CONTRACT SKELETON: exported names and signatures below are shared with
// other packages (the ratls core, ratlstest, cmd). Bodies are being written.
package dcap

import (
	"context"
	"crypto/x509"
	"log/slog"
	"net/http"
	"time"

	"github.com/teesql/ratls/tdx"
)

// IntelPCS is the default collateral source.
const IntelPCS = "https://api.trustedservices.intel.com"

// Options configures a Verifier. The zero Options verify against Intel's
// pinned SGX root with collateral from Intel PCS.
type Options struct {
	// CollateralURL is the base URL of Intel PCS or a PCCS serving the PCS
	// v4 API. Empty: IntelPCS.
	CollateralURL string
	// TrustedRoot replaces Intel's pinned root CA. Danger: a quote chaining
	// to this root is believed; only for tests and private PKIs.
	TrustedRoot *x509.Certificate
	// HTTPClient fetches collateral. Nil: a client with sane timeouts.
	HTTPClient *http.Client
	// FetchTimeout bounds each collateral fetch. Zero: 10 seconds.
	FetchTimeout time.Duration
	// Cache holds verified collateral; share one between verifiers to
	// fetch once per FMSPC. Nil: a private cache.
	Cache *Cache
	// Now is the verification clock. Nil: time.Now.
	Now func() time.Time
	// Logger: nil, slog.Default().
	Logger *slog.Logger
}

// Collateral is the QuoteCollateralV3 interchange format (dcap-qvl's JSON).
type Collateral struct {
	PCKCRLIssuerChain     string `json:"pck_crl_issuer_chain"`
	RootCACRL             string `json:"root_ca_crl"` // hex DER
	PCKCRL                string `json:"pck_crl"`     // hex DER
	TCBInfoIssuerChain    string `json:"tcb_info_issuer_chain"`
	TCBInfo               string `json:"tcb_info"`           // exact signed JSON text
	TCBInfoSignature      string `json:"tcb_info_signature"` // hex
	QEIdentityIssuerChain string `json:"qe_identity_issuer_chain"`
	QEIdentity            string `json:"qe_identity"`
	QEIdentitySignature   string `json:"qe_identity_signature"`
}

// Cache holds fetched and verified collateral keyed by FMSPC and CA type.
type Cache struct{}

// Verifier verifies quotes. It is safe for concurrent use.
type Verifier struct{}

// New returns a Verifier.
func New(opts Options) (*Verifier, error) { panic("unimplemented") }

// VerifyQuote verifies quote with collateral from the cache or the
// collateral source.
func (v *Verifier) VerifyQuote(ctx context.Context, quote []byte) (*tdx.Verdict, error) {
	panic("unimplemented")
}

// VerifyWithCollateral verifies quote against the given collateral at time
// now, with no network access (air-gapped use).
func (v *Verifier) VerifyWithCollateral(ctx context.Context, quote []byte, c *Collateral, now time.Time) (*tdx.Verdict, error) {
	panic("unimplemented")
}

// FetchCollateral fetches (without verifying) the collateral for quote.
func (v *Verifier) FetchCollateral(ctx context.Context, quote []byte) (*Collateral, error) {
	panic("unimplemented")
}
