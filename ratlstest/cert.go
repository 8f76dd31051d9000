package ratlstest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"time"

	"github.com/teesql/ratls/ext"
)

// Format selects how certificates carry the attestation.
type Format int

const (
	// FormatV0 is a .1.8 V0 (SCALE) envelope, as dstack >= 0.5.9 writes.
	FormatV0 Format = iota
	// FormatV1 is a .1.8 V1 (msgpack) envelope.
	FormatV1
	// FormatLegacy is a raw quote in .1.1 and a JSON event log in .1.2, as
	// dstack <= 0.5.8 writes.
	FormatLegacy
	// FormatBoth is .1.8 V0 and .1.1/.1.2, carrying the same quote.
	FormatBoth
)

// String names the format, for test names and messages.
func (f Format) String() string {
	switch f {
	case FormatV0:
		return "V0"
	case FormatV1:
		return "V1"
	case FormatLegacy:
		return "legacy"
	case FormatBoth:
		return "V0+legacy"
	}
	return fmt.Sprintf("Format(%d)", int(f))
}

func (f Format) valid() bool { return f >= FormatV0 && f <= FormatBoth }

// appCACommonName says on every simulated certificate chain that it is a
// test artefact: the name shows up in error messages and logs.
const appCACommonName = "ratlstest Dstack App CA - TEST ONLY, NOT A REAL TEE"

// appCA is the simulated agent's certificate authority, standing in for the
// KMS-backed "Dstack App CA". Trust never comes from it (RA-TLS trusts the
// quote); it exists so that chains look like real ones.
type appCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newAppCA(now time.Time) (*appCA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: appCACommonName, Organization: []string{"ratlstest"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &appCA{cert: cert, key: key}, nil
}

func randomSerial() *big.Int {
	// 128 random bits, as CAs use; rand.Int does not fail on crypto/rand.
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	return n
}

// certRequest is a GetTlsKey request after validation.
type certRequest struct {
	subject    string
	altNames   []string
	raTLS      bool
	serverAuth bool
	clientAuth bool
	notBefore  time.Time
	notAfter   time.Time
}

// keyReportData is what dstack puts in REPORTDATA for an RA-TLS
// certificate: SHA-512("ratls-cert:" || SubjectPublicKeyInfo DER).
func keyReportData(pub crypto.PublicKey) ([64]byte, error) {
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return [64]byte{}, err
	}
	return sha512.Sum512(append([]byte("ratls-cert:"), spki...)), nil
}

// attestation mints a quote for td binding reportData and wraps it with
// td's event log as ext.Attestation.
func (a *Authority) attestation(td TD, reportData [64]byte) (*ext.Attestation, error) {
	q, err := a.quote(td, reportData)
	if err != nil {
		return nil, err
	}
	return &ext.Attestation{
		Quote:      q,
		Events:     td.events(),
		ReportData: reportData[:],
		Config:     td.vmConfig(),
	}, nil
}

// extensions encodes att in the given format.
func extensions(att *ext.Attestation, f Format) ([]pkix.Extension, error) {
	switch f {
	case FormatV0:
		return ext.Extensions(att, false)
	case FormatLegacy:
		return ext.Extensions(att, true)
	case FormatV1:
		env, err := ext.MarshalEnvelope(att, ext.EnvelopeV1)
		if err != nil {
			return nil, err
		}
		return []pkix.Extension{octetExtension(ext.OIDAttestation, env)}, nil
	case FormatBoth:
		v0, err := ext.Extensions(att, false)
		if err != nil {
			return nil, err
		}
		legacy, err := ext.Extensions(att, true)
		if err != nil {
			return nil, err
		}
		return mergeExtensions(v0, legacy), nil
	}
	return nil, fmt.Errorf("ratlstest: unknown Format %d", int(f))
}

// mergeExtensions appends to a the extensions of b whose OID a lacks.
func mergeExtensions(a, b []pkix.Extension) []pkix.Extension {
	out := append([]pkix.Extension(nil), a...)
next:
	for _, e := range b {
		for _, have := range a {
			if have.Id.Equal(e.Id) {
				continue next
			}
		}
		out = append(out, e)
	}
	return out
}

// octetExtension wraps value in an OCTET STRING, as dstack encodes every
// extension value.
func octetExtension(oid asn1.ObjectIdentifier, value []byte) pkix.Extension {
	der, _ := asn1.Marshal(value) // marshaling a []byte cannot fail
	return pkix.Extension{Id: oid, Value: der}
}

// issue signs a leaf certificate for pub carrying exts. Key usages follow
// the request's usage flags as dstack's agent sets them.
func (ca *appCA) issue(req certRequest, pub crypto.PublicKey, exts []pkix.Extension) (*x509.Certificate, error) {
	tmpl := &x509.Certificate{
		SerialNumber:    randomSerial(),
		Subject:         pkix.Name{CommonName: req.subject, Organization: []string{"ratlstest (simulated TEE, NOT TRUSTED)"}},
		NotBefore:       req.notBefore,
		NotAfter:        req.notAfter,
		KeyUsage:        x509.KeyUsageDigitalSignature,
		ExtraExtensions: exts,
	}
	if req.serverAuth {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if req.clientAuth {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	for _, n := range req.altNames {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("ratlstest: signing certificate: %w", err)
	}
	return x509.ParseCertificate(der)
}

// issued is a fresh key and its certificate chain (leaf, app CA).
type issued struct {
	key   *ecdsa.PrivateKey
	chain []*x509.Certificate
}

func (is *issued) tlsCertificate() *tls.Certificate {
	c := &tls.Certificate{PrivateKey: is.key, Leaf: is.chain[0]}
	for _, x := range is.chain {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c
}

// pem returns the key as PKCS#8 PEM and the chain as PEM blocks, the shape
// of a GetTlsKey response.
func (is *issued) pem() (key string, chain []string, err error) {
	der, err := x509.MarshalPKCS8PrivateKey(is.key)
	if err != nil {
		return "", nil, err
	}
	key = string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	for _, c := range is.chain {
		chain = append(chain, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})))
	}
	return key, chain, nil
}

// mint makes a fresh P-256 key and a certificate for it, attested as td in
// format f unless the request says the certificate is not for RA-TLS.
func (a *Authority) mint(ca *appCA, td TD, f Format, req certRequest) (*issued, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	var exts []pkix.Extension
	if req.raTLS {
		rd, err := keyReportData(&key.PublicKey)
		if err != nil {
			return nil, err
		}
		att, err := a.attestation(td, rd)
		if err != nil {
			return nil, err
		}
		if exts, err = extensions(att, f); err != nil {
			return nil, err
		}
	}
	leaf, err := ca.issue(req, &key.PublicKey, exts)
	if err != nil {
		return nil, err
	}
	return &issued{key: key, chain: []*x509.Certificate{leaf, ca.cert}}, nil
}

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}
