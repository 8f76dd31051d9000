package testpki

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/teesql/ratls/dcap"
	"github.com/teesql/ratls/tdx"
)

// TCBLevel is one level of the TCB info: a platform whose SGX components,
// PCE SVN and TDX components are all at least these values has this status.
type TCBLevel struct {
	SGXComponents [16]byte // sgxtcbcomponents[i].svn
	PCESVN        uint16
	TDXComponents [16]byte // tdxtcbcomponents[i].svn
	// Date is the tcbDate. Zero: 90 days before the authority's Now, at
	// midnight UTC.
	Date        time.Time
	Status      tdx.TCBStatus
	AdvisoryIDs []string
}

// SVNLevel is a TCB level keyed by a single ISV SVN: the levels of the QE
// identity and of TDX module identities.
type SVNLevel struct {
	ISVSVN uint16
	// Date is the tcbDate. Zero: as for TCBLevel.
	Date        time.Time
	Status      tdx.TCBStatus
	AdvisoryIDs []string
}

// TDXModule is the expected identity of the TDX module (the SEAM): a quote
// matches when MRSIGNERSEAM == MRSigner and SEAMATTRIBUTES & AttributesMask
// == Attributes.
type TDXModule struct {
	MRSigner       [48]byte
	Attributes     [8]byte
	AttributesMask [8]byte
}

// TDXModuleIdentity is an entry of tdxModuleIdentities: the levels of the
// TDX module with major version N, ID "TDX_" + two hex digits of N (TEE
// TCB SVN byte 1).
type TDXModuleIdentity struct {
	ID string
	TDXModule
	TCBLevels []SVNLevel
}

// QEIdentity is the expected identity of the Quoting Enclave. MiscSelect
// and its mask are written as the 4 bytes the report carries
// (little-endian), Attributes and MRSigner as the report's bytes.
type QEIdentity struct {
	MiscSelect     uint32
	MiscSelectMask uint32
	Attributes     [16]byte
	AttributesMask [16]byte
	MRSigner       [32]byte
	ISVProdID      uint16
	TCBLevels      []SVNLevel
}

// CollateralOptions configures Collateral. The zero CollateralOptions give
// collateral under which the authority's default quotes are UpToDate,
// issued a day before Now and valid for 30 days.
type CollateralOptions struct {
	// TCBLevels replaces the TCB info's levels (highest first, as Intel
	// orders them). Nil: TCBLevels() with TCBStatus and AdvisoryIDs applied.
	TCBLevels []TCBLevel
	// TCBStatus, when TCBLevels is nil, is the status of the level the
	// platform matches. Empty: UpToDate.
	TCBStatus tdx.TCBStatus
	// AdvisoryIDs, when TCBLevels is nil, are the advisories of the level
	// the platform matches.
	AdvisoryIDs []string
	// TDXModule is the expected TDX module. Nil: DefaultTDXModule().
	TDXModule *TDXModule
	// TDXModuleIdentities replaces the TDX module identities. Nil:
	// TDXModuleIdentities(); an empty non-nil slice writes [].
	TDXModuleIdentities []TDXModuleIdentity
	// QEIdentity is the expected QE. Nil: QEIdentity(), which matches.
	QEIdentity *QEIdentity
	// FMSPC is the fmspc text of the TCB info. Empty: the platform's FMSPC
	// in upper case, as Intel PCS writes it.
	FMSPC string
	// LowercaseFMSPC writes the fmspc in lower case, as some PCCS do.
	LowercaseFMSPC bool
	// TCBEvaluationDataNumber of TCB info and QE identity. Zero: 17.
	TCBEvaluationDataNumber int
	// IssueDate of TCB info, QE identity and CRLs. Zero: Now - 24h.
	IssueDate time.Time
	// NextUpdate of TCB info, QE identity and PCK CRL. Zero: IssueDate +
	// 30 days.
	NextUpdate time.Time
	// RootCRLNextUpdate of the root CA CRL. Zero: IssueDate + 365 days
	// (NextUpdate if Expired).
	RootCRLNextUpdate time.Time
	// Expired issues everything 60 days before Now, expiring 30 days
	// before Now; it overrides the dates above.
	Expired bool
	// RevokePCK lists the PCK leaf in the PCK CRL.
	RevokePCK bool
	// RevokePCKCA lists the PCK CA in the root CA CRL.
	RevokePCKCA bool
	// RevokeTCBSigning lists the TCB signing certificate in the root CA CRL.
	RevokeTCBSigning bool
	// RewriteTCBInfo, if set, rewrites the TCB info JSON before it is
	// signed: the result is signed and served as is, for tests of
	// malformed or unexpected but authentic collateral.
	RewriteTCBInfo func(tcbInfo []byte) []byte
	// RewriteQEIdentity does the same for the QE identity JSON.
	RewriteQEIdentity func(enclaveIdentity []byte) []byte
}

