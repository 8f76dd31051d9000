package testpki

import (
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tdx-guest/pcs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/teesql/ratls/tdx"
)

func TestAuthorityCertificates(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		opts     Options
		rootCN   string
		caCN     string
		crlQuery string
	}{
		{Options{Now: testNow}, TestRootName, PlatformCAName, "ca=platform"},
		{Options{Now: testNow, CA: ProcessorCA, IntelRootName: true}, IntelRootName, ProcessorCAName, "ca=processor"},
	} {
		a := newAuthority(t, tc.opts)
		assert.Equal(t, tc.rootCN, a.Root().Subject.CommonName)
		assert.Equal(t, tc.caCN, a.PCKCA().Subject.CommonName)
		assert.Equal(t, PCKCertName, a.PCK().Subject.CommonName)
		assert.Equal(t, TCBSigningName, a.TCBSigning().Subject.CommonName)
		for _, c := range []*x509.Certificate{a.Root(), a.PCKCA(), a.PCK(), a.TCBSigning()} {
			assert.Equal(t, []string{TestOrganization}, c.Subject.Organization, "every certificate must say TEST")
			assert.Equal(t, x509.ECDSAWithSHA256, c.SignatureAlgorithm)
			assert.True(t, !a.Now().Before(c.NotBefore) && !a.Now().After(c.NotAfter), "%s valid at Now", c.Subject.CommonName)
			for _, u := range c.CRLDistributionPoints {
				assert.True(t, strings.HasPrefix(u, "https://ratls-test-pki.invalid/"), u)
			}
		}
		assert.Contains(t, a.PCK().CRLDistributionPoints[0], tc.crlQuery)
		assert.Equal(t, tc.opts.CA, a.CA())

		opts := x509.VerifyOptions{Roots: a.RootPool(), Intermediates: x509.NewCertPool(), CurrentTime: a.Now()}
		opts.Intermediates.AddCert(a.PCKCA())
		_, err := a.PCK().Verify(opts)
		require.NoError(t, err)
		_, err = a.TCBSigning().Verify(opts)
		require.NoError(t, err)

		// Another authority's root never vouches for this one.
		other := newAuthority(t, Options{Now: testNow})
		opts.Roots = other.RootPool()
		_, err = a.PCK().Verify(opts)
		require.Error(t, err)
	}
}

func TestAuthorityNowDefaultsAndDerivesDates(t *testing.T) {
	t.Parallel()
	before := time.Now().Add(-time.Second)
	a := newAuthority(t, Options{})
	assert.False(t, a.Now().Before(before.Truncate(time.Second)))
	assert.False(t, a.Now().After(time.Now()))

	b := newAuthority(t, Options{Now: testNow.Add(500 * time.Millisecond)})
	assert.Equal(t, testNow, b.Now(), "Now is truncated to the second")
	assert.Equal(t, testNow.AddDate(-1, 0, 0), b.Root().NotBefore)
	assert.Equal(t, testNow.AddDate(0, 0, -30), b.PCK().NotBefore)
}

func TestPCKExtensionsReadBack(t *testing.T) {
	t.Parallel()
	for _, ca := range []CAType{PlatformCA, ProcessorCA} {
		opts := Options{
			Now:    testNow,
			CA:     ca,
			FMSPC:  [6]byte{0xB0, 0xC0, 0x6F, 0, 0, 0x1a},
			PCEID:  [2]byte{0, 1},
			CPUSVN: [16]byte{9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0xff, 0, 0, 0, 0, 0x80},
			PCESVN: 300,
		}
		a := newAuthority(t, opts)
		ext, err := pcs.PckCertificateExtensions(a.PCK())
		require.NoError(t, err, ca.String())
		assert.Equal(t, "b0c06f00001a", ext.FMSPC)
		assert.Equal(t, "0001", ext.PCEID)
		assert.Equal(t, uint16(300), ext.TCB.PCESvn)
		assert.Equal(t, opts.CPUSVN[:], ext.TCB.CPUSvnComponents)
		assert.Equal(t, opts.CPUSVN[:], ext.TCB.CPUSvn)
		assert.Len(t, ext.PPID, 32)
		assert.Equal(t, "B0C06F00001A", a.FMSPCHex())
	}
	// Defaults.
	a := newAuthority(t, Options{Now: testNow})
	ext, err := pcs.PckCertificateExtensions(a.PCK())
	require.NoError(t, err)
	assert.Equal(t, strings.ToLower(hex.EncodeToString(DefaultFMSPC[:])), ext.FMSPC)
	assert.Equal(t, DefaultPCESVN, ext.TCB.PCESvn)
	assert.Equal(t, DefaultCPUSVN[:], ext.TCB.CPUSvnComponents)
	assert.Equal(t, "0000", ext.PCEID)
}

