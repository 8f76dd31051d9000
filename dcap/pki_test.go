package dcap_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/teesql/ratls/dcap"
	"github.com/teesql/ratls/internal/testpki"
	"github.com/teesql/ratls/tdx"
)

// pkiNow pins the test authorities' clock, so that every date they write
// is the same on every run.
var pkiNow = time.Date(2025, 6, 25, 12, 0, 0, 0, time.UTC)

func newAuthority(t *testing.T, opts testpki.Options) *testpki.Authority {
	t.Helper()
	if opts.Now.IsZero() {
		opts.Now = pkiNow
	}
	a, err := testpki.New(opts)
	require.NoError(t, err)
	return a
}

// pkiVerify mints a quote and collateral with a and verifies them at a's
// clock with a verifier that trusts a's root.
func pkiVerify(t *testing.T, a *testpki.Authority, q testpki.QuoteOptions, c testpki.CollateralOptions) (*tdx.Verdict, error) {
	t.Helper()
	quote, err := a.MintQuote(q)
	require.NoError(t, err)
	coll, err := a.Collateral(c)
	require.NoError(t, err)
	v := newVerifier(t, dcap.Options{TrustedRoot: a.Root()})
	return v.VerifyWithCollateral(context.Background(), quote, coll, a.Now())
}

func TestPKIQuoteFormats(t *testing.T) {
	t.Parallel()
	formats := []struct {
		name     string
		version  uint16
		bodyType uint16
	}{
		{"v4", 4, tdx.BodyTypeTD10},
		{"v5 TD 1.0", 5, tdx.BodyTypeTD10},
		{"v5 TD 1.5", 5, tdx.BodyTypeTD15},
	}
	for _, ca := range []testpki.CAType{testpki.PlatformCA, testpki.ProcessorCA} {
		for _, f := range formats {
			t.Run(fmt.Sprintf("%s/%s", ca, f.name), func(t *testing.T) {
				t.Parallel()
				a := newAuthority(t, testpki.Options{CA: ca})
				verdict, err := pkiVerify(t, a, testpki.QuoteOptions{Version: f.version, BodyType: f.bodyType}, testpki.CollateralOptions{})
				require.NoError(t, err)
				assert.Equal(t, tdx.TCBUpToDate, verdict.TCBStatus)
				assert.Equal(t, a.FMSPCHex(), verdict.FMSPC)
				assert.Empty(t, verdict.AdvisoryIDs)
				assert.Equal(t, f.version, verdict.Quote.Header.Version)
				assert.Equal(t, f.bodyType, verdict.Quote.BodyType)
				assert.Equal(t, a.DefaultBody().MRTD, verdict.Quote.Body.MRTD)
				// TCB info, QE identity and PCK CRL expire 30 days after
				// their issue, a day before Now.
				assert.Equal(t, a.Now().Add(-24*time.Hour).AddDate(0, 0, 30), verdict.ValidUntil.UTC())
			})
		}
	}
}

// Each status of the matching platform TCB level reaches the verdict with
// its advisories: the policy, not the verifier, decides what to accept.
func TestPKITCBStatuses(t *testing.T) {
	t.Parallel()
	a := newAuthority(t, testpki.Options{})
	for _, status := range []tdx.TCBStatus{
		tdx.TCBUpToDate, tdx.TCBSWHardeningNeeded, tdx.TCBConfigurationNeeded,
		tdx.TCBConfigurationAndSWHardeningNeeded, tdx.TCBOutOfDate,
		tdx.TCBOutOfDateConfigurationNeeded, tdx.TCBRevoked,
	} {
		t.Run(string(status), func(t *testing.T) {
			t.Parallel()
			adv := []string{"INTEL-SA-00001", "INTEL-SA-" + string(status)}
			verdict, err := pkiVerify(t, a, testpki.QuoteOptions{Version: 5, BodyType: tdx.BodyTypeTD15},
				testpki.CollateralOptions{TCBStatus: status, AdvisoryIDs: adv})
			require.NoError(t, err)
			assert.Equal(t, status, verdict.TCBStatus)
			assert.Equal(t, adv, verdict.AdvisoryIDs)
		})
	}
}