// TCBLevels returns the default TCB levels: one UpToDate level equal to the
// platform (CPUSVN, PCESVN, TEETCBSVN) and a catch-all OutOfDate level
// below it with an advisory.
func (a *Authority) TCBLevels() []TCBLevel {
	return []TCBLevel{
		{SGXComponents: a.cpuSVN, PCESVN: a.pceSVN, TDXComponents: a.teeTCBSVN, Status: tdx.TCBUpToDate},
		{Date: a.tcbDate().AddDate(-2, 0, 0), Status: tdx.TCBOutOfDate, AdvisoryIDs: []string{"INTEL-SA-00837"}},
	}
}

// DefaultTDXModule returns Intel's TDX module identity: zero MRSIGNER, zero
// attributes, all attribute bits compared.
func DefaultTDXModule() TDXModule {
	return TDXModule{AttributesMask: [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}
}

// TDXModuleIdentities returns the default TDX module identities: one for
// the platform's module major version (TEETCBSVN[1]) whose SVN
// (TEETCBSVN[0]) is UpToDate, and an OutOfDate level at SVN 0.
func (a *Authority) TDXModuleIdentities() []TDXModuleIdentity {
	return []TDXModuleIdentity{{
		ID:        fmt.Sprintf("TDX_%02X", a.teeTCBSVN[1]),
		TDXModule: DefaultTDXModule(),
		TCBLevels: []SVNLevel{
			{ISVSVN: uint16(a.teeTCBSVN[0]), Status: tdx.TCBUpToDate},
			{ISVSVN: 0, Date: a.tcbDate().AddDate(-1, 0, 0), Status: tdx.TCBOutOfDate},
		},
	}}
}

// QEIdentity returns the QE identity matching the authority's QE: its
// MRSIGNER, ISVPRODID, MISCSELECT (all bits compared) and ATTRIBUTES
// (compared under Intel's mask FBFFFFFFFFFFFFFF0000000000000000); its
// ISVSVN UpToDate and a catch-all OutOfDate level at ISVSVN 0.
func (a *Authority) QEIdentity() QEIdentity {
	mask := [16]byte{0xfb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	var attrs [16]byte
	for i := range attrs {
		attrs[i] = a.qe.Attributes[i] & mask[i]
	}
	return QEIdentity{
		MiscSelect:     a.qe.MiscSelect,
		MiscSelectMask: 0xffffffff,
		Attributes:     attrs,
		AttributesMask: mask,
		MRSigner:       a.qe.MRSigner,
		ISVProdID:      a.qe.ISVProdID,
		TCBLevels: []SVNLevel{
			{ISVSVN: a.qe.ISVSVN, Status: tdx.TCBUpToDate},
			{ISVSVN: 0, Date: a.tcbDate().AddDate(-1, 0, 0), Status: tdx.TCBOutOfDate},
		},
	}
}

func (a *Authority) tcbDate() time.Time {
	return a.now.Truncate(24*time.Hour).AddDate(0, 0, -90)
}

// Collateral returns signed collateral for the authority's platform in the
// QuoteCollateralV3 format: TCB info and QE identity signed by the TCB
// signing key over their exact JSON text, the PCK CRL signed by the PCK
// CA, the root CA CRL signed by the root, and the issuer chains.
func (a *Authority) Collateral(opts CollateralOptions) (*dcap.Collateral, error) {
	issue, next, rootNext := opts.IssueDate, opts.NextUpdate, opts.RootCRLNextUpdate
	if issue.IsZero() {
		issue = a.now.Add(-24 * time.Hour)
	}
	if next.IsZero() {
		next = issue.AddDate(0, 0, 30)
	}
	if rootNext.IsZero() {
		rootNext = issue.AddDate(0, 0, 365)
	}
	if opts.Expired {
		issue, next = a.now.AddDate(0, 0, -60), a.now.AddDate(0, 0, -30)
		rootNext = next
	}
	evalNum := opts.TCBEvaluationDataNumber
	if evalNum == 0 {
		evalNum = defaultTCBEvalNum
	}

	tcbInfo, err := a.tcbInfoJSON(opts, issue, next, evalNum)
	if err != nil {
		return nil, err
	}
	if opts.RewriteTCBInfo != nil {
		tcbInfo = opts.RewriteTCBInfo(tcbInfo)
	}
	qeIdentity, err := a.qeIdentityJSON(opts, issue, next, evalNum)
	if err != nil {
		return nil, err
	}
	if opts.RewriteQEIdentity != nil {
		qeIdentity = opts.RewriteQEIdentity(qeIdentity)
	}
	tcbSig, err := signRaw(a.tcbSigningKey, tcbInfo)
	if err != nil {
		return nil, err
	}
	qeSig, err := signRaw(a.tcbSigningKey, qeIdentity)
	if err != nil {
		return nil, err
	}

	var pckRevoked, rootRevoked []*big.Int
	if opts.RevokePCK {
		pckRevoked = append(pckRevoked, a.pck.SerialNumber)
	}
	if opts.RevokePCKCA {
		rootRevoked = append(rootRevoked, a.pckCA.SerialNumber)
	}
	if opts.RevokeTCBSigning {
		rootRevoked = append(rootRevoked, a.tcbSigning.SerialNumber)
	}
	pckCRL, err := a.crl(a.pckCA, a.pckCAKey, issue, next, pckRevoked)
	if err != nil {
		return nil, err
	}
	rootCRL, err := a.crl(a.root, a.rootKey, issue, rootNext, rootRevoked)
	if err != nil {
		return nil, err
	}

	signingChain := string(pemChain(a.tcbSigning, a.root))
	return &dcap.Collateral{
		PCKCRLIssuerChain:     string(pemChain(a.pckCA, a.root)),
		RootCACRL:             hex.EncodeToString(rootCRL),
		PCKCRL:                hex.EncodeToString(pckCRL),
		TCBInfoIssuerChain:    signingChain,
		TCBInfo:               string(tcbInfo),
		TCBInfoSignature:      hex.EncodeToString(tcbSig[:]),
		QEIdentityIssuerChain: signingChain,
		QEIdentity:            string(qeIdentity),
		QEIdentitySignature:   hex.EncodeToString(qeSig[:]),
	}, nil
}

// JSON shapes, with fields in the order Intel PCS writes them.
type (
	tcbInfoDoc struct {
		ID                      string             `json:"id"`
		Version                 int                `json:"version"`
		IssueDate               string             `json:"issueDate"`
		NextUpdate              string             `json:"nextUpdate"`
		FMSPC                   string             `json:"fmspc"`
		PCEID                   string             `json:"pceId"`
		TCBType                 int                `json:"tcbType"`
		TCBEvaluationDataNumber int                `json:"tcbEvaluationDataNumber"`
		TDXModule               tdxModuleDoc       `json:"tdxModule"`
		TDXModuleIdentities     []tdxModuleIDDoc   `json:"tdxModuleIdentities"`
		TCBLevels               []tcbLevelDoc[tcb] `json:"tcbLevels"`
	}
	tdxModuleDoc struct {
		MRSigner       string `json:"mrsigner"`
		Attributes     string `json:"attributes"`
		AttributesMask string `json:"attributesMask"`
	}
	tdxModuleIDDoc struct {
		ID             string                `json:"id"`
		MRSigner       string                `json:"mrsigner"`
		Attributes     string                `json:"attributes"`
		AttributesMask string                `json:"attributesMask"`
		TCBLevels      []tcbLevelDoc[svnTCB] `json:"tcbLevels"`
	}
	tcbLevelDoc[T any] struct {
		TCB         T        `json:"tcb"`
		TCBDate     string   `json:"tcbDate"`
		TCBStatus   string   `json:"tcbStatus"`
		AdvisoryIDs []string `json:"advisoryIDs,omitempty"`
	}
	tcb struct {
		SGX    []component `json:"sgxtcbcomponents"`
		PCESVN uint16      `json:"pcesvn"`
		TDX    []component `json:"tdxtcbcomponents"`
	}
	svnTCB struct {
		ISVSVN uint16 `json:"isvsvn"`
	}
	component struct {
		SVN      byte   `json:"svn"`
		Category string `json:"category,omitempty"`
		Type     string `json:"type,omitempty"`
	}
	qeIdentityDoc struct {
		ID                      string                `json:"id"`
		Version                 int                   `json:"version"`
		IssueDate               string                `json:"issueDate"`
		NextUpdate              string                `json:"nextUpdate"`
		TCBEvaluationDataNumber int                   `json:"tcbEvaluationDataNumber"`
		MiscSelect              string                `json:"miscselect"`
		MiscSelectMask          string                `json:"miscselectMask"`
		Attributes              string                `json:"attributes"`
		AttributesMask          string                `json:"attributesMask"`
		MRSigner                string                `json:"mrsigner"`
		ISVProdID               uint16                `json:"isvprodid"`
		TCBLevels               []tcbLevelDoc[svnTCB] `json:"tcbLevels"`
	}
)

// Component labels Intel attaches to the first TCB components (purely
// descriptive; verifiers compare SVNs only).
var (
	sgxLabels = map[int]component{
		0: {Category: "BIOS", Type: "Early Microcode Update"},
		1: {Category: "OS/VMM", Type: "SGX Late Microcode Update"},
		2: {Category: "OS/VMM", Type: "TXT SINIT"},
		3: {Category: "BIOS"}, 4: {Category: "BIOS"}, 5: {Category: "BIOS"},
		7: {Category: "OS/VMM", Type: "SEAMLDR ACM"},
	}
	tdxLabels = map[int]component{
		0: {Category: "OS/VMM", Type: "TDX Module"},
		1: {Category: "OS/VMM", Type: "TDX Module"},
		2: {Category: "OS/VMM", Type: "TDX Late Microcode Update"},
	}
)

func components(svns [16]byte, labels map[int]component) []component {
	out := make([]component, len(svns))
	for i, svn := range svns {
		out[i] = labels[i]
		out[i].SVN = svn
	}
	return out
}

func (a *Authority) tcbInfoJSON(opts CollateralOptions, issue, next time.Time, evalNum int) ([]byte, error) {
	levels := opts.TCBLevels
	if levels == nil {
		levels = a.TCBLevels()
		if opts.TCBStatus != "" {
			levels[0].Status = opts.TCBStatus
		}
		levels[0].AdvisoryIDs = opts.AdvisoryIDs
	}
	module := DefaultTDXModule()
	if opts.TDXModule != nil {
		module = *opts.TDXModule
	}
	ids := opts.TDXModuleIdentities
	if ids == nil {
		ids = a.TDXModuleIdentities()
	}
	fmspc := opts.FMSPC
	if fmspc == "" {
		fmspc = a.FMSPCHex()
	}
	if opts.LowercaseFMSPC {
		fmspc = strings.ToLower(fmspc)
	}
	doc := tcbInfoDoc{
		ID:                      "TDX",
		Version:                 3,
		IssueDate:               jsonTime(issue),
		NextUpdate:              jsonTime(next),
		FMSPC:                   fmspc,
		PCEID:                   upperHex(a.pceID[:]),
		TCBEvaluationDataNumber: evalNum,
		TDXModule:               moduleDoc(module),
		TDXModuleIdentities:     []tdxModuleIDDoc{},
		TCBLevels:               []tcbLevelDoc[tcb]{},
	}
	for _, id := range ids {
		m := moduleDoc(id.TDXModule)
		doc.TDXModuleIdentities = append(doc.TDXModuleIdentities, tdxModuleIDDoc{
			ID: id.ID, MRSigner: m.MRSigner, Attributes: m.Attributes, AttributesMask: m.AttributesMask,
			TCBLevels: a.svnLevels(id.TCBLevels),
		})
	}
	for _, l := range levels {
		doc.TCBLevels = append(doc.TCBLevels, tcbLevelDoc[tcb]{
			TCB: tcb{
				SGX:    components(l.SGXComponents, sgxLabels),
				PCESVN: l.PCESVN,
				TDX:    components(l.TDXComponents, tdxLabels),
			},
			TCBDate:     a.jsonTCBDate(l.Date),
			TCBStatus:   string(l.Status),
			AdvisoryIDs: l.AdvisoryIDs,
		})
	}
	return marshalJSON("TCB info", doc)
}

func (a *Authority) qeIdentityJSON(opts CollateralOptions, issue, next time.Time, evalNum int) ([]byte, error) {
	id := a.QEIdentity()
	if opts.QEIdentity != nil {
		id = *opts.QEIdentity
	}
	var misc, miscMask [4]byte
	binary.LittleEndian.PutUint32(misc[:], id.MiscSelect)
	binary.LittleEndian.PutUint32(miscMask[:], id.MiscSelectMask)
	doc := qeIdentityDoc{
		ID:                      "TD_QE",
		Version:                 2,
		IssueDate:               jsonTime(issue),
		NextUpdate:              jsonTime(next),
		TCBEvaluationDataNumber: evalNum,
		MiscSelect:              upperHex(misc[:]),
		MiscSelectMask:          upperHex(miscMask[:]),
		Attributes:              upperHex(id.Attributes[:]),
		AttributesMask:          upperHex(id.AttributesMask[:]),
		MRSigner:                upperHex(id.MRSigner[:]),
		ISVProdID:               id.ISVProdID,
		TCBLevels:               a.svnLevels(id.TCBLevels),
	}
	return marshalJSON("QE identity", doc)
}

func (a *Authority) svnLevels(levels []SVNLevel) []tcbLevelDoc[svnTCB] {
	out := []tcbLevelDoc[svnTCB]{}
	for _, l := range levels {
		out = append(out, tcbLevelDoc[svnTCB]{
			TCB:         svnTCB{ISVSVN: l.ISVSVN},
			TCBDate:     a.jsonTCBDate(l.Date),
			TCBStatus:   string(l.Status),
			AdvisoryIDs: l.AdvisoryIDs,
		})
	}
	return out
}

func moduleDoc(m TDXModule) tdxModuleDoc {
	return tdxModuleDoc{
		MRSigner:       upperHex(m.MRSigner[:]),
		Attributes:     upperHex(m.Attributes[:]),
		AttributesMask: upperHex(m.AttributesMask[:]),
	}
}

func (a *Authority) jsonTCBDate(t time.Time) string {
	if t.IsZero() {
		t = a.tcbDate()
	}
	return jsonTime(t)
}

func jsonTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05Z") }

func upperHex(b []byte) string { return strings.ToUpper(hex.EncodeToString(b)) }

func marshalJSON(what string, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("testpki: encoding %s: %w", what, err)
	}
	return b, nil
}

// crl issues a CRL in Intel's shape: version 2, CRL number 1, authority
// key identifier, revoked entries with reason keyCompromise.
func (a *Authority) crl(issuer *x509.Certificate, key *ecdsa.PrivateKey, thisUpdate, nextUpdate time.Time, revoked []*big.Int) ([]byte, error) {
	tmpl := &x509.RevocationList{
		Number:             big.NewInt(1),
		ThisUpdate:         thisUpdate,
		NextUpdate:         nextUpdate,
		SignatureAlgorithm: x509.ECDSAWithSHA256,
	}
	for _, s := range revoked {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{
			SerialNumber:   s,
			RevocationTime: thisUpdate,
			ReasonCode:     1, // keyCompromise
		})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, issuer, key)
	if err != nil {
		return nil, fmt.Errorf("testpki: issuing CRL of %q: %w", issuer.Subject.CommonName, err)
	}
	return der, nil
}
