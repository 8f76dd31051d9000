package dcap

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/teesql/ratls/tdx"
)

// Collateral is the QuoteCollateralV3 interchange format (dcap-qvl's JSON):
// everything needed to verify quotes of one platform family offline. Its
// fields are kept exactly as Intel signed them; nothing in a Collateral is
// trusted until VerifyWithCollateral has checked it.
//
// Issuer chains are PEM text, signing certificate first, optionally
// followed by the root; each must chain to the verifier's trusted root
// (Intel's SGX Root CA unless Options.TrustedRoot says otherwise), and a
// root carried in a chain must be that very root. Signed bodies are the
// exact JSON text Intel signed: re-encoding them would break the signature.
type Collateral struct {
	// PCKCRLIssuerChain is the PEM chain of the PCK CRL's issuer: the
	// Intel SGX PCK Platform CA (or Processor CA, whichever issued the
	// quote's PCK certificate), then the root. From PCS's
	// SGX-PCK-CRL-Issuer-Chain header.
	PCKCRLIssuerChain string `json:"pck_crl_issuer_chain"`
	// RootCACRL is the root CA's CRL, hex of its DER: it revokes the
	// intermediate CAs and signing certificates of the other chains.
	RootCACRL string `json:"root_ca_crl"`
	// PCKCRL is the PCK CA's CRL, hex of its DER: it revokes PCK
	// certificates, which quotes carry in their certification data.
	PCKCRL string `json:"pck_crl"`
	// TCBInfoIssuerChain is the PEM chain of the TCB info's signer: the
	// Intel SGX TCB Signing certificate, then the root. From PCS's
	// TCB-Info-Issuer-Chain header.
	TCBInfoIssuerChain string `json:"tcb_info_issuer_chain"`
	// TCBInfo is the exact signed JSON text of the "tcbInfo" value of
	// PCS's TDX TCB info response (version 3; ParseTCBInfo reads it): the
	// platform TCB levels of one FMSPC and their statuses.
	TCBInfo string `json:"tcb_info"`
	// TCBInfoSignature is the hex ECDSA P-256 signature (r || s, 64 bytes)
	// of TCBInfo by the first certificate of TCBInfoIssuerChain.
	TCBInfoSignature string `json:"tcb_info_signature"`
	// QEIdentityIssuerChain is the PEM chain of the QE identity's signer
	// (the same TCB Signing certificate, then the root). From PCS's
	// SGX-Enclave-Identity-Issuer-Chain header.
	QEIdentityIssuerChain string `json:"qe_identity_issuer_chain"`
	// QEIdentity is the exact signed JSON text of the "enclaveIdentity"
	// value of PCS's TDX QE identity response (id "TD_QE", version 2;
	// ParseQEIdentity reads it): the identity the quoting enclave's report
	// must match, and its TCB levels by ISVSVN.
	QEIdentity string `json:"qe_identity"`
	// QEIdentitySignature is the hex ECDSA P-256 signature (r || s, 64
	// bytes) of QEIdentity by the first certificate of
	// QEIdentityIssuerChain.
	QEIdentitySignature string `json:"qe_identity_signature"`
}

// HexBytes is a byte string that JSON carries as hex (either case).
type HexBytes []byte

// UnmarshalJSON decodes a JSON string of hex digits.
func (h *HexBytes) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	d, err := hex.DecodeString(s)
	if err != nil {
		return fmt.Errorf("invalid hex %q: %w", s, err)
	}
	*h = d
	return nil
}

// MarshalJSON encodes h as upper-case hex, Intel's spelling.
func (h HexBytes) MarshalJSON() ([]byte, error) {
	return json.Marshal(strings.ToUpper(hex.EncodeToString(h)))
}