// Intel's convergence rules: an out-of-date QE (or TDX module) makes the
// platform out of date, keeping "configuration needed"; a revoked one
// revokes it.
func TestPKIStatusConvergence(t *testing.T) {
	t.Parallel()
	a := newAuthority(t, testpki.Options{})
	qe := a.QE()
	tee := a.TEETCBSVN()
	tests := []struct {
		platform, component, want tdx.TCBStatus
	}{
		{tdx.TCBUpToDate, tdx.TCBUpToDate, tdx.TCBUpToDate},
		{tdx.TCBSWHardeningNeeded, tdx.TCBUpToDate, tdx.TCBSWHardeningNeeded},
		{tdx.TCBUpToDate, tdx.TCBOutOfDate, tdx.TCBOutOfDate},
		{tdx.TCBSWHardeningNeeded, tdx.TCBOutOfDate, tdx.TCBOutOfDate},
		{tdx.TCBConfigurationNeeded, tdx.TCBOutOfDate, tdx.TCBOutOfDateConfigurationNeeded},
		{tdx.TCBConfigurationAndSWHardeningNeeded, tdx.TCBOutOfDate, tdx.TCBOutOfDateConfigurationNeeded},
		{tdx.TCBOutOfDate, tdx.TCBOutOfDate, tdx.TCBOutOfDate},
		{tdx.TCBOutOfDateConfigurationNeeded, tdx.TCBOutOfDate, tdx.TCBOutOfDateConfigurationNeeded},
		{tdx.TCBUpToDate, tdx.TCBRevoked, tdx.TCBRevoked},
		{tdx.TCBConfigurationNeeded, tdx.TCBRevoked, tdx.TCBRevoked},
		{tdx.TCBRevoked, tdx.TCBUpToDate, tdx.TCBRevoked},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("QE/%s+%s", tt.platform, tt.component), func(t *testing.T) {
			t.Parallel()
			id := a.QEIdentity()
			id.TCBLevels = []testpki.SVNLevel{
				{ISVSVN: qe.ISVSVN + 1, Status: tdx.TCBUpToDate},
				{ISVSVN: qe.ISVSVN, Status: tt.component, AdvisoryIDs: []string{"INTEL-SA-QE"}},
			}
			verdict, err := pkiVerify(t, a, testpki.QuoteOptions{},
				testpki.CollateralOptions{TCBStatus: tt.platform, AdvisoryIDs: []string{"INTEL-SA-PLATFORM"}, QEIdentity: &id})
			require.NoError(t, err)
			assert.Equal(t, tt.want, verdict.TCBStatus)
			assert.Equal(t, []string{"INTEL-SA-PLATFORM", "INTEL-SA-QE"}, verdict.AdvisoryIDs)
		})
		t.Run(fmt.Sprintf("module/%s+%s", tt.platform, tt.component), func(t *testing.T) {
			t.Parallel()
			ids := a.TDXModuleIdentities()
			ids[0].TCBLevels = []testpki.SVNLevel{
				{ISVSVN: uint16(tee[0]) + 1, Status: tdx.TCBUpToDate},
				{ISVSVN: uint16(tee[0]), Status: tt.component, AdvisoryIDs: []string{"INTEL-SA-MODULE"}},
			}
			verdict, err := pkiVerify(t, a, testpki.QuoteOptions{Version: 5, BodyType: tdx.BodyTypeTD15},
				testpki.CollateralOptions{TCBStatus: tt.platform, AdvisoryIDs: []string{"INTEL-SA-PLATFORM"}, TDXModuleIdentities: ids})
			require.NoError(t, err)
			assert.Equal(t, tt.want, verdict.TCBStatus)
			assert.Equal(t, []string{"INTEL-SA-PLATFORM", "INTEL-SA-MODULE"}, verdict.AdvisoryIDs)
		})
	}
}

