package ratls

import (
	"context"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/teesql/ratls/tdx"
)

func TestPolicyHexParsing(t *testing.T) {
	t.Parallel()
	mrtd := recordedQuote(t).Body.MRTD
	lower := hex.EncodeToString(mrtd[:])
	for _, s := range []string{lower, strings.ToUpper(lower), "0x" + lower, "0X" + strings.ToUpper(lower), " " + lower + "\n"} {
		p, err := compilePolicy(Policy{MRTDs: []string{s}}, "Policy")
		require.NoError(t, err, s)
		require.Len(t, p.mrtds, 1)
		assert.Equal(t, mrtd[:], p.mrtds[0])
	}
}

func TestPolicyRejectsBadEntries(t *testing.T) {
	t.Parallel()
	mrtd := strings.Repeat("ab", 48)
	tests := []struct {
		name   string
		policy Policy
		want   string
	}{
		{"MRTD not hex", Policy{MRTDs: []string{mrtd, strings.Repeat("zz", 48)}}, "Policy.MRTDs[1]"},
		{"MRTD odd length", Policy{MRTDs: []string{mrtd[1:]}}, "not hex"},
		{"MRTD too short", Policy{MRTDs: []string{strings.Repeat("ab", 32)}}, "32 bytes, want 48"},
		{"MRTD empty string", Policy{MRTDs: []string{""}}, "0 bytes, want 48"},
		{"compose hash length", Policy{ComposeHashes: []string{mrtd}}, "Policy.ComposeHashes[0]"},
		{"app id length", Policy{AppIDs: []string{"0x" + strings.Repeat("00", 32)}}, "want 20"},
		{"unknown TCB status", Policy{AcceptTCBStatuses: []tdx.TCBStatus{"uptodate"}}, `unknown TCB status "uptodate"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// Checked in NewClient, before anything else happens: no agent
			// is configured, so getting past the policy would fail with
			// another error.
			_, err := NewClient(context.Background(), Config{
				Policy: tt.policy, Verifier: newFakeVerifier(), Logger: discardLogger(),
				hooks: &hooks{sockets: []string{}, getenv: func(string) string { return "" }},
			})
			requireOnlySentinel(t, err, ErrConfig)
			assert.Contains(t, err.Error(), tt.want)

			_, err = NewServer(context.Background(), ServerConfig{
				ClientPolicy: tt.policy, Verifier: newFakeVerifier(), Logger: discardLogger(),
				hooks: &hooks{sockets: []string{}, getenv: func(string) string { return "" }},
			})
			requireOnlySentinel(t, err, ErrConfig)
			assert.Contains(t, err.Error(), strings.Replace(tt.want, "Policy.", "ClientPolicy.", 1))
		})
	}
}

func TestPolicyDefaults(t *testing.T) {
	t.Parallel()
	p, err := compilePolicy(Policy{}, "Policy")
	require.NoError(t, err)
	assert.Empty(t, p.mrtds)
	assert.Equal(t, []tdx.TCBStatus{tdx.TCBUpToDate, tdx.TCBSWHardeningNeeded}, p.accept)
	// An empty, non-nil list also means the default, never "accept nothing".
	p, err = compilePolicy(Policy{AcceptTCBStatuses: []tdx.TCBStatus{}}, "Policy")
	require.NoError(t, err)
	assert.Equal(t, defaultTCBStatuses, p.accept)
}

func TestPolicyCheck(t *testing.T) {
	t.Parallel()
	base := func() *Report {
		return &Report{TCBStatus: tdx.TCBUpToDate}
	}
	tests := []struct {
		name    string
		policy  Policy
		report  func(*Report)
		skipTCB bool
		want    error
	}{
		{"zero policy accepts UpToDate", Policy{}, nil, false, nil},
		{"SWHardeningNeeded accepted by default", Policy{}, func(r *Report) { r.TCBStatus = tdx.TCBSWHardeningNeeded }, false, nil},
		{"ConfigurationNeeded refused by default", Policy{}, func(r *Report) { r.TCBStatus = tdx.TCBConfigurationNeeded }, false, ErrTCBStatus},
		{"OutOfDate accepted when listed", Policy{AcceptTCBStatuses: []tdx.TCBStatus{tdx.TCBOutOfDate}}, func(r *Report) { r.TCBStatus = tdx.TCBOutOfDate }, false, nil},
		{"UpToDate refused when not listed", Policy{AcceptTCBStatuses: []tdx.TCBStatus{tdx.TCBOutOfDate}}, nil, false, ErrTCBStatus},
		{"Revoked", Policy{}, func(r *Report) { r.TCBStatus = tdx.TCBRevoked }, false, ErrTCBStatus},
		{"empty status refused", Policy{}, func(r *Report) { r.TCBStatus = "" }, false, ErrTCBStatus},
		{"empty status with noop verifier", Policy{}, func(r *Report) { r.TCBStatus = "" }, true, nil},
		{"debug refused", Policy{}, func(r *Report) { r.Debug = true }, false, ErrDebugMode},
		{"debug allowed", Policy{AllowDebugMode: true}, func(r *Report) { r.Debug = true }, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := compilePolicy(tt.policy, "Policy")
			require.NoError(t, err)
			r := base()
			if tt.report != nil {
				tt.report(r)
			}
			err = p.check(r, tt.skipTCB, nil)
			if tt.want == nil {
				require.NoError(t, err)
				return
			}
			requireOnlySentinel(t, err, tt.want)
		})
	}
}

func TestTCBStatusErrorMessage(t *testing.T) {
	t.Parallel()
	err := &TCBStatusError{
		Status:      tdx.TCBOutOfDate,
		AdvisoryIDs: []string{"INTEL-SA-00960"},
		Accepted:    []tdx.TCBStatus{tdx.TCBUpToDate},
	}
	assert.Equal(t, `ratls: TCB status not accepted: got "OutOfDate", accepted UpToDate (advisories INTEL-SA-00960)`, err.Error())
	assert.ErrorIs(t, err, ErrTCBStatus)
}

func TestPolicyWarnings(t *testing.T) {
	t.Parallel()
	var logs logBuffer
	p, err := compilePolicy(Policy{
		MRTDs:             []string{strings.Repeat("00", 48)},
		AcceptTCBStatuses: []tdx.TCBStatus{tdx.TCBUpToDate},
	}, "Policy")
	require.NoError(t, err)
	p.warn(newLogger(&logs), "server")
	assert.Empty(t, logs.String(), "a strict policy is not warned about")

	p, err = compilePolicy(Policy{AcceptTCBStatuses: []tdx.TCBStatus{tdx.TCBUpToDate, tdx.TCBOutOfDate}}, "Policy")
	require.NoError(t, err)
	p.warn(newLogger(&logs), "server")
	assert.Equal(t, 1, logs.count("MRTD allowlist is empty"))
	assert.Equal(t, 1, logs.count("TCB status is OutOfDate"))
}