// sgxShape lists (OID, ASN.1 tag) of every entry of an SGX extension,
// descending into nested sequences, so that two extensions can be compared
// for layout regardless of values.
func sgxShape(t *testing.T, der []byte) []string {
	t.Helper()
	var entries []asn1.RawValue
	rest, err := asn1.Unmarshal(der, &entries)
	require.NoError(t, err)
	require.Empty(t, rest)
	var out []string
	for _, e := range entries {
		var kv struct {
			ID    asn1.ObjectIdentifier
			Value asn1.RawValue
		}
		rest, err := asn1.Unmarshal(e.FullBytes, &kv)
		require.NoError(t, err)
		require.Empty(t, rest)
		out = append(out, fmt.Sprintf("%s tag %d", kv.ID, kv.Value.Tag))
		if kv.Value.Tag == asn1.TagSequence {
			out = append(out, sgxShape(t, kv.Value.FullBytes)...)
		}
	}
	return out
}

func sgxExtension(t *testing.T, c *x509.Certificate) []byte {
	t.Helper()
	for _, e := range c.Extensions {
		if e.Id.Equal(OIDSGXExtension) {
			return e.Value
		}
	}
	t.Fatal("no SGX extension")
	return nil
}

// The minted PCK certificate must have the layout of a real one: the same
// extensions and, inside the SGX extension, the same entries with the same
// types in the same order.
func TestPCKCertificateMatchesRecordedLayout(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../../testdata/dcap-qvl/tdx_quote")
	require.NoError(t, err)
	q, err := tdx.ParseQuote(raw)
	require.NoError(t, err)
	blk, _ := pem.Decode(q.PCKChainPEM)
	require.NotNil(t, blk)
	real, err := x509.ParseCertificate(blk.Bytes)
	require.NoError(t, err)
	require.Equal(t, PlatformCAName, real.Issuer.CommonName)

	a := newAuthority(t, Options{Now: testNow})
	extIDs := func(c *x509.Certificate) map[string]bool {
		m := map[string]bool{}
		for _, e := range c.Extensions {
			m[e.Id.String()+map[bool]string{true: " critical"}[e.Critical]] = true
		}
		return m
	}
	assert.Equal(t, extIDs(real), extIDs(a.PCK()))
	assert.Equal(t, real.KeyUsage, a.PCK().KeyUsage)
	assert.Equal(t, sgxShape(t, sgxExtension(t, real)), sgxShape(t, sgxExtension(t, a.PCK())))

	// The processor variant is the platform one without the platform
	// instance ID (.6) and configuration (.7).
	p := newAuthority(t, Options{Now: testNow, CA: ProcessorCA})
	var want []string
	for _, s := range sgxShape(t, sgxExtension(t, real)) {
		if !strings.HasPrefix(s, OIDSGXExtension.String()+".6 ") && !strings.HasPrefix(s, OIDSGXExtension.String()+".7") {
			want = append(want, s)
		}
	}
	assert.Equal(t, want, sgxShape(t, sgxExtension(t, p.PCK())))
}

func TestModifyPCK(t *testing.T) {
	t.Parallel()
	expired := testNow.Add(-time.Hour)
	a := newAuthority(t, Options{Now: testNow, ModifyPCK: func(c *x509.Certificate) { c.NotAfter = expired }})
	assert.Equal(t, expired, a.PCK().NotAfter)
}

func TestNewRejectsBadOptions(t *testing.T) {
	t.Parallel()
	_, err := New(Options{CA: CAType(7)})
	assert.ErrorIs(t, err, ErrOptions)
	_, err = New(Options{QE: &QE{AuthData: make([]byte, 70000)}})
	assert.ErrorIs(t, err, ErrOptions)
}

func TestCustomQE(t *testing.T) {
	t.Parallel()
	qe := DefaultQE()
	qe.ISVSVN = 9
	qe.MiscSelect = 0x01020304
	qe.AuthData = []byte("short")
	a := newAuthority(t, Options{Now: testNow, QE: &qe})
	raw, err := a.MintQuote(QuoteOptions{})
	require.NoError(t, err)
	q, err := tdx.ParseQuote(raw)
	require.NoError(t, err)
	assert.Equal(t, uint16(9), q.QEReport.ISVSVN)
	assert.Equal(t, uint32(0x01020304), q.QEReport.MiscSelect)
	assert.Equal(t, []byte("short"), q.QEAuthData)
	_, _, binding := checkQuoteCrypto(t, a, q)
	assert.True(t, binding)
	qe.AuthData[0] = 'X'
	assert.Equal(t, []byte("short"), a.QE().AuthData, "the authority keeps its own copy")
}