// Module out of date and QE out of date together: still OutOfDate, with
// every advisory once.
func TestPKIAdvisoriesUnion(t *testing.T) {
	t.Parallel()
	a := newAuthority(t, testpki.Options{})
	tee := a.TEETCBSVN()
	ids := a.TDXModuleIdentities()
	ids[0].TCBLevels = []testpki.SVNLevel{{ISVSVN: uint16(tee[0]), Status: tdx.TCBOutOfDate, AdvisoryIDs: []string{"INTEL-SA-1", "INTEL-SA-2"}}}
	qe := a.QEIdentity()
	qe.TCBLevels = []testpki.SVNLevel{{ISVSVN: 0, Status: tdx.TCBOutOfDate, AdvisoryIDs: []string{"INTEL-SA-2", "INTEL-SA-3"}}}
	verdict, err := pkiVerify(t, a, testpki.QuoteOptions{}, testpki.CollateralOptions{
		TCBStatus: tdx.TCBSWHardeningNeeded, AdvisoryIDs: []string{"INTEL-SA-1"}, TDXModuleIdentities: ids, QEIdentity: &qe,
	})
	require.NoError(t, err)
	assert.Equal(t, tdx.TCBOutOfDate, verdict.TCBStatus)
	assert.Equal(t, []string{"INTEL-SA-1", "INTEL-SA-2", "INTEL-SA-3"}, verdict.AdvisoryIDs)
}

// TEE_TCB_SVN[1] is the TDX module's major version. When it is not zero,
// the module (bytes 0 and 1) is judged by its module identity and the TCB
// levels compare TDX components from byte 2 on; when it is zero, every
// byte is compared against the TCB levels and no module identity is used.
func TestPKIModuleVersionRules(t *testing.T) {
	t.Parallel()
	levels := func(a *testpki.Authority) []testpki.TCBLevel {
		l := a.TCBLevels()
		l[0].TDXComponents[0]++ // the newest level wants a newer module SVN
		return l
	}
	t.Run("major version 1", func(t *testing.T) {
		t.Parallel()
		a := newAuthority(t, testpki.Options{TEETCBSVN: [16]byte{6, 1, 3}})
		verdict, err := pkiVerify(t, a, testpki.QuoteOptions{}, testpki.CollateralOptions{TCBLevels: levels(a)})
		require.NoError(t, err)
		assert.Equal(t, tdx.TCBUpToDate, verdict.TCBStatus, "byte 0 is the module's, judged by TDX_01")
	})
	t.Run("major version 0", func(t *testing.T) {
		t.Parallel()
		a := newAuthority(t, testpki.Options{TEETCBSVN: [16]byte{6, 0, 3}})
		verdict, err := pkiVerify(t, a, testpki.QuoteOptions{}, testpki.CollateralOptions{
			TCBLevels: levels(a), TDXModuleIdentities: []testpki.TDXModuleIdentity{},
		})
		require.NoError(t, err)
		assert.Equal(t, tdx.TCBOutOfDate, verdict.TCBStatus, "byte 0 is below the newest level: the next level applies")
		assert.Equal(t, []string{"INTEL-SA-00837"}, verdict.AdvisoryIDs)
	})
	t.Run("major version 3 of a TD 1.5 quote", func(t *testing.T) {
		t.Parallel()
		a := newAuthority(t, testpki.Options{TEETCBSVN: [16]byte{2, 3, 3}})
		verdict, err := pkiVerify(t, a, testpki.QuoteOptions{Version: 5, BodyType: tdx.BodyTypeTD15}, testpki.CollateralOptions{})
		require.NoError(t, err)
		assert.Equal(t, tdx.TCBUpToDate, verdict.TCBStatus)
		assert.Equal(t, byte(3), verdict.Quote.Body.TEETCBSVN[1])
	})
	t.Run("identity id matched without case", func(t *testing.T) {
		t.Parallel()
		a := newAuthority(t, testpki.Options{TEETCBSVN: [16]byte{6, 0x0a, 3}})
		ids := a.TDXModuleIdentities()
		require.Equal(t, "TDX_0A", ids[0].ID)
		ids[0].ID = "tdx_0a"
		verdict, err := pkiVerify(t, a, testpki.QuoteOptions{}, testpki.CollateralOptions{TDXModuleIdentities: ids})
		require.NoError(t, err)
		assert.Equal(t, tdx.TCBUpToDate, verdict.TCBStatus)
	})
	t.Run("no identity for the module", func(t *testing.T) {
		t.Parallel()
		a := newAuthority(t, testpki.Options{})
		_, err := pkiVerify(t, a, testpki.QuoteOptions{Version: 5, BodyType: tdx.BodyTypeTD15},
			testpki.CollateralOptions{TDXModuleIdentities: []testpki.TDXModuleIdentity{}})
		require.ErrorIs(t, err, dcap.ErrTDXModule)
		assert.Contains(t, err.Error(), "TDX_01")
	})
	t.Run("module SVN below every module level", func(t *testing.T) {
		t.Parallel()
		a := newAuthority(t, testpki.Options{})
		ids := a.TDXModuleIdentities()
		ids[0].TCBLevels = []testpki.SVNLevel{{ISVSVN: uint16(a.TEETCBSVN()[0]) + 1, Status: tdx.TCBUpToDate}}
		_, err := pkiVerify(t, a, testpki.QuoteOptions{}, testpki.CollateralOptions{TDXModuleIdentities: ids})
		require.ErrorIs(t, err, dcap.ErrTCBLevelNotFound)
	})
	t.Run("module identity with another signer", func(t *testing.T) {
		t.Parallel()
		a := newAuthority(t, testpki.Options{})
		ids := a.TDXModuleIdentities()
		ids[0].MRSigner[0] = 1
		_, err := pkiVerify(t, a, testpki.QuoteOptions{}, testpki.CollateralOptions{TDXModuleIdentities: ids})
		require.ErrorIs(t, err, dcap.ErrTDXModule)
	})
}

