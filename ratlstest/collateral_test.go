package ratlstest

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/teesql/ratls/dcap"
	"github.com/teesql/ratls/tdx"
)

func defaultQuote(t *testing.T, auth *Authority) []byte {
	t.Helper()
	q, err := auth.Quote(TD{}, [64]byte{0x01})
	require.NoError(t, err)
	return q
}

// The status chosen for the level the platform matches is the verdict's,
// for every status Intel defines.
func TestCollateralLevelStatus(t *testing.T) {
	t.Parallel()
	auth := newAuthority(t)
	q := defaultQuote(t, auth)
	for _, status := range []tdx.TCBStatus{
		tdx.TCBUpToDate, tdx.TCBSWHardeningNeeded, tdx.TCBConfigurationNeeded,
		tdx.TCBConfigurationAndSWHardeningNeeded, tdx.TCBOutOfDate,
		tdx.TCBOutOfDateConfigurationNeeded, tdx.TCBRevoked,
	} {
		t.Run(string(status), func(t *testing.T) {
			t.Parallel()
			levels := auth.TCBLevels()
			levels[0].Status = status
			levels[0].AdvisoryIDs = []string{"INTEL-SA-01234", "INTEL-SA-05678"}
			verdict, err := verifyOffline(t, auth, q, CollateralOptions{TCBLevels: levels})
			require.NoError(t, err)
			assert.Equal(t, status, verdict.TCBStatus)
			assert.ElementsMatch(t, levels[0].AdvisoryIDs, verdict.AdvisoryIDs)
		})
	}
}

// The verifier rates the platform by the first level it reaches: levels
// above the platform's TCB are skipped.
func TestCollateralLevelSelection(t *testing.T) {
	t.Parallel()
	auth := newAuthority(t)
	q := defaultQuote(t, auth)
	atPlatform := auth.TCBLevels()[0]
	aboveTDX, aboveSGX, abovePCE := atPlatform, atPlatform, atPlatform
	aboveTDX.TDXComponents[2]++
	aboveSGX.SGXComponents[0]++
	abovePCE.PCESVN++
	lower := TCBLevel{Status: tdx.TCBSWHardeningNeeded, AdvisoryIDs: []string{"INTEL-SA-00615"}}

	for _, above := range []TCBLevel{aboveTDX, aboveSGX, abovePCE} {
		above.Status = tdx.TCBUpToDate
		verdict, err := verifyOffline(t, auth, q, CollateralOptions{TCBLevels: []TCBLevel{above, lower}})
		require.NoError(t, err)
		assert.Equal(t, tdx.TCBSWHardeningNeeded, verdict.TCBStatus)
		assert.Equal(t, []string{"INTEL-SA-00615"}, verdict.AdvisoryIDs)

		_, err = verifyOffline(t, auth, q, CollateralOptions{TCBLevels: []TCBLevel{above}})
		require.ErrorIs(t, err, dcap.ErrTCBLevelNotFound)
	}
	// TCBStatus and AdvisoryIDs give way to explicit levels.
	verdict, err := verifyOffline(t, auth, q, CollateralOptions{TCBStatus: tdx.TCBRevoked, TCBLevels: []TCBLevel{lower}})
	require.NoError(t, err)
	assert.Equal(t, tdx.TCBSWHardeningNeeded, verdict.TCBStatus)
}

