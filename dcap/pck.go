package dcap

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/google/go-tdx-guest/pcs"
)

// pckChain is the verified PCK certificate chain of a quote and the
// platform facts Intel wrote into the PCK certificate.
type pckChain struct {
	leaf    *x509.Certificate
	leafKey *ecdsa.PublicKey
	ca      *x509.Certificate
	caType  string // "platform" or "processor"

	fmspc  string // upper-case hex
	pceID  string // upper-case hex
	cpuSVN [16]byte
	pceSVN uint16

	notAfter time.Time // earliest NotAfter of leaf, CA and root
}

// caCache remembers PCK CA certificates already verified against the root,
// keyed by DER, so that a quote costs one certificate signature check (its
// leaf) instead of two. Only certificates signed by the trusted root get in,
// and Intel has two PCK CAs, so the cap is never reached in practice; it
// only bounds memory against a root that signs many.
type caCache struct {
	mu sync.RWMutex
	m  map[string]*verifiedCA
}

type verifiedCA struct {
	cert   *x509.Certificate
	caType string
}

const maxCachedCAs = 16

// pckCA returns the verified PCK CA for der, checking it against root on
// first sight. Validity dates are checked per quote by the caller.
func (c *caCache) pckCA(der []byte, root *x509.Certificate) (*verifiedCA, error) {
	c.mu.RLock()
	ca := c.m[string(der)]
	c.mu.RUnlock()
	if ca != nil {
		return ca, nil
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("%w: PCK CA certificate: %v", ErrPCKChain, err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("%w: PCK CA certificate %q is not a CA", ErrPCKChain, cert.Subject.CommonName)
	}
	if err := checkIssuedBy(cert, root); err != nil {
		return nil, fmt.Errorf("%w: PCK CA certificate %q: %v", ErrPCKChain, cert.Subject.CommonName, err)
	}
	typ, err := pckCAType(cert)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrPCKChain, err)
	}
	ca = &verifiedCA{cert: cert, caType: typ}
	c.mu.Lock()
	if c.m == nil {
		c.m = make(map[string]*verifiedCA)
	}
	if len(c.m) < maxCachedCAs {
		c.m[string(der)] = ca
	}
	c.mu.Unlock()
	return ca, nil
}

// verifyPCKChain verifies the PCK chain a quote carries (leaf, PCK CA and
// optionally the root) against root at time now. Revocation is checked
// later, against the collateral's CRLs.
func verifyPCKChain(pemChain []byte, root *x509.Certificate, cas *caCache, now time.Time) (*pckChain, error) {
	ders, err := parsePEMCerts(pemChain, 3)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrPCKChain, err)
	}
	if len(ders) < 2 {
		return nil, fmt.Errorf("%w: %d certificates, want the PCK certificate, its CA and optionally the root", ErrPCKChain, len(ders))
	}
	if len(ders) == 3 && !bytes.Equal(ders[2], root.Raw) {
		return nil, fmt.Errorf("%w: chain ends in a root with SHA-256 %x, want %s", ErrPCKChain, sha256.Sum256(ders[2]), fingerprintHex(root))
	}
	ca, err := cas.pckCA(ders[1], root)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(ders[0])
	if err != nil {
		return nil, fmt.Errorf("%w: PCK certificate: %v", ErrPCKChain, err)
	}
	if leaf.IsCA {
		return nil, fmt.Errorf("%w: PCK certificate %q is a CA", ErrPCKChain, leaf.Subject.CommonName)
	}
	if leaf.KeyUsage != 0 && leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return nil, fmt.Errorf("%w: PCK certificate lacks the digitalSignature key usage", ErrPCKChain)
	}
	if err := checkIssuedBy(leaf, ca.cert); err != nil {
		return nil, fmt.Errorf("%w: PCK certificate: %v", ErrPCKChain, err)
	}
	key, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || key.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: PCK certificate key is %T, want ECDSA P-256", ErrPCKChain, leaf.PublicKey)
	}
	p := &pckChain{leaf: leaf, leafKey: key, ca: ca.cert, caType: ca.caType, notAfter: root.NotAfter}
	for _, c := range []struct {
		what string
		cert *x509.Certificate
	}{{"root CA", root}, {"PCK CA", ca.cert}, {"PCK", leaf}} {
		if now.Before(c.cert.NotBefore) {
			return nil, fmt.Errorf("%w: %s certificate valid from %s, verification time %s", ErrPCKChain,
				c.what, c.cert.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
		}
		if now.After(c.cert.NotAfter) {
			return nil, fmt.Errorf("%w: %s certificate expired %s, verification time %s", ErrPCKChain,
				c.what, c.cert.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
		}
		if c.cert.NotAfter.Before(p.notAfter) {
			p.notAfter = c.cert.NotAfter
		}
	}
	ext, err := pckExtensions(leaf)
	if err != nil {
		return nil, fmt.Errorf("%w: PCK certificate SGX extensions: %v", ErrPCKChain, err)
	}
	if len(ext.TCB.CPUSvnComponents) != len(p.cpuSVN) {
		return nil, fmt.Errorf("%w: PCK certificate has %d CPUSVN components, want 16", ErrPCKChain, len(ext.TCB.CPUSvnComponents))
	}
	if b, err := hex.DecodeString(ext.FMSPC); err != nil || len(b) != 6 {
		return nil, fmt.Errorf("%w: PCK certificate FMSPC %q is not 6 bytes", ErrPCKChain, ext.FMSPC)
	}
	copy(p.cpuSVN[:], ext.TCB.CPUSvnComponents)
	p.pceSVN = ext.TCB.PCESvn
	p.fmspc = strings.ToUpper(ext.FMSPC)
	p.pceID = strings.ToUpper(ext.PCEID)
	return p, nil
}

// pckExtensions reads the SGX extensions with go-tdx-guest, which walks
// attacker-supplied ASN.1: a panic in it must not take the process down.
func pckExtensions(leaf *x509.Certificate) (ext *pcs.PckExtensions, err error) {
	defer func() {
		if r := recover(); r != nil {
			ext, err = nil, fmt.Errorf("parser panic: %v", r)
		}
	}()
	return pcs.PckCertificateExtensions(leaf)
}