func TestPKITCBLevelNotFound(t *testing.T) {
	t.Parallel()
	a := newAuthority(t, testpki.Options{})
	tests := map[string]func(*testpki.TCBLevel){
		"SGX component": func(l *testpki.TCBLevel) { l.SGXComponents[3]++ },
		"PCESVN":        func(l *testpki.TCBLevel) { l.PCESVN++ },
		"TDX component": func(l *testpki.TCBLevel) { l.TDXComponents[2]++ },
	}
	for name, raise := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			l := a.TCBLevels()[0]
			raise(&l)
			_, err := pkiVerify(t, a, testpki.QuoteOptions{}, testpki.CollateralOptions{TCBLevels: []testpki.TCBLevel{l}})
			require.ErrorIs(t, err, dcap.ErrTCBLevelNotFound)
			assert.Contains(t, err.Error(), a.FMSPCHex())
		})
	}
}

func TestPKIRevocation(t *testing.T) {
	t.Parallel()
	a := newAuthority(t, testpki.Options{})
	tests := map[string]testpki.CollateralOptions{
		"PCK certificate in the PCK CRL":    {RevokePCK: true},
		"PCK CA in the root CA CRL":         {RevokePCKCA: true},
		"TCB signing cert in the root CRL":  {RevokeTCBSigning: true},
		"PCK and PCK CA both revoked":       {RevokePCK: true, RevokePCKCA: true},
		"revoked PCK with a TD 1.5 quote":   {RevokePCK: true},
		"revoked PCK with UpToDate statuss": {RevokePCK: true, TCBStatus: tdx.TCBUpToDate},
	}
	for name, opts := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := pkiVerify(t, a, testpki.QuoteOptions{Version: 5, BodyType: tdx.BodyTypeTD15}, opts)
			require.ErrorIs(t, err, dcap.ErrRevoked)
		})
	}
}

