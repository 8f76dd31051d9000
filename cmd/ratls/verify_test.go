package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/teesql/ratls/dcap"
	"github.com/teesql/ratls/ratlstest"
	"github.com/teesql/ratls/tdx"
)

var quoteResultKeys = []string{
	"accepted", "advisory_ids", "debug", "error", "fmspc", "mrtd",
	"quote_version", "tcb_status", "td_attributes",
}

// sampleMRTD is the MRTD of the recorded quote, read with the tdx parser.
func sampleMRTD(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile(testdata("dcap-qvl", "tdx_quote"))
	require.NoError(t, err)
	q, err := tdx.ParseQuote(raw)
	require.NoError(t, err)
	return hexs(q.Body.MRTD[:])
}

func verifyArgs(at string, extra ...string) []string {
	return append([]string{"verify-quote",
		"--quote", testdata("dcap-qvl", "tdx_quote"),
		"--collateral", testdata("dcap-qvl", "tdx_quote_collateral.json"),
		"--at", at}, extra...)
}

func TestVerifyQuoteUpToDate(t *testing.T) {
	t.Parallel()
	r := runCmd(t, nil, verifyArgs("2025-06-25T00:00:00Z", "--json")...)
	require.Equal(t, exitOK, r.code, r.stderr)
	m := decodeJSON(t, r.stdout)
	assert.Equal(t, quoteResultKeys, keys(m))
	assert.Equal(t, true, m["accepted"])
	assert.Equal(t, "", m["error"])
	assert.Equal(t, "UpToDate", m["tcb_status"])
	assert.True(t, strings.EqualFold("B0C06F000000", m["fmspc"].(string)), m["fmspc"])
	assert.EqualValues(t, 4, m["quote_version"])
	assert.Equal(t, sampleMRTD(t), m["mrtd"])
	assert.Equal(t, false, m["debug"])
	assert.Len(t, m["td_attributes"], 16)
	assert.NotNil(t, m["advisory_ids"])
	assert.NotContains(t, r.stderr, "NOT INTEL'S ROOT")

	// The same in text.
	r = runCmd(t, nil, verifyArgs("2025-06-25T00:00:00Z")...)
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "UpToDate")
	assert.Contains(t, r.stdout, "accepted")
	assert.Contains(t, r.stdout, sampleMRTD(t))
}

func TestVerifyQuoteExpiredCollateral(t *testing.T) {
	t.Parallel()
	r := runCmd(t, nil, verifyArgs("2025-08-01T00:00:00Z", "--json")...)
	assert.Equal(t, exitFail, r.code)
	m := decodeJSON(t, r.stdout)
	assert.Equal(t, quoteResultKeys, keys(m))
	assert.Equal(t, false, m["accepted"])
	assert.NotEmpty(t, m["error"])
	// What the quote says is shown even though it was refused.
	assert.Equal(t, sampleMRTD(t), m["mrtd"])
	assert.NotEmpty(t, r.stderr)

	r = runCmd(t, nil, verifyArgs("2025-08-01T00:00:00Z")...)
	assert.Equal(t, exitFail, r.code)
	assert.Contains(t, r.stdout, "REJECTED")
}

func TestVerifyQuotePolicy(t *testing.T) {
	t.Parallel()
	at := "2025-06-25T00:00:00Z"
	other := strings.Repeat("00", 48)
	for _, tc := range []struct {
		name    string
		flags   []string
		accept  bool
		errLike string
	}{
		{"right mrtd", []string{"--mrtd", sampleMRTD(t)}, true, ""},
		{"right mrtd upper case, among others", []string{"--mrtd", other + ",0x" + strings.ToUpper(sampleMRTD(t))}, true, ""},
		{"wrong mrtd", []string{"--mrtd", other}, false, "MRTD not allowed"},
		{"status not accepted", []string{"--accept-tcb", "SWHardeningNeeded"}, false, "TCB status not accepted"},
		{"status accepted", []string{"--accept-tcb", "UpToDate"}, true, ""},
		{"compose hash cannot be established", []string{"--compose-hash", strings.Repeat("11", 32)}, false, "app identity"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := runCmd(t, nil, verifyArgs(at, append(tc.flags, "--json")...)...)
			m := decodeJSON(t, r.stdout)
			assert.Equal(t, tc.accept, m["accepted"])
			if tc.accept {
				assert.Equal(t, exitOK, r.code, r.stderr)
				return
			}
			assert.Equal(t, exitFail, r.code)
			assert.Contains(t, m["error"], tc.errLike)
			assert.Contains(t, r.stderr, tc.errLike)
			// The quote itself verified: its status is still reported.
			assert.Equal(t, "UpToDate", m["tcb_status"])
		})
	}
}

