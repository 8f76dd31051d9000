package ratlstest

import (
	"fmt"

	"github.com/teesql/ratls/internal/testpki"
	"github.com/teesql/ratls/tdx"
)

// QuoteOptions selects the quote MintQuote mints. The zero value mints the
// quote Quote(DefaultTD(), zero REPORTDATA) would: version 4, TD 1.0 body,
// UpToDate under the default collateral.
type QuoteOptions struct {
	// Version is the quote version, 4 or 5. Zero: 4.
	Version int
	// BodyType is, for version 5, tdx.BodyTypeTD10 or tdx.BodyTypeTD15.
	// Zero: tdx.BodyTypeTD10. A version 4 quote carries only a TD 1.0
	// body.
	BodyType uint16
	// Body is the TD report: MRTD, RTMRs, TD attributes, REPORTDATA,
	// TEE_TCB_SVN, ... Each zero field (each zero RTMR) takes its value
	// from DefaultBody, unless ExactBody is set. TEETCBSVN2 and
	// MRServiceTD exist only in a TD 1.5 body and are dropped otherwise.
	// TEETCBSVN below the platform's matches a lower TCB level of the
	// collateral; a non-zero MRSignerSEAM or MRServiceTD is refused by
	// DCAP verifiers.
	Body tdx.TDReport
	// ExactBody uses Body as is, zero fields included (for example TD
	// attributes without SEPT_VE_DISABLE, or a zero TEE_TCB_SVN).
	ExactBody bool
}

// MintQuote mints a TDX quote with the chosen version, body type and TD
// report, signed by the test Quoting Enclave and carrying the test PCK
// chain. Unlike Quote, it measures no event log: RTMR3 is whatever Body
// says (DefaultTD's replay if zero).
func (a *Authority) MintQuote(opts QuoteOptions) ([]byte, error) {
	// Checked here so that the conversion to uint16 below cannot wrap a
	// wild value onto a valid one; testpki checks the rest.
	if opts.Version != 0 && opts.Version != 4 && opts.Version != 5 {
		return nil, fmt.Errorf("ratlstest: MintQuote: quote version %d, want 4 or 5", opts.Version)
	}
	body := opts.Body
	if !opts.ExactBody {
		body = withDefaultFields(body, a.DefaultBody())
	}
	q, err := a.pki.MintQuote(testpki.QuoteOptions{Version: uint16(opts.Version), BodyType: opts.BodyType, Body: &body})
	if err != nil {
		return nil, fmt.Errorf("ratlstest: MintQuote: %w", err)
	}
	return q, nil
}

// withDefaultFields returns b with each zero field replaced by d's.
func withDefaultFields(b, d tdx.TDReport) tdx.TDReport {
	or(&b.TEETCBSVN, d.TEETCBSVN)
	or(&b.MRSEAM, d.MRSEAM)
	or(&b.MRSignerSEAM, d.MRSignerSEAM)
	or(&b.SEAMAttributes, d.SEAMAttributes)
	or(&b.TDAttributes, d.TDAttributes)
	or(&b.XFAM, d.XFAM)
	or(&b.MRTD, d.MRTD)
	or(&b.MRConfigID, d.MRConfigID)
	or(&b.MROwner, d.MROwner)
	or(&b.MROwnerConfig, d.MROwnerConfig)
	for i := range b.RTMR {
		or(&b.RTMR[i], d.RTMR[i])
	}
	or(&b.ReportData, d.ReportData)
	or(&b.TEETCBSVN2, d.TEETCBSVN2)
	or(&b.MRServiceTD, d.MRServiceTD)
	return b
}

// or sets *v to def if *v is the zero value.
func or[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}