func TestPKIQEIdentityMismatch(t *testing.T) {
	t.Parallel()
	a := newAuthority(t, testpki.Options{})
	tests := map[string]func(*testpki.QEIdentity){
		"MRSIGNER":   func(q *testpki.QEIdentity) { q.MRSigner[0] ^= 1 },
		"ISVPRODID":  func(q *testpki.QEIdentity) { q.ISVProdID++ },
		"MISCSELECT": func(q *testpki.QEIdentity) { q.MiscSelect = 1 },
		"ATTRIBUTES": func(q *testpki.QEIdentity) { q.Attributes[0] ^= 0x10 },
		"ISVSVN below every level": func(q *testpki.QEIdentity) {
			q.TCBLevels = []testpki.SVNLevel{{ISVSVN: a.QE().ISVSVN + 1, Status: tdx.TCBUpToDate}}
		},
	}
	for name, edit := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			id := a.QEIdentity()
			edit(&id)
			_, err := pkiVerify(t, a, testpki.QuoteOptions{}, testpki.CollateralOptions{QEIdentity: &id})
			require.ErrorIs(t, err, dcap.ErrQEIdentity)
		})
	}
	t.Run("masked bits ignored", func(t *testing.T) {
		t.Parallel()
		// The identity's mask clears attribute bit 2 (FBFF...): a QE that
		// sets it still matches.
		qe := a.QE()
		qe.Attributes[0] |= 0x04
		b := newAuthority(t, testpki.Options{QE: &qe})
		verdict, err := pkiVerify(t, b, testpki.QuoteOptions{}, testpki.CollateralOptions{})
		require.NoError(t, err)
		assert.Equal(t, tdx.TCBUpToDate, verdict.TCBStatus)
	})
}

func TestPKIFMSPC(t *testing.T) {
	t.Parallel()
	a := newAuthority(t, testpki.Options{})
	verdict, err := pkiVerify(t, a, testpki.QuoteOptions{}, testpki.CollateralOptions{LowercaseFMSPC: true})
	require.NoError(t, err, "a PCCS may write the FMSPC in lower case")
	assert.Equal(t, a.FMSPCHex(), verdict.FMSPC, "the verdict's FMSPC is upper-case")

	_, err = pkiVerify(t, a, testpki.QuoteOptions{}, testpki.CollateralOptions{FMSPC: "00906ED50000"})
	require.ErrorIs(t, err, dcap.ErrFMSPCMismatch)
	assert.Contains(t, err.Error(), "00906ED50000")
	assert.Contains(t, err.Error(), a.FMSPCHex())
}

func TestPKIOtherRoot(t *testing.T) {
	t.Parallel()
	a := newAuthority(t, testpki.Options{})
	b := newAuthority(t, testpki.Options{})
	quoteA, err := a.MintQuote(testpki.QuoteOptions{})
	require.NoError(t, err)
	collA, err := a.Collateral(testpki.CollateralOptions{})
	require.NoError(t, err)
	collB, err := b.Collateral(testpki.CollateralOptions{})
	require.NoError(t, err)

	// Same names, other keys: b's root does not vouch for a's chain.
	vB := newVerifier(t, dcap.Options{TrustedRoot: b.Root()})
	_, err = vB.VerifyWithCollateral(context.Background(), quoteA, collB, pkiNow)
	require.ErrorIs(t, err, dcap.ErrPCKChain)

	// a's root does not vouch for b's collateral.
	vA := newVerifier(t, dcap.Options{TrustedRoot: a.Root()})
	_, err = vA.VerifyWithCollateral(context.Background(), quoteA, collB, pkiNow)
	require.ErrorIs(t, err, dcap.ErrCollateralSignature)

	// A PCK chain that carries a's leaf and CA but b's root.
	chain := append(pemOf(a.PCK(), a.PCKCA(), b.Root()), 0)
	q, err := a.MintQuote(testpki.QuoteOptions{PCKChainPEM: chain})
	require.NoError(t, err)
	_, err = vA.VerifyWithCollateral(context.Background(), q, collA, pkiNow)
	require.ErrorIs(t, err, dcap.ErrPCKChain)

	// The chain may omit the root: the verifier has it.
	q, err = a.MintQuote(testpki.QuoteOptions{PCKChainPEM: pemOf(a.PCK(), a.PCKCA())})
	require.NoError(t, err)
	_, err = vA.VerifyWithCollateral(context.Background(), q, collA, pkiNow)
	require.NoError(t, err)
}

