package ratlstest

import (
	"crypto/x509"
	"errors"
	"log/slog"
	"time"

	"github.com/teesql/ratls/dcap"
	"github.com/teesql/ratls/internal/testpki"
	"github.com/teesql/ratls/tdx"
)

// AuthorityOptions configures NewAuthority. The zero value is an authority
// whose quotes verify as UpToDate against its default collateral.
type AuthorityOptions struct {
	// Now is the authority's clock: certificate validity and the issue and
	// next-update dates of its collateral derive from it. Zero: the time
	// NewAuthority runs. Collateral stays valid for about a month after it.
	Now time.Time
	// Logger receives the warning logged whenever a verifier trusting the
	// test root is built. Nil: slog.Default().
	Logger *slog.Logger
}

// Authority is a test DCAP PKI standing in for Intel's: a root CA, a PCK
// chain, a Quoting Enclave that signs TDX quotes, and the collateral to
// verify them. Each Authority has fresh keys, so its root is trusted by
// nothing unless handed over explicitly, and NewVerifier logs a warning
// every time it does so. It is safe for concurrent use.
//
// NEVER TRUST ITS ROOT OUTSIDE TESTS: anyone can mint quotes it accepts.
type Authority struct {
	pki *testpki.Authority
	log *slog.Logger
}

// NewAuthority creates a test PKI with fresh keys.
func NewAuthority(opts AuthorityOptions) (*Authority, error) {
	pki, err := testpki.New(testpki.Options{Now: opts.Now})
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Authority{pki: pki, log: log}, nil
}

// Root is the test root CA certificate. Danger: a verifier trusting it
// believes any quote this package mints.
func (a *Authority) Root() *x509.Certificate { return a.pki.Root() }

// RootPEM is Root in PEM form, for tools that take a root file. The same
// danger applies.
func (a *Authority) RootPEM() []byte { return pemCert(a.Root()) }

// Now is the authority's clock reading at creation, from which its
// collateral dates derive.
func (a *Authority) Now() time.Time { return a.pki.Now() }

// FMSPC is the simulated platform's FMSPC (upper-case hex).
func (a *Authority) FMSPC() string { return a.pki.FMSPCHex() }

// NewVerifier returns a DCAP verifier that trusts the test root and fetches
// collateral from collateralURL (a PCCS double's URL). opts supplies
// everything else (Cache, Now, FetchTimeout, ...); its TrustedRoot and
// CollateralURL are overwritten. It logs a warning: such a verifier
// believes quotes that anyone can mint.
func (a *Authority) NewVerifier(collateralURL string, opts dcap.Options) (*dcap.Verifier, error) {
	if collateralURL == "" {
		return nil, errors.New("ratlstest: NewVerifier: empty collateral URL (refusing to default to Intel PCS with a test root)")
	}
	opts.TrustedRoot = a.Root()
	opts.CollateralURL = collateralURL
	if opts.Logger == nil {
		opts.Logger = a.log
	}
	a.log.Warn("ratlstest: building a DCAP verifier that trusts the ratlstest TEST root CA; quotes it accepts prove nothing (never use outside tests)",
		"root", a.Root().Subject.CommonName, "collateral_url", collateralURL)
	return dcap.New(opts)
}

// Quote mints a TDX quote for td carrying reportData, signed by the test
// Quoting Enclave. Its RTMR3 is the replay of td's runtime events. For
// full control of the quote (TD 1.5 body, every report field) use
// MintQuote.
func (a *Authority) Quote(td TD, reportData [64]byte) ([]byte, error) {
	td = td.withDefaults()
	if err := td.validate(); err != nil {
		return nil, err
	}
	return a.quote(td, reportData)
}

// quote mints a quote for td, which has its defaults filled in.
func (a *Authority) quote(td TD, reportData [64]byte) ([]byte, error) {
	body := a.body(td, reportData)
	return a.pki.MintQuote(testpki.QuoteOptions{Version: uint16(td.QuoteVersion), BodyType: tdx.BodyTypeTD10, Body: &body})
}

// body is the TD report of td (defaults filled in) on this authority's
// platform.
func (a *Authority) body(td TD, reportData [64]byte) tdx.TDReport {
	body := a.pki.DefaultBody()
	body.MRTD = td.MRTD
	body.RTMR = td.rtmrs()
	body.TDAttributes = td.TDAttributes
	if td.Debug {
		body.TDAttributes[0] |= 0x01 // TDATTRIBUTES.DEBUG
	}
	if td.TEETCBSVN != ([16]byte{}) {
		body.TEETCBSVN = td.TEETCBSVN
	}
	body.ReportData = reportData
	return body
}

// DefaultBody returns the TD report that Quote(DefaultTD(), zero
// REPORTDATA) carries, with TEE_TCB_SVN2 (TD 1.5 only) equal to
// TEE_TCB_SVN: the values MintQuote uses for zero fields. Its TEE_TCB_SVN
// is the platform's, MRSIGNERSEAM and SEAMATTRIBUTES are zero (Intel's TDX
// module), XFAM is 0x602e7, and MRCONFIGID, MROWNER, MROWNERCONFIG and
// MRSERVICETD are zero.
func (a *Authority) DefaultBody() tdx.TDReport {
	return a.body(DefaultTD().withDefaults(), [64]byte{})
}

// TEETCBSVN is the simulated platform's TDX TCB (TEE_TCB_SVN), which the
// default collateral rates UpToDate.
func (a *Authority) TEETCBSVN() [16]byte { return a.pki.TEETCBSVN() }
