package dcap

import (
	"crypto/sha256"
	"crypto/x509"
	_ "embed"
	"encoding/hex"
	"encoding/pem"
)

// intelRootPEM is Intel's SGX Root CA, the anchor of every PCK certificate
// and of the TCB info, QE identity and CRL signing certificates. It is the
// same certificate for SGX and TDX, valid until the end of 2049.
//
//go:embed roots/intel_sgx_root_ca.pem
var intelRootPEM []byte

// IntelRootCASHA256 is the SHA-256 fingerprint (lower-case hex) of the DER
// encoding of Intel's SGX Root CA, the root that New pins by default.
const IntelRootCASHA256 = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"

// IntelRootCA returns a fresh copy of Intel's SGX Root CA certificate, as
// embedded in the package.
func IntelRootCA() *x509.Certificate {
	b, _ := pem.Decode(intelRootPEM)
	if b == nil {
		panic("dcap: embedded Intel root is not PEM")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		panic("dcap: embedded Intel root: " + err.Error())
	}
	return c
}

// fingerprint is the SHA-256 of a certificate's DER, used as a cache key
// and in error messages.
func fingerprint(c *x509.Certificate) [32]byte { return sha256.Sum256(c.Raw) }

func fingerprintHex(c *x509.Certificate) string {
	fp := fingerprint(c)
	return hex.EncodeToString(fp[:])
}