// MRTDs are accepted as the core accepts them: 0x prefix, any case.
func TestVerifyQuoteMRTDPrefixedUpperCase(t *testing.T) {
	t.Parallel()
	r := runCmd(t, nil, verifyArgs("2025-06-25T00:00:00Z", "--json", "--mrtd", "0x"+strings.ToUpper(sampleMRTD(t)))...)
	require.Equal(t, exitOK, r.code, r.stderr)
	m := decodeJSON(t, r.stdout)
	assert.Equal(t, true, m["accepted"])
	assert.Equal(t, "", m["error"])
	assert.Equal(t, "UpToDate", m["tcb_status"])
}

func TestVerifyQuoteHexFile(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(testdata("dcap-qvl", "tdx_quote"))
	require.NoError(t, err)
	p := filepath.Join(t.TempDir(), "quote.hex")
	require.NoError(t, os.WriteFile(p, []byte(hexs(raw)+"\n"), 0o600))
	r := runCmd(t, nil, "verify-quote", "--quote", p,
		"--collateral", testdata("dcap-qvl", "tdx_quote_collateral.json"),
		"--at", "2025-06-25T00:00:00Z", "--json")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Equal(t, true, decodeJSON(t, r.stdout)["accepted"])
}

func TestVerifyQuoteGarbage(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "garbage")
	require.NoError(t, os.WriteFile(p, []byte("\x04\x00not a quote at all"), 0o600))
	r := runCmd(t, nil, "verify-quote", "--quote", p,
		"--collateral", testdata("dcap-qvl", "tdx_quote_collateral.json"), "--json")
	assert.Equal(t, exitFail, r.code)
	m := decodeJSON(t, r.stdout)
	assert.Equal(t, false, m["accepted"])
	assert.NotEmpty(t, m["error"])
}

// --trusted-root naming Intel's own root changes nothing and is not
// announced; any other root is, on one line, whatever the outcome.
func TestVerifyQuoteTrustedRootBanner(t *testing.T) {
	t.Parallel()
	at := "2025-06-25T00:00:00Z"
	intel := writePEMFile(t, "CERTIFICATE", dcap.IntelRootCA().Raw)
	r := runCmd(t, nil, verifyArgs(at, "--json", "--trusted-root", intel)...)
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Equal(t, true, decodeJSON(t, r.stdout)["accepted"])
	assert.NotContains(t, r.stderr, "NOT INTEL'S ROOT")

	auth, err := ratlstest.NewAuthority(ratlstest.AuthorityOptions{Logger: quietLogger})
	require.NoError(t, err)
	otherPath := writePEMFile(t, "CERTIFICATE", auth.Root().Raw)
	r = runCmd(t, nil, verifyArgs(at, "--json", "--trusted-root", otherPath)...)
	assert.Equal(t, exitFail, r.code)
	assert.Equal(t, false, decodeJSON(t, r.stdout)["accepted"])
	assertRootBanner(t, r.stderr, auth.Root().Subject.CommonName, otherPath)
	assert.True(t, strings.HasPrefix(r.stderr, "ratls verify-quote: WARNING: NOT INTEL'S ROOT"), r.stderr)
}

func TestVerifyQuoteUsage(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"verify-quote"},
		{"verify-quote", "--quote", "q", "extra"},
		{"verify-quote", "--quote", "q", "--at", "yesterday"},
		{"verify-quote", "--quote", "q", "--mrtd", "beef"},
		{"verify-quote", "--quote", "q", "--accept-tcb", "Great"},
	} {
		r := runCmd(t, nil, args...)
		assert.Equal(t, exitUsage, r.code, "%v: %s", args, r.stderr)
	}
	r := runCmd(t, nil, "verify-quote", "--quote", filepath.Join(t.TempDir(), "missing"))
	assert.Equal(t, exitFail, r.code)
	assert.Contains(t, r.stderr, "no such file")
}
