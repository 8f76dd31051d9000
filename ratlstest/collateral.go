package ratlstest

import (
	"time"

	"github.com/teesql/ratls/dcap"
	"github.com/teesql/ratls/internal/testpki"
	"github.com/teesql/ratls/tdx"
)

// CollateralOptions selects the collateral an Authority issues. The zero
// value is collateral under which the authority's quotes are UpToDate,
// issued a day before the authority's Now and valid for 30 days. Start
// overrides from the authority's defaults (TCBLevels, QEIdentity,
// TDXModuleIdentities) and change what the test needs.
type CollateralOptions struct {
	// TCBStatus is the status of the TCB level the platform matches, when
	// TCBLevels is nil. Empty: UpToDate.
	TCBStatus tdx.TCBStatus
	// AdvisoryIDs are that level's advisories (for example
	// "INTEL-SA-00837"), when TCBLevels is nil.
	AdvisoryIDs []string
	// TCBLevels replaces the levels of the TCB info, highest first as
	// Intel orders them: a verifier rates the platform by the first level
	// it reaches. Nil: Authority.TCBLevels() with TCBStatus and
	// AdvisoryIDs applied to the first. An empty non-nil slice writes no
	// level at all (malformed collateral).
	TCBLevels []TCBLevel
	// TDXModule is the expected identity of a TDX module of major version
	// 0 (TEE_TCB_SVN[1] == 0). Nil: DefaultTDXModule().
	TDXModule *TDXModule
	// TDXModuleIdentities replaces the identities and TCB levels of TDX
	// modules of major version 1 and later, which the authority's quotes
	// carry. Nil: Authority.TDXModuleIdentities(). An empty non-nil slice
	// writes none, so no module of version 1 or later matches.
	TDXModuleIdentities []TDXModuleIdentity
	// QEIdentity replaces the expected Quoting Enclave identity and its
	// TCB levels. Nil: Authority.QEIdentity(), which matches the test QE.
	QEIdentity *QEIdentity
	// FMSPC is the fmspc the TCB info is for (hex). Empty: the platform's,
	// Authority.FMSPC(). Another value makes it collateral for another
	// platform family.
	FMSPC string
	// LowercaseFMSPC writes the FMSPC in lower case, as some PCCS do.
	LowercaseFMSPC bool
	// IssueDate is the issue date of the TCB info and QE identity and the
	// thisUpdate of both CRLs. Zero: a day before the authority's Now. A
	// verifier refuses the collateral before it (not yet valid).
	IssueDate time.Time
	// NextUpdate is the nextUpdate of the TCB info, QE identity and PCK
	// CRL. Zero: IssueDate + 30 days. A verifier refuses the collateral
	// from then on (expired).
	NextUpdate time.Time
	// RootCRLNextUpdate is the nextUpdate of the root CA CRL. Zero:
	// IssueDate + 365 days.
	RootCRLNextUpdate time.Time
	// Expired issues collateral that expired 30 days before Now, issued
	// 60 days before it. It overrides the three dates above.
	Expired bool
	// RevokePCK lists the platform's PCK certificate in the PCK CRL.
	RevokePCK bool
	// RevokePCKCA lists the PCK CA certificate in the root CA CRL.
	RevokePCKCA bool
	// RevokeTCBSigning lists the TCB signing certificate, which signs the
	// TCB info and QE identity, in the root CA CRL.
	RevokeTCBSigning bool
}

// TCBLevel is a level of the TCB info: a platform whose SGX TCB components
// (CPUSVN of the PCK certificate), PCE SVN and TDX TCB components
// (TEE_TCB_SVN of the quote) all reach these values is rated Status.
// Verifiers skip TDX components 0 and 1 when TEE_TCB_SVN[1] is not zero:
// the TDX module identity rates them.
type TCBLevel struct {
	SGXComponents [16]byte
	PCESVN        uint16
	TDXComponents [16]byte
	// Date is the tcbDate. Zero: 90 days before the authority's Now, at
	// midnight UTC.
	Date        time.Time
	Status      tdx.TCBStatus
	AdvisoryIDs []string
}

// SVNLevel is a TCB level keyed by one SVN: a level of the QE identity
// (the QE's ISVSVN) or of a TDX module identity (TEE_TCB_SVN[0]). An SVN
// reaching no level is refused by verifiers.
type SVNLevel struct {
	ISVSVN uint16
	// Date is the tcbDate. Zero: as for TCBLevel.
	Date        time.Time
	Status      tdx.TCBStatus
	AdvisoryIDs []string
}

// TDXModule is an expected TDX module (SEAM) identity: a quote matches
// when its MRSIGNERSEAM equals MRSigner and its SEAMATTRIBUTES masked with
// AttributesMask equal Attributes.
type TDXModule struct {
	MRSigner       [48]byte
	Attributes     [8]byte
	AttributesMask [8]byte
}

// TDXModuleIdentity is the identity and TCB levels of the TDX modules of
// one major version N, whose ID is "TDX_" and two upper-case hex digits
// of N (TEE_TCB_SVN[1]).
type TDXModuleIdentity struct {
	ID string
	TDXModule
	TCBLevels []SVNLevel
}

