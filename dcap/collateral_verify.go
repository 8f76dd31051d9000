package dcap

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"strings"
	"time"
)

// checkedCollateral is a Collateral whose signatures and CRLs were verified
// against a trusted root. Signatures do not depend on the time, so a
// checkedCollateral is built once per fetch and shared by every quote of the
// platform family; only its validity windows are checked per quote
// (checkTime). It is immutable once built.
type checkedCollateral struct {
	tcbInfo    *TCBInfo
	qeIdentity *QEIdentity
	fmspc      string // upper-case hex

	rootCRL revocations // serials revoked by the root CA
	pckCRL  revocations // serials revoked by the PCK CA
	// pckCAName is the raw subject of the PCK CA that issued pckCRL: the
	// CRL only speaks for PCK certificates issued by that name.
	pckCAName []byte
	caType    string // "platform" or "processor"

	windows []window
	// expires is the earliest nextUpdate of the TCB info, QE identity and
	// CRLs: past it, the collateral must be refetched.
	expires time.Time
	// certsNotAfter is the earliest NotAfter of the collateral's signing
	// certificates.
	certsNotAfter time.Time
}

// window is a validity period that must contain the verification time.
type window struct {
	what      string
	from      time.Time
	until     time.Time
	inclusive bool // certificates are valid through NotAfter; collateral only until nextUpdate
	cert      bool // a certificate: stale-if-error grace never extends it
}

// revocations is the set of revoked serial numbers of one CRL.
type revocations map[string]struct{}

func (r revocations) has(serial *big.Int) bool {
	_, ok := r[string(serial.Bytes())]
	return ok
}

// checkCollateral verifies every signature and CRL of c against root and
// parses the TCB info and QE identity. It checks no dates (see checkTime).
func checkCollateral(root *x509.Certificate, c *Collateral) (*checkedCollateral, error) {
	if c == nil {
		return nil, fmt.Errorf("%w: nil collateral", ErrMalformedCollateral)
	}
	cc := &checkedCollateral{}

	rootCRL, err := parseCRLField("root CA CRL", c.RootCACRL)
	if err != nil {
		return nil, err
	}
	if err := checkCRLSignature("root CA CRL", rootCRL, root); err != nil {
		return nil, err
	}
	cc.rootCRL = revoked(rootCRL)
	cc.addCRLWindow("root CA CRL", rootCRL)
	cc.addCertWindow("root CA certificate", root)

	tcbSigner, err := cc.issuerChain("TCB info", c.TCBInfoIssuerChain, root, false)
	if err != nil {
		return nil, err
	}
	if err := checkJSONSignature("TCB info", tcbSigner, c.TCBInfo, c.TCBInfoSignature); err != nil {
		return nil, err
	}
	if cc.tcbInfo, err = ParseTCBInfo([]byte(c.TCBInfo)); err != nil {
		return nil, err
	}
	cc.fmspc = strings.ToUpper(cc.tcbInfo.FMSPC)
	cc.windows = append(cc.windows, window{what: "TCB info", from: cc.tcbInfo.IssueDate, until: cc.tcbInfo.NextUpdate})

	qeSigner, err := cc.issuerChain("QE identity", c.QEIdentityIssuerChain, root, false)
	if err != nil {
		return nil, err
	}
	if err := checkJSONSignature("QE identity", qeSigner, c.QEIdentity, c.QEIdentitySignature); err != nil {
		return nil, err
	}
	if cc.qeIdentity, err = ParseQEIdentity([]byte(c.QEIdentity)); err != nil {
		return nil, err
	}
	cc.windows = append(cc.windows, window{what: "QE identity", from: cc.qeIdentity.IssueDate, until: cc.qeIdentity.NextUpdate})

	pckCA, err := cc.issuerChain("PCK CRL", c.PCKCRLIssuerChain, root, true)
	if err != nil {
		return nil, err
	}
	if cc.caType, err = pckCAType(pckCA); err != nil {
		return nil, fmt.Errorf("%w: PCK CRL issuer: %v", ErrCollateralSignature, err)
	}
	pckCRL, err := parseCRLField("PCK CRL", c.PCKCRL)
	if err != nil {
		return nil, err
	}
	if err := checkCRLSignature("PCK CRL", pckCRL, pckCA); err != nil {
		return nil, err
	}
	cc.pckCRL = revoked(pckCRL)
	cc.pckCAName = pckCA.RawSubject
	cc.addCRLWindow("PCK CRL", pckCRL)

	for _, w := range cc.windows {
		switch {
		case w.cert:
			if cc.certsNotAfter.IsZero() || w.until.Before(cc.certsNotAfter) {
				cc.certsNotAfter = w.until
			}
		case !w.until.IsZero():
			if cc.expires.IsZero() || w.until.Before(cc.expires) {
				cc.expires = w.until
			}
		}
	}
	return cc, nil
}

