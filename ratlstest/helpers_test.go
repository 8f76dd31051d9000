package ratlstest

import (
	"crypto/ecdsa"
	"crypto/sha512"
	"crypto/x509"
	"encoding/pem"
	"testing"

	"github.com/Dstack-TEE/dstack/sdk/go/dstack"
	"github.com/stretchr/testify/require"

	"github.com/teesql/ratls/ext"
	"github.com/teesql/ratls/tdx"
)

func newAuthority(t *testing.T) *Authority {
	t.Helper()
	a, err := NewAuthority(AuthorityOptions{})
	require.NoError(t, err)
	return a
}

func newAgent(t *testing.T, auth *Authority, opts AgentOptions) *Agent {
	t.Helper()
	ag, err := NewAgent(auth, opts)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, ag.Close()) })
	return ag
}

func newPCCS(t *testing.T, auth *Authority) *PCCS {
	t.Helper()
	p, err := NewPCCS(auth)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.Close()) })
	return p
}

// parsedTLSKey is a GetTlsKey answer, parsed and checked for consistency:
// the key matches the leaf, the leaf is signed by the app CA.
type parsedTLSKey struct {
	key   *ecdsa.PrivateKey
	leaf  *x509.Certificate
	ca    *x509.Certificate
	att   *ext.Attestation // nil if the leaf has no attestation
	quote *tdx.Quote
}

func parseTLSKey(t *testing.T, resp *dstack.GetTlsKeyResponse) *parsedTLSKey {
	t.Helper()
	block, _ := pem.Decode([]byte(resp.Key))
	require.NotNil(t, block, "key is not PEM")
	require.Equal(t, "PRIVATE KEY", block.Type)
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	require.NoError(t, err)
	key, ok := k.(*ecdsa.PrivateKey)
	require.True(t, ok, "key is %T, want ECDSA", k)
	require.Len(t, resp.CertificateChain, 2)
	var certs []*x509.Certificate
	for _, p := range resp.CertificateChain {
		b, rest := pem.Decode([]byte(p))
		require.NotNil(t, b)
		require.Empty(t, rest)
		c, err := x509.ParseCertificate(b.Bytes)
		require.NoError(t, err)
		certs = append(certs, c)
	}
	out := &parsedTLSKey{key: key, leaf: certs[0], ca: certs[1]}
	require.True(t, key.PublicKey.Equal(out.leaf.PublicKey), "key does not match the leaf")
	require.NoError(t, out.leaf.CheckSignatureFrom(out.ca))
	require.Equal(t, appCACommonName, out.ca.Subject.CommonName)
	if att, err := ext.FromCertificate(out.leaf); err == nil {
		out.att = att
		out.quote, err = tdx.ParseQuote(att.Quote)
		require.NoError(t, err)
	}
	return out
}

// requireBound checks that p's quote binds its certificate key.
func requireBound(t *testing.T, p *parsedTLSKey) {
	t.Helper()
	require.NotNil(t, p.quote, "certificate carries no quote")
	want := sha512.Sum512(append([]byte("ratls-cert:"), p.leaf.RawSubjectPublicKeyInfo...))
	require.Equal(t, want, p.quote.Body.ReportData)
}