func TestPKITDXModuleSigner(t *testing.T) {
	t.Parallel()
	a := newAuthority(t, testpki.Options{})
	tests := []struct {
		name string
		edit func(*tdx.TDReport)
		want error
	}{
		{"MRSIGNERSEAM not Intel", func(b *tdx.TDReport) { b.MRSignerSEAM[47] = 1 }, dcap.ErrSEAMSigner},
		{"MRSERVICETD set", func(b *tdx.TDReport) { b.MRServiceTD[0] = 1 }, dcap.ErrSEAMSigner},
		{"SEAMATTRIBUTES set", func(b *tdx.TDReport) { b.SEAMAttributes[0] = 1 }, dcap.ErrTDXModule},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			body := a.DefaultBody()
			tt.edit(&body)
			_, err := pkiVerify(t, a, testpki.QuoteOptions{Version: 5, BodyType: tdx.BodyTypeTD15, Body: &body}, testpki.CollateralOptions{})
			require.ErrorIs(t, err, tt.want)
		})
	}
}

// A debug TD verifies: rejecting it is the caller's policy, which reads it
// from the verdict's quote.
func TestPKIDebugTDIsReported(t *testing.T) {
	t.Parallel()
	a := newAuthority(t, testpki.Options{})
	body := a.DefaultBody()
	body.TDAttributes[0] |= 0x01
	verdict, err := pkiVerify(t, a, testpki.QuoteOptions{Body: &body}, testpki.CollateralOptions{})
	require.NoError(t, err)
	assert.True(t, verdict.Quote.Body.Debug())
}

func TestPKIDefects(t *testing.T) {
	t.Parallel()
	a := newAuthority(t, testpki.Options{})
	tests := map[testpki.Defect]error{
		testpki.BadQuoteSignature:     dcap.ErrQuoteSignature,
		testpki.BadQEReportSignature:  dcap.ErrQEReportSignature,
		testpki.UnboundAttestationKey: dcap.ErrQEBinding,
	}
	for defect, want := range tests {
		for _, version := range []uint16{4, 5} {
			t.Run(fmt.Sprintf("%d/v%d", defect, version), func(t *testing.T) {
				t.Parallel()
				_, err := pkiVerify(t, a, testpki.QuoteOptions{Version: version, Defect: defect}, testpki.CollateralOptions{})
				require.ErrorIs(t, err, want)
			})
		}
	}
}

func TestPKIDates(t *testing.T) {
	t.Parallel()
	a := newAuthority(t, testpki.Options{})
	_, err := pkiVerify(t, a, testpki.QuoteOptions{}, testpki.CollateralOptions{Expired: true})
	require.ErrorIs(t, err, dcap.ErrCollateralExpired)

	_, err = pkiVerify(t, a, testpki.QuoteOptions{}, testpki.CollateralOptions{IssueDate: a.Now().Add(time.Hour)})
	require.ErrorIs(t, err, dcap.ErrCollateralNotYetValid)

	// The root CA CRL has its own nextUpdate.
	_, err = pkiVerify(t, a, testpki.QuoteOptions{}, testpki.CollateralOptions{RootCRLNextUpdate: a.Now().Add(-time.Minute)})
	require.ErrorIs(t, err, dcap.ErrCollateralExpired)
	assert.Contains(t, err.Error(), "root CA CRL")

	for name, modify := range map[string]func(*x509.Certificate){
		"PCK expired":         func(c *x509.Certificate) { c.NotAfter = a.Now().Add(-time.Hour) },
		"PCK not yet valid":   func(c *x509.Certificate) { c.NotBefore = a.Now().Add(time.Hour) },
		"PCK without SGX ext": func(c *x509.Certificate) { c.ExtraExtensions = nil },
		"PCK cannot sign":     func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageContentCommitment },
		"PCK is a CA": func(c *x509.Certificate) {
			c.IsCA, c.KeyUsage = true, c.KeyUsage|x509.KeyUsageCertSign
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := newAuthority(t, testpki.Options{ModifyPCK: modify})
			_, err := pkiVerify(t, b, testpki.QuoteOptions{}, testpki.CollateralOptions{})
			require.ErrorIs(t, err, dcap.ErrPCKChain)
		})
	}
}