// checkTime checks that now falls in every validity window of the
// collateral. grace extends the collateral's nextUpdates (never a
// certificate's NotAfter); it is zero except for stale-if-error use.
func (cc *checkedCollateral) checkTime(now time.Time, grace time.Duration) error {
	for _, w := range cc.windows {
		if now.Before(w.from) {
			return fmt.Errorf("%w: %s valid from %s, verification time %s", ErrCollateralNotYetValid,
				w.what, w.from.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
		}
		if w.until.IsZero() {
			continue
		}
		until := w.until
		if !w.cert {
			until = until.Add(grace)
		}
		if now.After(until) || (!w.inclusive && now.Equal(until)) {
			return fmt.Errorf("%w: %s valid until %s, verification time %s", ErrCollateralExpired,
				w.what, w.until.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
		}
	}
	return nil
}

func (cc *checkedCollateral) addCRLWindow(what string, crl *x509.RevocationList) {
	cc.windows = append(cc.windows, window{what: what, from: crl.ThisUpdate, until: crl.NextUpdate})
}

func (cc *checkedCollateral) addCertWindow(what string, c *x509.Certificate) {
	cc.windows = append(cc.windows, window{what: what, from: c.NotBefore, until: c.NotAfter, inclusive: true, cert: true})
}

// issuerChain parses a collateral issuer chain (PEM: signing certificate,
// then optionally the root), checks that the signing certificate is issued
// by root and not revoked by the root CA CRL, and returns it. A chain that
// carries a root must carry exactly the trusted one. wantCA tells whether the
// signer is a CA (the PCK CA signing a CRL) or an end entity (TCB signing).
func (cc *checkedCollateral) issuerChain(what, chain string, root *x509.Certificate, wantCA bool) (*x509.Certificate, error) {
	certs, err := parsePEMCerts([]byte(chain), 3)
	if err != nil {
		return nil, fmt.Errorf("%w: %s issuer chain: %v", ErrMalformedCollateral, what, err)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%w: %s issuer chain is empty", ErrMalformedCollateral, what)
	}
	for _, der := range certs[1:] {
		if !bytes.Equal(der, root.Raw) {
			return nil, fmt.Errorf("%w: %s issuer chain carries a root with SHA-256 %x, want %s",
				ErrCollateralSignature, what, sha256.Sum256(der), fingerprintHex(root))
		}
	}
	signer, err := x509.ParseCertificate(certs[0])
	if err != nil {
		return nil, fmt.Errorf("%w: %s signing certificate: %v", ErrMalformedCollateral, what, err)
	}
	if err := checkIssuedBy(signer, root); err != nil {
		return nil, fmt.Errorf("%w: %s signing certificate %q: %v", ErrCollateralSignature, what, signer.Subject.CommonName, err)
	}
	if signer.IsCA != wantCA {
		return nil, fmt.Errorf("%w: %s signing certificate %q has CA=%v, want %v", ErrCollateralSignature, what, signer.Subject.CommonName, signer.IsCA, wantCA)
	}
	if !wantCA && signer.KeyUsage != 0 && signer.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return nil, fmt.Errorf("%w: %s signing certificate %q lacks the digitalSignature key usage", ErrCollateralSignature, what, signer.Subject.CommonName)
	}
	if cc.rootCRL.has(signer.SerialNumber) {
		return nil, fmt.Errorf("%w: %s signing certificate %q (serial %x) is in the root CA CRL", ErrRevoked, what, signer.Subject.CommonName, signer.SerialNumber)
	}
	cc.addCertWindow(what+" signing certificate", signer)
	return signer, nil
}

// checkIssuedBy checks the name link and signature from parent to c.
// CheckSignatureFrom also requires parent to be a CA allowed to sign
// certificates.
func checkIssuedBy(c, parent *x509.Certificate) error {
	if !bytes.Equal(c.RawIssuer, parent.RawSubject) {
		return fmt.Errorf("issuer %q, want %q", c.Issuer.String(), parent.Subject.String())
	}
	if err := c.CheckSignatureFrom(parent); err != nil {
		return fmt.Errorf("not signed by %q: %v", parent.Subject.CommonName, err)
	}
	return nil
}

// checkJSONSignature verifies Intel's raw r||s ECDSA P-256 signature (hex)
// over the exact bytes of a signed JSON value.
func checkJSONSignature(what string, signer *x509.Certificate, body, sigHex string) error {
	sig, err := hex.DecodeString(sigHex)
	if err != nil || len(sig) != 64 {
		return fmt.Errorf("%w: %s signature is not 64 bytes of hex", ErrMalformedCollateral, what)
	}
	pub, ok := signer.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return fmt.Errorf("%w: %s signing key is %T, want ECDSA P-256", ErrCollateralSignature, what, signer.PublicKey)
	}
	if !verifyRawSig(pub, []byte(body), sig) {
		return fmt.Errorf("%w: %s signature does not verify with %q", ErrCollateralSignature, what, signer.Subject.CommonName)
	}
	return nil
}