// QEIdentity is the expected identity of the Quoting Enclave: the QE
// report must match MRSigner, ISVProdID, MiscSelect and Attributes (both
// under their masks), and its ISVSVN is rated by TCBLevels. MiscSelect is
// the value of the report's 32-bit field; Attributes and MRSigner are the
// report's bytes.
type QEIdentity struct {
	MiscSelect     uint32
	MiscSelectMask uint32
	Attributes     [16]byte
	AttributesMask [16]byte
	MRSigner       [32]byte
	ISVProdID      uint16
	TCBLevels      []SVNLevel
}

// DefaultTDXModule returns the identity of Intel's TDX module: zero
// MRSIGNER and attributes, every attribute bit compared.
func DefaultTDXModule() TDXModule { return TDXModule(testpki.DefaultTDXModule()) }

// TCBLevels returns the default TCB levels: an UpToDate level equal to the
// platform's TCB, then a catch-all OutOfDate level with advisory
// INTEL-SA-00837.
func (a *Authority) TCBLevels() []TCBLevel {
	return convert(a.pki.TCBLevels(), func(l testpki.TCBLevel) TCBLevel { return TCBLevel(l) })
}

// TDXModuleIdentities returns the default TDX module identities: Intel's
// module of the platform's major version, its SVN UpToDate and a
// catch-all OutOfDate level at SVN 0.
func (a *Authority) TDXModuleIdentities() []TDXModuleIdentity {
	return convert(a.pki.TDXModuleIdentities(), func(id testpki.TDXModuleIdentity) TDXModuleIdentity {
		return TDXModuleIdentity{ID: id.ID, TDXModule: TDXModule(id.TDXModule), TCBLevels: svnLevelsOut(id.TCBLevels)}
	})
}

// QEIdentity returns the QE identity matching the test Quoting Enclave:
// its ISVSVN UpToDate and a catch-all OutOfDate level at ISVSVN 0.
func (a *Authority) QEIdentity() QEIdentity {
	id := a.pki.QEIdentity()
	return QEIdentity{
		MiscSelect: id.MiscSelect, MiscSelectMask: id.MiscSelectMask,
		Attributes: id.Attributes, AttributesMask: id.AttributesMask,
		MRSigner: id.MRSigner, ISVProdID: id.ISVProdID,
		TCBLevels: svnLevelsOut(id.TCBLevels),
	}
}

// Collateral issues collateral for the authority's quotes in the
// QuoteCollateralV3 interchange format, for
// dcap.Verifier.VerifyWithCollateral or a PCCS. It is signed by the test
// PKI whatever the options: wrong contents are authentic, so verifiers
// judge them rather than refuse a signature.
func (a *Authority) Collateral(opts CollateralOptions) (*dcap.Collateral, error) {
	o := testpki.CollateralOptions{
		TCBStatus:         opts.TCBStatus,
		AdvisoryIDs:       opts.AdvisoryIDs,
		TCBLevels:         convert(opts.TCBLevels, func(l TCBLevel) testpki.TCBLevel { return testpki.TCBLevel(l) }),
		FMSPC:             opts.FMSPC,
		LowercaseFMSPC:    opts.LowercaseFMSPC,
		IssueDate:         opts.IssueDate,
		NextUpdate:        opts.NextUpdate,
		RootCRLNextUpdate: opts.RootCRLNextUpdate,
		Expired:           opts.Expired,
		RevokePCK:         opts.RevokePCK,
		RevokePCKCA:       opts.RevokePCKCA,
		RevokeTCBSigning:  opts.RevokeTCBSigning,
		TDXModuleIdentities: convert(opts.TDXModuleIdentities, func(id TDXModuleIdentity) testpki.TDXModuleIdentity {
			return testpki.TDXModuleIdentity{ID: id.ID, TDXModule: testpki.TDXModule(id.TDXModule), TCBLevels: svnLevelsIn(id.TCBLevels)}
		}),
	}
	if opts.TDXModule != nil {
		m := testpki.TDXModule(*opts.TDXModule)
		o.TDXModule = &m
	}
	if id := opts.QEIdentity; id != nil {
		o.QEIdentity = &testpki.QEIdentity{
			MiscSelect: id.MiscSelect, MiscSelectMask: id.MiscSelectMask,
			Attributes: id.Attributes, AttributesMask: id.AttributesMask,
			MRSigner: id.MRSigner, ISVProdID: id.ISVProdID,
			TCBLevels: svnLevelsIn(id.TCBLevels),
		}
	}
	return a.pki.Collateral(o)
}

func svnLevelsOut(l []testpki.SVNLevel) []SVNLevel {
	return convert(l, func(l testpki.SVNLevel) SVNLevel { return SVNLevel(l) })
}

func svnLevelsIn(l []SVNLevel) []testpki.SVNLevel {
	return convert(l, func(l SVNLevel) testpki.SVNLevel { return testpki.SVNLevel(l) })
}

// convert maps s through f, keeping nil apart from empty: the options give
// them different meanings (default, none).
func convert[S, D any](s []S, f func(S) D) []D {
	if s == nil {
		return nil
	}
	out := make([]D, 0, len(s))
	for _, v := range s {
		out = append(out, f(v))
	}
	return out
}