// TCBInfo is Intel's TDX TCB info, version 3: the TCB levels of one
// platform family (FMSPC) and the TDX module identities.
type TCBInfo struct {
	// ID is "TDX".
	ID string `json:"id"`
	// Version is 3.
	Version int `json:"version"`
	// IssueDate is when Intel issued this TCB info.
	IssueDate time.Time `json:"issueDate"`
	// NextUpdate is when it expires: past it, the collateral is expired.
	NextUpdate time.Time `json:"nextUpdate"`
	// FMSPC is the platform family, hex in either case.
	FMSPC string `json:"fmspc"`
	// PCEID is the Provisioning Certification Enclave's id, hex.
	PCEID string `json:"pceId"`
	// TCBType says how TCB components are compared (0: SVN by SVN).
	TCBType int `json:"tcbType"`
	// TCBEvaluationDataNumber numbers Intel's TCB recovery events; it
	// grows with each.
	TCBEvaluationDataNumber int `json:"tcbEvaluationDataNumber"`
	// TDXModule is the identity a module of major version 0
	// (TEE_TCB_SVN[1] = 0) must have.
	TDXModule *TDXModule `json:"tdxModule"`
	// TDXModuleIdentities are the identities and TCB levels of modules of
	// later major versions (TDX 1.5 and later), one per version.
	TDXModuleIdentities []TDXModuleIdentity `json:"tdxModuleIdentities,omitempty"`
	// TCBLevels are the platform TCB levels, newest first.
	TCBLevels []TCBLevel `json:"tcbLevels"`
}

// TDXModule is the identity every TDX 1.0 module of the platform must have.
type TDXModule struct {
	// MRSigner is the expected MRSIGNERSEAM of the quote: 48 bytes.
	MRSigner HexBytes `json:"mrsigner"`
	// Attributes is the expected SEAMATTRIBUTES under AttributesMask: 8
	// bytes.
	Attributes HexBytes `json:"attributes"`
	// AttributesMask selects the SEAMATTRIBUTES bits that must match: 8
	// bytes.
	AttributesMask HexBytes `json:"attributesMask"`
}

// TDXModuleIdentity is the identity and TCB levels of one TDX module
// version ("TDX_01", "TDX_03", ...), used when TEE_TCB_SVN[1] is not zero.
type TDXModuleIdentity struct {
	// ID names the module's major version: "TDX_" then TEE_TCB_SVN[1] as
	// two hex digits ("TDX_03"), compared without case.
	ID string `json:"id"`
	TDXModule
	// TCBLevels are the module's TCB levels by ISVSVN, newest first.
	TCBLevels []EnclaveTCBLevel `json:"tcbLevels"`
}

// TCBLevel is one platform TCB level of a TCB info. Levels are listed
// newest first; the first level the platform's SVNs reach applies.
type TCBLevel struct {
	// TCB are the minimum SVNs of the level: the PCK certificate's 16 SGX
	// components and PCESVN, and the quote's 16 TEE_TCB_SVN components.
	TCB struct {
		SGXComponents []TCBComponent `json:"sgxtcbcomponents"` // 16
		PCESVN        uint16         `json:"pcesvn"`
		TDXComponents []TCBComponent `json:"tdxtcbcomponents"` // 16
	} `json:"tcb"`
	// TCBDate is the date of the TCB recovery the level reflects.
	TCBDate time.Time `json:"tcbDate"`
	// TCBStatus is the status of platforms at this level.
	TCBStatus tdx.TCBStatus `json:"tcbStatus"`
	// AdvisoryIDs are the Intel security advisories (INTEL-SA-...) that
	// apply at this level.
	AdvisoryIDs []string `json:"advisoryIDs,omitempty"`
}

// TCBComponent is one SVN of a TCB level.
type TCBComponent struct {
	// SVN is the minimum security version number.
	SVN uint8 `json:"svn"`
	// Category describes the component ("BIOS", "OS/VMM", ...;
	// informative only).
	Category string `json:"category,omitempty"`
	// Type describes the component further (informative only).
	Type string `json:"type,omitempty"`
}

// EnclaveTCBLevel is one TCB level of the QE identity or of a TDX module
// identity, keyed by ISVSVN. Levels are listed newest first.
type EnclaveTCBLevel struct {
	// TCB is the minimum ISVSVN of the level.
	TCB struct {
		ISVSVN uint16 `json:"isvsvn"`
	} `json:"tcb"`
	// TCBDate is the date of the TCB recovery the level reflects.
	TCBDate time.Time `json:"tcbDate"`
	// TCBStatus is the status of enclaves or modules at this level.
	TCBStatus tdx.TCBStatus `json:"tcbStatus"`
	// AdvisoryIDs are the Intel security advisories that apply at this
	// level.
	AdvisoryIDs []string `json:"advisoryIDs,omitempty"`
}

