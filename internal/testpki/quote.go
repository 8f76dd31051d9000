package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"

	"github.com/teesql/ratls/tdx"
)

// Defect breaks a minted quote in one precise way, for negative tests.
type Defect int

const (
	// NoDefect mints a quote that verifies.
	NoDefect Defect = iota
	// BadQuoteSignature: the attestation key's signature over header and
	// body does not verify.
	BadQuoteSignature
	// BadQEReportSignature: the QE report signature does not verify under
	// the PCK certificate's key.
	BadQEReportSignature
	// UnboundAttestationKey: the quote carries, and is validly signed by, a
	// fresh attestation key that the QE report does not vouch for (its
	// REPORTDATA hashes the authority's key). A verifier that skips the QE
	// binding check accepts it.
	UnboundAttestationKey
)

// QuoteOptions configures MintQuote. The zero QuoteOptions mint a v4 quote
// with DefaultBody that verifies against the default collateral.
type QuoteOptions struct {
	// Version is 4 or 5. Zero: 4.
	Version uint16
	// BodyType is, for version 5, tdx.BodyTypeTD10 or tdx.BodyTypeTD15.
	// Zero: tdx.BodyTypeTD10. Version 4 allows only TD10.
	BodyType uint16
	// Body is the TD report. Nil: DefaultBody(). Start from DefaultBody
	// and change what the test needs, so that the TCB fields keep matching
	// the default collateral. TEETCBSVN2 and MRServiceTD are dropped
	// unless the body is TD 1.5.
	Body *tdx.TDReport
	// PCKChainPEM replaces the certification chain the quote carries.
	// Nil: PCKChainPEM() followed by a NUL byte, as Intel's quote
	// generation writes it.
	PCKChainPEM []byte
	// Defect breaks the quote. Zero: NoDefect.
	Defect Defect
}

// DefaultBody returns a realistic TD 1.0/1.5 report for this authority's
// platform: TEE_TCB_SVN (and TEE_TCB_SVN2) = the authority's TEETCBSVN,
// MRSIGNERSEAM and SEAM attributes zero (Intel's TDX module), a derived
// MRSEAM and MRTD, TD attributes with only SEPT_VE_DISABLE set (not debug),
// XFAM 0x602e7, everything else zero.
func (a *Authority) DefaultBody() tdx.TDReport {
	return tdx.TDReport{
		TEETCBSVN:    a.teeTCBSVN,
		MRSEAM:       [48]byte(derive("MRSEAM", 48)),
		TDAttributes: [8]byte{3: 0x10}, // bit 28: SEPT_VE_DISABLE
		XFAM:         [8]byte{0xe7, 0x02, 0x06},
		MRTD:         [48]byte(derive("MRTD", 48)),
		TEETCBSVN2:   a.teeTCBSVN,
	}
}

// MintQuote mints a TDX quote signed by the authority's attestation key,
// carrying the authority's QE report and PCK chain.
func (a *Authority) MintQuote(opts QuoteOptions) ([]byte, error) {
	q, err := a.quote(opts)
	if err != nil {
		return nil, err
	}
	return q.Marshal()
}

func (a *Authority) quote(opts QuoteOptions) (*tdx.Quote, error) {
	version, bodyType := opts.Version, opts.BodyType
	if version == 0 {
		version = 4
	}
	if bodyType == 0 {
		bodyType = tdx.BodyTypeTD10
	}
	switch {
	case version != 4 && version != 5:
		return nil, fmt.Errorf("%w: quote version %d, want 4 or 5", ErrOptions, version)
	case bodyType != tdx.BodyTypeTD10 && bodyType != tdx.BodyTypeTD15:
		return nil, fmt.Errorf("%w: body type %d, want %d (TD 1.0) or %d (TD 1.5)", ErrOptions, bodyType, tdx.BodyTypeTD10, tdx.BodyTypeTD15)
	case version == 4 && bodyType != tdx.BodyTypeTD10:
		return nil, fmt.Errorf("%w: a version 4 quote carries only a TD 1.0 body", ErrOptions)
	}
	body := a.DefaultBody()
	if opts.Body != nil {
		body = *opts.Body
	}
	if bodyType == tdx.BodyTypeTD10 {
		body.TEETCBSVN2, body.MRServiceTD = [16]byte{}, [48]byte{}
	}
	chain := opts.PCKChainPEM
	if chain == nil {
		chain = append(a.PCKChainPEM(), 0)
	}
	var userData [20]byte
	copy(userData[:], derive("QE identity", 16))

	q := &tdx.Quote{
		Header: tdx.Header{
			Version:       version,
			AttestKeyType: tdx.AttestKeyTypeECDSA,
			TEEType:       tdx.TEETypeTDX,
			QEVendorID:    intelQEVendorID,
			UserData:      userData,
		},
		BodyType:          bodyType,
		Body:              body,
		QEReport:          a.qeReport,
		QEReportSignature: a.qeReportSig,
		QEAuthData:        append([]byte(nil), a.qe.AuthData...),
		PCKChainPEM:       chain,
	}
	key := a.attestKey
	if opts.Defect == UnboundAttestationKey {
		var err error
		if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return nil, fmt.Errorf("testpki: generating key: %w", err)
		}
	}
	copy(q.AttestKey[:], attestKeyBytes(&key.PublicKey))
	sig, err := signRaw(key, q.SignedBytes())
	if err != nil {
		return nil, err
	}
	q.Signature = sig
	switch opts.Defect {
	case NoDefect, UnboundAttestationKey:
	case BadQuoteSignature:
		q.Signature[63] ^= 0x01
	case BadQEReportSignature:
		q.QEReportSignature[63] ^= 0x01
	default:
		return nil, fmt.Errorf("%w: unknown defect %d", ErrOptions, opts.Defect)
	}
	return q, nil
}
