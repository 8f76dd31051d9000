package dcap_test

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/teesql/ratls/dcap"
)

// The pinned root is Intel's SGX Root CA: this fingerprint is published by
// Intel and is also the last certificate of every issuer chain in the
// recorded collateral.
func TestIntelRootPinned(t *testing.T) {
	t.Parallel()
	const pinned = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"
	root := dcap.IntelRootCA()
	fp := sha256.Sum256(root.Raw)
	assert.Equal(t, pinned, hex.EncodeToString(fp[:]))
	assert.Equal(t, pinned, dcap.IntelRootCASHA256)
	assert.Equal(t, "CN=Intel SGX Root CA,O=Intel Corporation,L=Santa Clara,ST=CA,C=US", root.Subject.String())
	assert.Equal(t, root.Subject.String(), root.Issuer.String(), "self-issued")
	require.NoError(t, root.CheckSignatureFrom(root), "self-signed")
	assert.True(t, root.IsCA)
	assert.True(t, root.NotAfter.After(time.Date(2049, 12, 31, 0, 0, 0, 0, time.UTC)))
	assert.Equal(t, []string{"https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"}, root.CRLDistributionPoints)

	// Every issuer chain of the recorded collateral ends in this root.
	c := recordedCollateral(t)
	for _, chain := range []string{c.TCBInfoIssuerChain, c.QEIdentityIssuerChain, c.PCKCRLIssuerChain} {
		last := lastPEMCert(t, []byte(chain))
		assert.Equal(t, root.Raw, last.Raw)
	}
	// And so does the PCK chain of the recorded quote.
	q := recordedQuote(t)
	i := strings.Index(string(q), "-----BEGIN CERTIFICATE-----")
	require.Positive(t, i)
	assert.Equal(t, root.Raw, lastPEMCert(t, q[i:]).Raw)

	// Each call returns an independent copy.
	root.Subject.CommonName = "mutated"
	assert.Equal(t, "Intel SGX Root CA", dcap.IntelRootCA().Subject.CommonName)
}

func lastPEMCert(t *testing.T, b []byte) *x509.Certificate {
	t.Helper()
	var last *x509.Certificate
	for {
		blk, rest := pem.Decode(b)
		if blk == nil {
			break
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		require.NoError(t, err)
		last, b = c, rest
	}
	require.NotNil(t, last)
	return last
}
