package ratlstest

import (
	"context"
	"encoding/hex"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/teesql/ratls"
	"github.com/teesql/ratls/dcap"
	"github.com/teesql/ratls/ext"
	"github.com/teesql/ratls/tdx"
)

// TestStackAgentFaults: a failing agent surfaces as ratls.ErrAgent, with a
// message that says what went wrong.
func TestStackAgentFaults(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		fault   Fault
		timeout time.Duration
		msg     string
	}{
		{"5xx", Fault{Status: http.StatusInternalServerError}, 0, "500"},
		{"bad JSON", Fault{Garbage: true}, 0, "JSON"},
		{"slow", Fault{Delay: time.Hour}, 200 * time.Millisecond, "deadline exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			st := StartStack(t, StackOptions{})
			st.Agent.SetFault(tt.fault)
			ctx := context.Background()
			if tt.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.timeout)
				defer cancel()
			}
			_, err := st.NewClient(ctx)
			require.ErrorIs(t, err, ratls.ErrAgent)
			assert.ErrorContains(t, err, tt.msg)
			_, err = st.NewServer(ctx)
			require.ErrorIs(t, err, ratls.ErrAgent)
			assert.Positive(t, st.Agent.TLSKeyCalls())
		})
	}
}

// TestStackPCCSFaults: a failing collateral source surfaces as
// ratls.ErrQuoteInvalid wrapping dcap's fetch error, and the client sends
// nothing to the server it could not verify.
func TestStackPCCSFaults(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		fault Fault
		want  error
	}{
		{"5xx", Fault{Status: http.StatusBadGateway}, dcap.ErrFetch},
		{"garbage", Fault{Garbage: true}, dcap.ErrFetch},
		{"slow", Fault{Delay: time.Hour}, dcap.ErrFetch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			st := StartStack(t, StackOptions{})
			v, err := st.PCCS.NewVerifier(dcap.Options{FetchTimeout: 200 * time.Millisecond})
			require.NoError(t, err)
			cfg := st.Config
			cfg.Verifier = v
			ctx := context.Background()
			client, err := ratls.NewClient(ctx, cfg)
			require.NoError(t, err)
			defer client.Close()
			rec, err := st.NewAdversary(Recorder)
			require.NoError(t, err)

			st.PCCS.SetFault(tt.fault)
			_, err = client.DialContext(ctx, "tcp", rec.Addr())
			require.ErrorIs(t, err, ratls.ErrQuoteInvalid)
			require.ErrorIs(t, err, tt.want)
			require.NoError(t, rec.Close())
			assert.EqualValues(t, 0, rec.BytesReceived())
		})
	}
}

func TestStackPolicyPinsTD(t *testing.T) {
	t.Parallel()
	td := TD{ComposeHash: [32]byte{0xab}}
	st := StartStack(t, StackOptions{TD: td, Format: FormatLegacy, Validity: time.Minute})
	assert.Equal(t, []string{td.MRTDHex()}, st.Config.Policy.MRTDs)
	assert.Equal(t, []string{td.ComposeHashHex()}, st.Config.Policy.ComposeHashes)
	assert.Equal(t, st.Config.Policy, st.ServerConfig.ClientPolicy)
	assert.Equal(t, st.Agent.SocketPath(), st.Config.DstackEndpoint)
	assert.Equal(t, td.withDefaults(), st.Agent.TD())

	// Legacy certificates work end to end, on both sides.
	ctx := context.Background()
	client, err := st.NewClient(ctx)
	require.NoError(t, err)
	sc, err := st.NewSidecar(ctx, StartEchoServer(t).Addr())
	require.NoError(t, err)
	conn, err := client.DialContext(ctx, "tcp", sc.Addr())
	require.NoError(t, err)
	rep, ok := client.Report(conn)
	require.True(t, ok)
	assert.Equal(t, ext.OIDTDXQuote.String(), rep.SourceOID)
	require.NotNil(t, rep.App)
	assert.Equal(t, td.ComposeHashHex(), hex.EncodeToString(rep.App.ComposeHash))
	_, err = conn.Write([]byte("x"))
	require.NoError(t, err)
	_, err = io.ReadFull(conn, make([]byte, 1))
	require.NoError(t, err)
	require.NoError(t, conn.Close())
}

func TestStackClose(t *testing.T) {
	t.Parallel()
	st, err := NewStack(StackOptions{})
	require.NoError(t, err)
	_, err = st.NewClient(context.Background())
	require.NoError(t, err)
	require.NoError(t, st.Close())
	_, err = st.NewAdversary(Recorder)
	require.ErrorIs(t, err, errStackClosed)
	require.NoError(t, st.Close(), "Close is idempotent")

	_, err = NewStack(StackOptions{TD: TD{QuoteVersion: 7}})
	require.Error(t, err)
}

// TestStackCollateralPolicy: authentic collateral that the policy refuses
// (expired, or a TCB status not accepted) fails the handshake with the
// matching sentinel.
func TestStackCollateralPolicy(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts CollateralOptions
		want []error
	}{
		{"expired", CollateralOptions{Expired: true}, []error{ratls.ErrQuoteInvalid, dcap.ErrCollateralExpired}},
		{"out of date", CollateralOptions{TCBStatus: tdx.TCBOutOfDate, AdvisoryIDs: []string{"INTEL-SA-00001"}}, []error{ratls.ErrTCBStatus}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			st := StartStack(t, StackOptions{})
			require.NoError(t, st.PCCS.SetCollateral(tt.opts))
			ctx := context.Background()
			client, err := st.NewClient(ctx)
			require.NoError(t, err)
			rec, err := st.NewAdversary(Recorder)
			require.NoError(t, err)
			_, err = client.DialContext(ctx, "tcp", rec.Addr())
			for _, w := range tt.want {
				require.ErrorIs(t, err, w)
			}
			require.NoError(t, rec.Close())
			assert.EqualValues(t, 0, rec.BytesReceived())
		})
	}
}

// TestStackShortLivedCertificates: with a short validity the client renews
// its certificate from the agent in the background.
func TestStackShortLivedCertificates(t *testing.T) {
	t.Parallel()
	st := StartStack(t, StackOptions{Validity: 3 * time.Second})
	_, err := st.NewClient(context.Background())
	require.NoError(t, err)
	require.EqualValues(t, 1, st.Agent.TLSKeyCalls())
	// Renewal happens before expiry; wait for it (bounded, not timed).
	require.Eventually(t, func() bool { return st.Agent.TLSKeyCalls() >= 2 }, 30*time.Second, 20*time.Millisecond)
}