// QEIdentity is Intel's identity of the TD quoting enclave (TD_QE),
// version 2.
type QEIdentity struct {
	// ID is "TD_QE".
	ID string `json:"id"`
	// Version is 2.
	Version int `json:"version"`
	// IssueDate is when Intel issued this identity.
	IssueDate time.Time `json:"issueDate"`
	// NextUpdate is when it expires: past it, the collateral is expired.
	NextUpdate time.Time `json:"nextUpdate"`
	// TCBEvaluationDataNumber numbers Intel's TCB recovery events.
	TCBEvaluationDataNumber int `json:"tcbEvaluationDataNumber"`
	// MiscSelect is the expected MISCSELECT of the QE report under
	// MiscSelectMask: 4 bytes, as the report stores them (little-endian).
	MiscSelect HexBytes `json:"miscselect"`
	// MiscSelectMask selects the MISCSELECT bits that must match: 4 bytes.
	MiscSelectMask HexBytes `json:"miscselectMask"`
	// Attributes is the expected ATTRIBUTES of the QE report under
	// AttributesMask: 16 bytes.
	Attributes HexBytes `json:"attributes"`
	// AttributesMask selects the ATTRIBUTES bits that must match: 16 bytes.
	AttributesMask HexBytes `json:"attributesMask"`
	// MRSigner is the expected MRSIGNER of the QE report (the hash of
	// Intel's QE signing key): 32 bytes.
	MRSigner HexBytes `json:"mrsigner"`
	// ISVProdID is the expected ISVPRODID of the QE report.
	ISVProdID uint16 `json:"isvprodid"`
	// TCBLevels are the QE's TCB levels by ISVSVN, newest first.
	TCBLevels []EnclaveTCBLevel `json:"tcbLevels"`
}

// ParseTCBInfo parses the "tcbInfo" JSON value of Intel's TDX TCB info and
// checks that it is TDX TCB info version 3 with well-sized fields. It does
// not check the signature.
func ParseTCBInfo(b []byte) (*TCBInfo, error) {
	var t TCBInfo
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, fmt.Errorf("%w: TCB info: %v", ErrMalformedCollateral, err)
	}
	if err := t.validate(); err != nil {
		return nil, fmt.Errorf("%w: TCB info: %v", ErrMalformedCollateral, err)
	}
	return &t, nil
}

func (t *TCBInfo) validate() error {
	if t.ID != "TDX" {
		return fmt.Errorf("id %q, want %q", t.ID, "TDX")
	}
	if t.Version != 3 {
		return fmt.Errorf("version %d, want 3", t.Version)
	}
	if err := checkDates(t.IssueDate, t.NextUpdate); err != nil {
		return err
	}
	if t.TCBType != 0 {
		// The only type Intel defines: SVNs compared component by component.
		return fmt.Errorf("tcbType %d, want 0", t.TCBType)
	}
	if err := checkHexLen("fmspc", t.FMSPC, 6); err != nil {
		return err
	}
	if err := checkHexLen("pceId", t.PCEID, 2); err != nil {
		return err
	}
	if t.TDXModule == nil {
		return fmt.Errorf("no tdxModule")
	}
	if err := t.TDXModule.validate("tdxModule"); err != nil {
		return err
	}
	for i := range t.TDXModuleIdentities {
		m := &t.TDXModuleIdentities[i]
		if m.ID == "" {
			return fmt.Errorf("tdxModuleIdentities[%d]: empty id", i)
		}
		if err := m.TDXModule.validate("tdxModuleIdentities " + m.ID); err != nil {
			return err
		}
		if err := checkEnclaveLevels("tdxModuleIdentities "+m.ID, m.TCBLevels); err != nil {
			return err
		}
	}
	if len(t.TCBLevels) == 0 {
		return fmt.Errorf("no tcbLevels")
	}
	for i := range t.TCBLevels {
		l := &t.TCBLevels[i]
		if n := len(l.TCB.SGXComponents); n != 16 {
			return fmt.Errorf("tcbLevels[%d]: %d sgxtcbcomponents, want 16", i, n)
		}
		if n := len(l.TCB.TDXComponents); n != 16 {
			return fmt.Errorf("tcbLevels[%d]: %d tdxtcbcomponents, want 16", i, n)
		}
		if !validStatus(l.TCBStatus) {
			return fmt.Errorf("tcbLevels[%d]: unknown tcbStatus %q", i, l.TCBStatus)
		}
	}
	return nil
}