func TestCollateralDates(t *testing.T) {
	t.Parallel()
	auth := newAuthority(t)
	now := auth.Now()
	q := defaultQuote(t, auth)
	tests := []struct {
		name string
		opts CollateralOptions
		err  error
	}{
		{"issued in the future", CollateralOptions{IssueDate: now.Add(time.Hour)}, dcap.ErrCollateralNotYetValid},
		{"next update passed", CollateralOptions{NextUpdate: now.Add(-time.Hour)}, dcap.ErrCollateralExpired},
		{"root CRL next update passed", CollateralOptions{RootCRLNextUpdate: now.Add(-time.Hour)}, dcap.ErrCollateralExpired},
		{"expired", CollateralOptions{Expired: true}, dcap.ErrCollateralExpired},
		{"Expired overrides dates", CollateralOptions{Expired: true, IssueDate: now.Add(-time.Hour), NextUpdate: now.Add(time.Hour)}, dcap.ErrCollateralExpired},
		{"window around now", CollateralOptions{IssueDate: now.Add(-48 * time.Hour), NextUpdate: now.Add(2 * time.Hour)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			verdict, err := verifyOffline(t, auth, q, tt.opts)
			if tt.err != nil {
				require.ErrorIs(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			// The verdict holds until the earliest nextUpdate.
			assert.Equal(t, tt.opts.NextUpdate, verdict.ValidUntil)

			coll, err := auth.Collateral(tt.opts)
			require.NoError(t, err)
			info, err := dcap.ParseTCBInfo([]byte(coll.TCBInfo))
			require.NoError(t, err)
			assert.True(t, info.IssueDate.Equal(tt.opts.IssueDate), "issueDate %v", info.IssueDate)
			assert.True(t, info.NextUpdate.Equal(tt.opts.NextUpdate), "nextUpdate %v", info.NextUpdate)
			qe, err := dcap.ParseQEIdentity([]byte(coll.QEIdentity))
			require.NoError(t, err)
			assert.True(t, qe.NextUpdate.Equal(tt.opts.NextUpdate), "nextUpdate %v", qe.NextUpdate)
		})
	}
}

func TestCollateralRevocation(t *testing.T) {
	t.Parallel()
	auth := newAuthority(t)
	q := defaultQuote(t, auth)
	parsed, err := tdx.ParseQuote(q)
	require.NoError(t, err)
	pckChain := pemCerts(t, string(parsed.PCKChainPEM))
	require.GreaterOrEqual(t, len(pckChain), 2)
	leaf, pckCA := pckChain[0], pckChain[1]
	base, err := auth.Collateral(CollateralOptions{})
	require.NoError(t, err)
	tcbSigning := pemCerts(t, base.TCBInfoIssuerChain)[0]

	tests := []struct {
		name     string
		opts     CollateralOptions
		crl      func(*dcap.Collateral) string
		revoked  *big.Int
		notInCRL *big.Int
	}{
		{"PCK", CollateralOptions{RevokePCK: true}, func(c *dcap.Collateral) string { return c.PCKCRL }, leaf.SerialNumber, pckCA.SerialNumber},
		{"PCK CA", CollateralOptions{RevokePCKCA: true}, func(c *dcap.Collateral) string { return c.RootCACRL }, pckCA.SerialNumber, tcbSigning.SerialNumber},
		{"TCB signing", CollateralOptions{RevokeTCBSigning: true}, func(c *dcap.Collateral) string { return c.RootCACRL }, tcbSigning.SerialNumber, pckCA.SerialNumber},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := verifyOffline(t, auth, q, tt.opts)
			require.ErrorIs(t, err, dcap.ErrRevoked)

			coll, err := auth.Collateral(tt.opts)
			require.NoError(t, err)
			serials := crlSerials(t, tt.crl(coll))
			assert.Contains(t, serials, tt.revoked.String())
			assert.NotContains(t, serials, tt.notInCRL.String())
		})
	}
}

func TestCollateralQEIdentity(t *testing.T) {
	t.Parallel()
	auth := newAuthority(t)
	q := defaultQuote(t, auth)

	other := auth.QEIdentity()
	other.MRSigner[0] ^= 0xff
	_, err := verifyOffline(t, auth, q, CollateralOptions{QEIdentity: &other})
	require.ErrorIs(t, err, dcap.ErrQEIdentity)

	other = auth.QEIdentity()
	other.ISVProdID++
	_, err = verifyOffline(t, auth, q, CollateralOptions{QEIdentity: &other})
	require.ErrorIs(t, err, dcap.ErrQEIdentity)

	// The QE's level is rated, and an out-of-date QE makes the quote so.
	outdated := auth.QEIdentity()
	outdated.TCBLevels[0].Status = tdx.TCBOutOfDate
	outdated.TCBLevels[0].AdvisoryIDs = []string{"INTEL-SA-00999"}
	verdict, err := verifyOffline(t, auth, q, CollateralOptions{QEIdentity: &outdated})
	require.NoError(t, err)
	assert.Equal(t, tdx.TCBOutOfDate, verdict.TCBStatus)
	assert.Equal(t, []string{"INTEL-SA-00999"}, verdict.AdvisoryIDs)

	// A QE below every level is unknown.
	above := auth.QEIdentity()
	above.TCBLevels = []SVNLevel{{ISVSVN: above.TCBLevels[0].ISVSVN + 1, Status: tdx.TCBUpToDate}}
	_, err = verifyOffline(t, auth, q, CollateralOptions{QEIdentity: &above})
	require.ErrorIs(t, err, dcap.ErrQEIdentity)
}