// verifyRawSig verifies an ECDSA P-256 SHA-256 signature in Intel's raw
// r||s form (32 bytes each, big-endian).
func verifyRawSig(pub *ecdsa.PublicKey, msg, sig []byte) bool {
	if len(sig) != 64 {
		return false
	}
	h := sha256.Sum256(msg)
	r := new(big.Int).SetBytes(sig[:32])
	s := new(big.Int).SetBytes(sig[32:])
	return ecdsa.Verify(pub, h[:], r, s)
}

// parseCRLField decodes a CRL carried as hex DER (the interchange format).
func parseCRLField(what, s string) (*x509.RevocationList, error) {
	der, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil || len(der) == 0 {
		return nil, fmt.Errorf("%w: %s is not hex DER", ErrMalformedCollateral, what)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrMalformedCollateral, what, err)
	}
	return crl, nil
}

func checkCRLSignature(what string, crl *x509.RevocationList, issuer *x509.Certificate) error {
	if !bytes.Equal(crl.RawIssuer, issuer.RawSubject) {
		return fmt.Errorf("%w: %s issued by %q, want %q", ErrCollateralSignature, what, crl.Issuer.String(), issuer.Subject.String())
	}
	if err := crl.CheckSignatureFrom(issuer); err != nil {
		return fmt.Errorf("%w: %s signature does not verify with %q: %v", ErrCollateralSignature, what, issuer.Subject.CommonName, err)
	}
	return nil
}

func revoked(crl *x509.RevocationList) revocations {
	r := make(revocations, len(crl.RevokedCertificateEntries))
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber != nil {
			r[string(e.SerialNumber.Bytes())] = struct{}{}
		}
	}
	return r
}

// pckCAType names a PCK CA the way the PCS pckcrl endpoint does.
func pckCAType(ca *x509.Certificate) (string, error) {
	cn := ca.Subject.CommonName
	switch {
	case strings.Contains(cn, "PCK Platform CA"):
		return "platform", nil
	case strings.Contains(cn, "PCK Processor CA"):
		return "processor", nil
	}
	return "", fmt.Errorf("CA %q is neither a PCK Platform CA nor a PCK Processor CA", cn)
}

// parsePEMCerts returns the DER of each CERTIFICATE block of b (at most
// max). Bytes after the last block must be whitespace or NULs: quotes pad
// the PCK chain with a NUL.
func parsePEMCerts(b []byte, max int) ([][]byte, error) {
	var out [][]byte
	for {
		blk, rest := pem.Decode(b)
		if blk == nil {
			if len(bytes.Trim(b, " \t\r\n\x00")) != 0 {
				return nil, fmt.Errorf("%d bytes of non-PEM data", len(b))
			}
			return out, nil
		}
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %q, want CERTIFICATE", blk.Type)
		}
		if len(out) == max {
			return nil, fmt.Errorf("more than %d certificates", max)
		}
		out = append(out, blk.Bytes)
		b = rest
	}
}