func (m *TDXModule) validate(what string) error {
	switch {
	case len(m.MRSigner) != 48:
		return fmt.Errorf("%s: mrsigner is %d bytes, want 48", what, len(m.MRSigner))
	case len(m.Attributes) != 8:
		return fmt.Errorf("%s: attributes is %d bytes, want 8", what, len(m.Attributes))
	case len(m.AttributesMask) != 8:
		return fmt.Errorf("%s: attributesMask is %d bytes, want 8", what, len(m.AttributesMask))
	}
	return nil
}

// ParseQEIdentity parses the "enclaveIdentity" JSON value of Intel's QE
// identity and checks that it is the TD_QE identity version 2 with
// well-sized fields. It does not check the signature.
func ParseQEIdentity(b []byte) (*QEIdentity, error) {
	var q QEIdentity
	if err := json.Unmarshal(b, &q); err != nil {
		return nil, fmt.Errorf("%w: QE identity: %v", ErrMalformedCollateral, err)
	}
	if err := q.validate(); err != nil {
		return nil, fmt.Errorf("%w: QE identity: %v", ErrMalformedCollateral, err)
	}
	return &q, nil
}

func (q *QEIdentity) validate() error {
	if q.ID != "TD_QE" {
		return fmt.Errorf("id %q, want %q", q.ID, "TD_QE")
	}
	if q.Version != 2 {
		return fmt.Errorf("version %d, want 2", q.Version)
	}
	if err := checkDates(q.IssueDate, q.NextUpdate); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		b    []byte
		n    int
	}{
		{"miscselect", q.MiscSelect, 4},
		{"miscselectMask", q.MiscSelectMask, 4},
		{"attributes", q.Attributes, 16},
		{"attributesMask", q.AttributesMask, 16},
		{"mrsigner", q.MRSigner, 32},
	} {
		if len(f.b) != f.n {
			return fmt.Errorf("%s is %d bytes, want %d", f.name, len(f.b), f.n)
		}
	}
	return checkEnclaveLevels("tcbLevels", q.TCBLevels)
}

func checkDates(issue, next time.Time) error {
	if issue.IsZero() || next.IsZero() {
		return fmt.Errorf("missing issueDate or nextUpdate")
	}
	if !issue.Before(next) {
		return fmt.Errorf("issueDate %s is not before nextUpdate %s", issue.Format(time.RFC3339), next.Format(time.RFC3339))
	}
	return nil
}

func checkHexLen(name, s string, n int) error {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != n {
		return fmt.Errorf("%s %q is not %d bytes of hex", name, s, n)
	}
	return nil
}

func checkEnclaveLevels(what string, levels []EnclaveTCBLevel) error {
	if len(levels) == 0 {
		return fmt.Errorf("%s: no TCB levels", what)
	}
	for i := range levels {
		if !validStatus(levels[i].TCBStatus) {
			return fmt.Errorf("%s[%d]: unknown tcbStatus %q", what, i, levels[i].TCBStatus)
		}
	}
	return nil
}

func validStatus(s tdx.TCBStatus) bool {
	switch s {
	case tdx.TCBUpToDate, tdx.TCBSWHardeningNeeded, tdx.TCBConfigurationNeeded,
		tdx.TCBConfigurationAndSWHardeningNeeded, tdx.TCBOutOfDate,
		tdx.TCBOutOfDateConfigurationNeeded, tdx.TCBRevoked:
		return true
	}
	return false
}