func TestCollateralTDXModule(t *testing.T) {
	t.Parallel()
	auth := newAuthority(t)
	q := defaultQuote(t, auth)

	revoked := auth.TDXModuleIdentities()
	require.Len(t, revoked, 1)
	revoked[0].TCBLevels[0].Status = tdx.TCBRevoked
	verdict, err := verifyOffline(t, auth, q, CollateralOptions{TDXModuleIdentities: revoked})
	require.NoError(t, err)
	assert.Equal(t, tdx.TCBRevoked, verdict.TCBStatus)

	_, err = verifyOffline(t, auth, q, CollateralOptions{TDXModuleIdentities: []TDXModuleIdentity{}})
	require.ErrorIs(t, err, dcap.ErrTDXModule, "no identity for the module's version")

	foreign := auth.TDXModuleIdentities()
	foreign[0].MRSigner[0] = 0x01
	_, err = verifyOffline(t, auth, q, CollateralOptions{TDXModuleIdentities: foreign})
	require.ErrorIs(t, err, dcap.ErrTDXModule)

	// A version 0 module is matched against TDXModule instead.
	svn := auth.TEETCBSVN()
	svn[1] = 0
	v0 := mintQuote(t, auth, QuoteOptions{Body: tdx.TDReport{TEETCBSVN: svn}})
	_, err = verifyOffline(t, auth, v0, CollateralOptions{})
	require.NoError(t, err)
	module := DefaultTDXModule()
	module.Attributes[0] = 0x01
	_, err = verifyOffline(t, auth, v0, CollateralOptions{TDXModule: &module})
	require.ErrorIs(t, err, dcap.ErrTDXModule)
}

func TestCollateralFMSPC(t *testing.T) {
	t.Parallel()
	auth := newAuthority(t)
	q := defaultQuote(t, auth)
	_, err := verifyOffline(t, auth, q, CollateralOptions{FMSPC: "00A06D080000"})
	require.ErrorIs(t, err, dcap.ErrFMSPCMismatch)

	verdict, err := verifyOffline(t, auth, q, CollateralOptions{LowercaseFMSPC: true})
	require.NoError(t, err)
	assert.Equal(t, auth.FMSPC(), verdict.FMSPC)
}

// Intel's pinned root must refuse everything the test PKI mints: its
// quotes with its collateral offline, and its quotes online before any
// collateral is fetched. The test root, handed over explicitly, accepts
// the very same inputs.
func TestIntelRootRefusesTestPKI(t *testing.T) {
	t.Parallel()
	auth := newAuthority(t)
	pccs := newPCCS(t, auth)
	coll, err := auth.Collateral(CollateralOptions{})
	require.NoError(t, err)
	quotes := map[string][]byte{
		"TD":       defaultQuote(t, auth),
		"v5 TD1.5": mintQuote(t, auth, QuoteOptions{Version: 5, BodyType: tdx.BodyTypeTD15}),
	}
	ctx := context.Background()

	intel, err := dcap.New(dcap.Options{CollateralURL: pccs.URL()})
	require.NoError(t, err)
	trusting, err := pccs.NewVerifier(dcap.Options{})
	require.NoError(t, err)
	for name, q := range quotes {
		_, err := intel.VerifyWithCollateral(ctx, q, coll, auth.Now())
		require.ErrorIs(t, err, dcap.ErrPCKChain, name)
		_, err = intel.VerifyQuote(ctx, q)
		require.ErrorIs(t, err, dcap.ErrPCKChain, name)
		assert.Zero(t, pccs.TotalRequests(), "%s: refused before fetching collateral", name)

		verdict, err := trusting.VerifyWithCollateral(ctx, q, coll, auth.Now())
		require.NoError(t, err, name)
		assert.Equal(t, tdx.TCBUpToDate, verdict.TCBStatus)
	}
}

func pemCerts(t *testing.T, s string) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	rest := []byte(s)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return out
		}
		c, err := x509.ParseCertificate(b.Bytes)
		require.NoError(t, err)
		out = append(out, c)
	}
}

// crlSerials returns the serials (decimal) a hex-encoded DER CRL revokes.
func crlSerials(t *testing.T, hexCRL string) []string {
	t.Helper()
	der, err := hex.DecodeString(hexCRL)
	require.NoError(t, err)
	crl, err := x509.ParseRevocationList(der)
	require.NoError(t, err)
	var out []string
	for _, e := range crl.RevokedCertificateEntries {
		out = append(out, e.SerialNumber.String())
	}
	return out
}