// Collateral that is authentic (well signed) but not TDX TCB info v3 /
// TD_QE identity v2 is refused as malformed.
func TestPKIUnexpectedCollateral(t *testing.T) {
	t.Parallel()
	a := newAuthority(t, testpki.Options{})
	replace := func(old, new string) func([]byte) []byte {
		return func(b []byte) []byte { return []byte(strings.Replace(string(b), old, new, 1)) }
	}
	tests := map[string]testpki.CollateralOptions{
		"SGX TCB info":        {RewriteTCBInfo: replace(`"id":"TDX"`, `"id":"SGX"`)},
		"TCB info version 2":  {RewriteTCBInfo: replace(`"version":3`, `"version":2`)},
		"SGX QE identity":     {RewriteQEIdentity: replace(`"id":"TD_QE"`, `"id":"QE"`)},
		"QE identity v1":      {RewriteQEIdentity: replace(`"version":2`, `"version":1`)},
		"TCB info not JSON":   {RewriteTCBInfo: func([]byte) []byte { return []byte("{") }},
		"no TCB levels":       {TCBLevels: []testpki.TCBLevel{}},
		"unknown status text": {TCBStatus: "Great"},
	}
	for name, opts := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := pkiVerify(t, a, testpki.QuoteOptions{}, opts)
			require.ErrorIs(t, err, dcap.ErrMalformedCollateral)
		})
	}
}

func TestNonIntelRootWarns(t *testing.T) {
	t.Parallel()
	a := newAuthority(t, testpki.Options{})
	var logs logBuffer
	_, err := dcap.New(dcap.Options{TrustedRoot: a.Root(), Logger: logs.Logger()})
	require.NoError(t, err)
	assert.Contains(t, logs.String(), "not Intel's SGX Root CA")
	assert.Contains(t, logs.String(), "WARN")

	var quiet logBuffer
	_, err = dcap.New(dcap.Options{TrustedRoot: dcap.IntelRootCA(), Logger: quiet.Logger()})
	require.NoError(t, err)
	assert.Empty(t, quiet.String())

	_, err = dcap.New(dcap.Options{TrustedRoot: a.PCK()})
	require.Error(t, err, "a leaf certificate is no root")
	_, err = dcap.New(dcap.Options{CollateralURL: "ftp://example.invalid"})
	require.Error(t, err)
	_, err = dcap.New(dcap.Options{FetchTimeout: -time.Second})
	require.Error(t, err)
}

// The collateral a test authority mints survives the interchange JSON.
func TestPKICollateralJSON(t *testing.T) {
	t.Parallel()
	a := newAuthority(t, testpki.Options{})
	c, err := a.Collateral(testpki.CollateralOptions{})
	require.NoError(t, err)
	b, err := json.Marshal(c)
	require.NoError(t, err)
	var back dcap.Collateral
	require.NoError(t, json.Unmarshal(b, &back))
	quote, err := a.MintQuote(testpki.QuoteOptions{})
	require.NoError(t, err)
	_, err = newVerifier(t, dcap.Options{TrustedRoot: a.Root()}).VerifyWithCollateral(context.Background(), quote, &back, a.Now())
	require.NoError(t, err)
}
