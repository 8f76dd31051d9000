package dcap

import "errors"

// Sentinel errors, one per stage at which verification can fail. Every
// error returned by this package wraps exactly one of them (ErrFetch errors
// also wrap the underlying cause, such as context.DeadlineExceeded), except
// that VerifyWithCollateral returns ctx.Err() as is when called with a
// context that is already done.
var (
	// ErrMalformedQuote: the quote does not follow Intel's layout.
	ErrMalformedQuote = errors.New("dcap: malformed quote")
	// ErrUnsupportedQuote: a well-formed quote of a kind this package does
	// not verify (not TDX, not ECDSA P-256, not version 4 or 5).
	ErrUnsupportedQuote = errors.New("dcap: unsupported quote")
	// ErrPCKChain: the PCK certificate chain carried in the quote is
	// malformed, does not chain to the trusted root, or is outside its
	// validity period.
	ErrPCKChain = errors.New("dcap: invalid PCK certificate chain")
	// ErrRevoked: a certificate of the PCK chain or of a collateral issuer
	// chain is listed in a CRL.
	ErrRevoked = errors.New("dcap: certificate revoked")
	// ErrQEReportSignature: the QE report is not signed by the PCK key.
	ErrQEReportSignature = errors.New("dcap: invalid QE report signature")
	// ErrQEBinding: the QE report does not vouch for the attestation key
	// (REPORTDATA is not SHA-256(attestation key || QE auth data) || zeros).
	ErrQEBinding = errors.New("dcap: QE report does not bind the attestation key")
	// ErrQuoteSignature: the quote header and body are not signed by the
	// attestation key.
	ErrQuoteSignature = errors.New("dcap: invalid quote signature")
	// ErrQEIdentity: the quoting enclave does not match Intel's QE identity
	// (MRSIGNER, ISVPRODID, MISCSELECT, ATTRIBUTES, or an ISVSVN below every
	// listed level).
	ErrQEIdentity = errors.New("dcap: QE identity mismatch")
	// ErrFMSPCMismatch: the TCB info is for another platform family than
	// the PCK certificate.
	ErrFMSPCMismatch = errors.New("dcap: FMSPC mismatch")
	// ErrCollateralMismatch: the collateral is well signed but for another
	// kind of quote (PCE ID, PCK CA type, TEE).
	ErrCollateralMismatch = errors.New("dcap: collateral does not match the quote")
	// ErrSEAMSigner: MRSIGNERSEAM is not zero (the TDX module is not
	// Intel's), or MRSERVICETD of a TD 1.5 body is not zero.
	ErrSEAMSigner = errors.New("dcap: TDX module not signed by Intel")
	// ErrTDXModule: the TDX module (MRSIGNERSEAM, SEAMATTRIBUTES, module
	// version) matches no TDX module identity of the TCB info.
	ErrTDXModule = errors.New("dcap: TDX module identity mismatch")
	// ErrTCBLevelNotFound: the platform's SVNs are below every TCB level
	// of the TCB info (Intel's TCB_NOT_SUPPORTED).
	ErrTCBLevelNotFound = errors.New("dcap: no matching TCB level")
	// ErrCollateralSignature: TCB info, QE identity or a CRL is not signed
	// by a certificate chaining to the trusted root.
	ErrCollateralSignature = errors.New("dcap: invalid collateral signature")
	// ErrCollateralExpired: collateral, a CRL or a collateral signing
	// certificate is past its nextUpdate / NotAfter.
	ErrCollateralExpired = errors.New("dcap: collateral expired")
	// ErrCollateralNotYetValid: collateral, a CRL or a collateral signing
	// certificate was issued after the verification time.
	ErrCollateralNotYetValid = errors.New("dcap: collateral not yet valid")
	// ErrMalformedCollateral: collateral that cannot be parsed or is not
	// TDX TCB info v3 / TD_QE identity v2.
	ErrMalformedCollateral = errors.New("dcap: malformed collateral")
	// ErrFetch: collateral could not be fetched from the collateral
	// source. The message names the URL and the cause.
	ErrFetch = errors.New("dcap: collateral fetch failed")
)
