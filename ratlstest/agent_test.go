package ratlstest

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Dstack-TEE/dstack/sdk/go/dstack"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/teesql/ratls/ext"
	"github.com/teesql/ratls/tdx"
)

func TestAgentGetTLSKeyOverUnixSocket(t *testing.T) {
	t.Parallel()
	auth := newAuthority(t)
	ag := newAgent(t, auth, AgentOptions{})
	client := dstack.NewDstackClient(dstack.WithEndpoint(ag.SocketPath()))

	before := time.Now().Add(-time.Second)
	resp, err := client.GetTlsKey(context.Background(),
		dstack.WithSubject("db.example"),
		dstack.WithAltNames([]string{"db.example", "127.0.0.1"}),
		dstack.WithUsageRaTls(true),
		dstack.WithUsageServerAuth(true))
	require.NoError(t, err)
	p := parseTLSKey(t, resp)

	assert.Equal(t, "db.example", p.leaf.Subject.CommonName)
	assert.Equal(t, []string{"db.example"}, p.leaf.DNSNames)
	require.Len(t, p.leaf.IPAddresses, 1)
	assert.Equal(t, "127.0.0.1", p.leaf.IPAddresses[0].String())
	assert.Equal(t, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, p.leaf.ExtKeyUsage)
	assert.False(t, p.leaf.NotBefore.Before(before.Truncate(time.Second)))
	assert.Equal(t, DefaultValidity, p.leaf.NotAfter.Sub(p.leaf.NotBefore))

	requireBound(t, p)
	td := DefaultTD()
	assert.Equal(t, td.MRTD, p.quote.Body.MRTD)
	assert.False(t, p.quote.Body.Debug())
	assert.EqualValues(t, 4, p.quote.Header.Version)
	assert.Equal(t, ext.EnvelopeV0, p.att.Envelope)
	assert.True(t, p.att.SourceOID.Equal(ext.OIDAttestation))
	assert.Equal(t, p.quote.Body.ReportData[:], p.att.ReportData)

	// The event log replays to the quoted RTMR3 and names the TD's app.
	id, err := ext.VerifiedAppIdentity(p.att.Events, p.quote.Body.RTMR[3])
	require.NoError(t, err)
	assert.Equal(t, td.AppID[:], id.AppID)
	assert.Equal(t, td.ComposeHash[:], id.ComposeHash)
	assert.Equal(t, td.InstanceID[:], id.InstanceID)
	assert.Equal(t, td.OSImageHash[:], id.OSImageHash)
	assert.Equal(t, keyProviderPayload, string(id.KeyProvider))

	assert.EqualValues(t, 1, ag.TLSKeyCalls())

	// Every call makes a fresh key.
	resp2, err := client.GetTlsKey(context.Background(), dstack.WithUsageRaTls(true), dstack.WithUsageClientAuth(true))
	require.NoError(t, err)
	p2 := parseTLSKey(t, resp2)
	assert.False(t, p.key.Equal(p2.key))
	assert.Equal(t, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, p2.leaf.ExtKeyUsage)
	assert.EqualValues(t, 2, ag.TLSKeyCalls())
}

func TestAgentTDAndFormats(t *testing.T) {
	t.Parallel()
	auth := newAuthority(t)
	custom := TD{MRTD: OtherMRTD(), Debug: true, QuoteVersion: 5, ComposeHash: [32]byte{0xc0}}
	tests := []struct {
		name       string
		opts       AgentOptions
		envelope   int
		source     string
		wantLegacy bool
	}{
		{"V0", AgentOptions{Format: FormatV0}, ext.EnvelopeV0, ext.OIDAttestation.String(), false},
		{"V1", AgentOptions{Format: FormatV1}, ext.EnvelopeV1, ext.OIDAttestation.String(), false},
		{"legacy", AgentOptions{Format: FormatLegacy}, ext.EnvelopeLegacy, ext.OIDTDXQuote.String(), true},
		{"both", AgentOptions{Format: FormatBoth}, ext.EnvelopeV0, ext.OIDAttestation.String(), true},
		{"customTD", AgentOptions{TD: custom}, ext.EnvelopeV0, ext.OIDAttestation.String(), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ag := newAgent(t, auth, tt.opts)
			resp, err := dstack.NewDstackClient(dstack.WithEndpoint(ag.URL())).
				GetTlsKey(context.Background(), dstack.WithUsageRaTls(true))
			require.NoError(t, err)
			p := parseTLSKey(t, resp)
			requireBound(t, p)
			assert.Equal(t, tt.envelope, p.att.Envelope)
			assert.Equal(t, tt.source, p.att.SourceOID.String())
			hasLegacy := false
			for _, e := range p.leaf.Extensions {
				hasLegacy = hasLegacy || e.Id.Equal(ext.OIDTDXQuote)
			}
			assert.Equal(t, tt.wantLegacy, hasLegacy)

			td := tt.opts.TD.withDefaults()
			assert.Equal(t, td, ag.TD())
			assert.Equal(t, td.MRTD, p.quote.Body.MRTD)
			assert.Equal(t, td.Debug, p.quote.Body.Debug())
			assert.EqualValues(t, td.QuoteVersion, p.quote.Header.Version)
			id, err := ext.VerifiedAppIdentity(p.att.Events, p.quote.Body.RTMR[3])
			require.NoError(t, err)
			assert.Equal(t, td.ComposeHash[:], id.ComposeHash)
		})
	}
}

func TestAgentRejectsBadOptions(t *testing.T) {
	t.Parallel()
	auth := newAuthority(t)
	_, err := NewAgent(auth, AgentOptions{Format: Format(42)})
	require.Error(t, err)
	_, err = NewAgent(auth, AgentOptions{TD: TD{QuoteVersion: 3}})
	require.Error(t, err)
	_, err = NewAgent(nil, AgentOptions{})
	require.Error(t, err)
}

func TestAgentWithoutRATLSUsage(t *testing.T) {
	t.Parallel()
	ag := newAgent(t, newAuthority(t), AgentOptions{})
	resp, err := dstack.NewDstackClient(dstack.WithEndpoint(ag.SocketPath())).
		GetTlsKey(context.Background(), dstack.WithUsageServerAuth(true))
	require.NoError(t, err)
	p := parseTLSKey(t, resp)
	assert.Nil(t, p.att)
	_, err = ext.FromCertificate(p.leaf)
	require.ErrorIs(t, err, ext.ErrNoQuote)
}

func TestAgentValidity(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	ag := newAgent(t, newAuthority(t), AgentOptions{Validity: 2 * time.Minute, Now: func() time.Time { return now }})
	client := dstack.NewDstackClient(dstack.WithEndpoint(ag.SocketPath()))
	ctx := context.Background()

	resp, err := client.GetTlsKey(ctx, dstack.WithUsageRaTls(true))
	require.NoError(t, err)
	p := parseTLSKey(t, resp)
	assert.Equal(t, now, p.leaf.NotBefore)
	assert.Equal(t, now.Add(2*time.Minute), p.leaf.NotAfter)

	ag.SetValidity(5 * time.Second)
	resp, err = client.GetTlsKey(ctx, dstack.WithUsageRaTls(true))
	require.NoError(t, err)
	assert.Equal(t, now.Add(5*time.Second), parseTLSKey(t, resp).leaf.NotAfter)

	ag.SetValidity(0)
	resp, err = client.GetTlsKey(ctx)
	require.NoError(t, err)
	assert.Equal(t, now.Add(DefaultValidity), parseTLSKey(t, resp).leaf.NotAfter)

	nb, na := now.Add(-time.Hour), now.Add(48*time.Hour)
	resp, err = client.GetTlsKey(ctx, dstack.WithUsageRaTls(true),
		dstack.WithNotBefore(uint64(nb.Unix())), dstack.WithNotAfter(uint64(na.Unix())))
	require.NoError(t, err)
	p = parseTLSKey(t, resp)
	assert.Equal(t, nb, p.leaf.NotBefore)
	assert.Equal(t, na, p.leaf.NotAfter)

	_, err = client.GetTlsKey(ctx, dstack.WithNotBefore(uint64(na.Unix())), dstack.WithNotAfter(uint64(nb.Unix())))
	require.ErrorContains(t, err, "400")
	require.ErrorContains(t, err, "not_after")
}

func TestAgentFaults(t *testing.T) {
	t.Parallel()
	ag := newAgent(t, newAuthority(t), AgentOptions{})
	client := dstack.NewDstackClient(dstack.WithEndpoint(ag.SocketPath()))
	ctx := context.Background()

	ag.SetFault(Fault{Status: http.StatusServiceUnavailable})
	_, err := client.GetTlsKey(ctx, dstack.WithUsageRaTls(true))
	require.ErrorContains(t, err, "503")

	ag.SetFault(Fault{Garbage: true})
	_, err = client.GetTlsKey(ctx, dstack.WithUsageRaTls(true))
	require.Error(t, err)
	require.ErrorContains(t, err, "unexpected end of JSON")

	ag.SetFault(Fault{Delay: time.Hour})
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err = client.GetTlsKey(short, dstack.WithUsageRaTls(true))
	require.ErrorIs(t, err, context.DeadlineExceeded)

	ag.SetFault(Fault{})
	_, err = client.GetTlsKey(ctx, dstack.WithUsageRaTls(true))
	require.NoError(t, err)
	assert.EqualValues(t, 4, ag.TLSKeyCalls())
}

// TestAgentConcurrentKnobs changes knobs while requests run (for -race).
func TestAgentConcurrentKnobs(t *testing.T) {
	t.Parallel()
	ag := newAgent(t, newAuthority(t), AgentOptions{})
	client := dstack.NewDstackClient(dstack.WithEndpoint(ag.URL()))
	var wg sync.WaitGroup
	const n = 8
	for i := range n {
		wg.Go(func() {
			_, err := client.GetTlsKey(context.Background(), dstack.WithUsageRaTls(true))
			if err != nil {
				assert.ErrorContains(t, err, "500")
			}
		})
		if i%2 == 0 {
			ag.SetFault(Fault{Status: http.StatusInternalServerError})
		} else {
			ag.SetFault(Fault{})
		}
		ag.SetValidity(time.Duration(i+1) * time.Minute)
	}
	wg.Wait()
	assert.EqualValues(t, n, ag.TLSKeyCalls())
}

func TestAgentDelayEndsOnClose(t *testing.T) {
	t.Parallel()
	ag, err := NewAgent(newAuthority(t), AgentOptions{})
	require.NoError(t, err)
	ag.SetFault(Fault{Delay: time.Hour})
	errc := make(chan error, 1)
	go func() {
		_, err := dstack.NewDstackClient(dstack.WithEndpoint(ag.URL())).GetTlsKey(context.Background())
		errc <- err
	}()
	for ag.TLSKeyCalls() == 0 {
		time.Sleep(time.Millisecond)
	}
	require.NoError(t, ag.Close()) // must not wait an hour
	require.Error(t, <-errc)
	_, statErr := os.Stat(ag.SocketPath())
	require.True(t, errors.Is(statErr, os.ErrNotExist), "socket left behind: %v", statErr)
}

func TestAgentBadRequests(t *testing.T) {
	t.Parallel()
	ag := newAgent(t, newAuthority(t), AgentOptions{})
	post := func(path, body string) (int, string) {
		resp, err := http.Post(ag.URL()+path, "application/json", strings.NewReader(body))
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	code, _ := post("/GetTlsKey", "{not json")
	assert.Equal(t, http.StatusBadRequest, code)
	code, _ = post("/GetQuote", `{"report_data":"zz"}`)
	assert.Equal(t, http.StatusBadRequest, code)
	code, _ = post("/GetQuote", `{"report_data":"`+strings.Repeat("00", 65)+`"}`)
	assert.Equal(t, http.StatusBadRequest, code)
	code, _ = post("/NoSuchMethod", `{}`)
	assert.Equal(t, http.StatusNotFound, code)
	code, _ = post("/GetTlsKey", `{"usage_ra_tls":true}`)
	assert.Equal(t, http.StatusOK, code)
}

func TestAgentQuoteInfoAttest(t *testing.T) {
	t.Parallel()
	ag := newAgent(t, newAuthority(t), AgentOptions{})
	client := dstack.NewDstackClient(dstack.WithEndpoint(ag.SocketPath()))
	ctx := context.Background()
	td := ag.TD()

	rd := []byte("nonce-1234")
	qr, err := client.GetQuote(ctx, rd)
	require.NoError(t, err)
	raw, err := qr.DecodeQuote()
	require.NoError(t, err)
	q, err := tdx.ParseQuote(raw)
	require.NoError(t, err)
	var want [64]byte
	copy(want[:], rd)
	assert.Equal(t, want, q.Body.ReportData)
	// The SDK's own replay of the full event log's digests gives the
	// quoted RTMRs: the log is consistent with the quote.
	rtmrs, err := qr.ReplayRTMRs()
	require.NoError(t, err)
	assert.Equal(t, hex.EncodeToString(q.Body.RTMR[3][:]), rtmrs[3])

	info, err := client.Info(ctx)
	require.NoError(t, err)
	assert.Equal(t, hex.EncodeToString(td.AppID[:]), info.AppID)
	assert.Equal(t, td.ComposeHashHex(), info.ComposeHash)
	tcb, err := info.DecodeTcbInfo()
	require.NoError(t, err)
	assert.Equal(t, td.MRTDHex(), tcb.Mrtd)
	assert.Equal(t, hex.EncodeToString(q.Body.RTMR[3][:]), tcb.Rtmr3)
	assert.True(t, client.IsReachable(ctx))

	at, err := client.Attest(ctx, rd)
	require.NoError(t, err)
	att, err := ext.ParseEnvelope(at.Attestation)
	require.NoError(t, err)
	aq, err := tdx.ParseQuote(att.Quote)
	require.NoError(t, err)
	assert.Equal(t, want, aq.Body.ReportData)

	v, err := client.GetVersion(ctx)
	require.NoError(t, err)
	assert.Contains(t, v.Version, "ratlstest")
}

// TestAgentSimulatorEndpointEnv uses the SDK's discovery through
// DSTACK_SIMULATOR_ENDPOINT, both forms. It sets an environment variable,
// so it must not run in parallel.
func TestAgentSimulatorEndpointEnv(t *testing.T) {
	ag := newAgent(t, newAuthority(t), AgentOptions{})
	for _, endpoint := range []string{ag.URL(), ag.SocketPath()} {
		t.Run(endpoint, func(t *testing.T) {
			t.Setenv("DSTACK_SIMULATOR_ENDPOINT", endpoint)
			before := ag.TLSKeyCalls()
			resp, err := dstack.NewDstackClient().GetTlsKey(context.Background(), dstack.WithUsageRaTls(true))
			require.NoError(t, err)
			requireBound(t, parseTLSKey(t, resp))
			assert.Equal(t, before+1, ag.TLSKeyCalls())
		})
	}
}

func TestAgentCertificate(t *testing.T) {
	t.Parallel()
	ag := newAgent(t, newAuthority(t), AgentOptions{})
	c, err := ag.Certificate(TLSKeyRequest{Subject: "x", UsageRATLS: true, UsageServerAuth: true})
	require.NoError(t, err)
	require.Len(t, c.Certificate, 2)
	require.NotNil(t, c.Leaf)
	att, err := ext.FromCertificate(c.Leaf)
	require.NoError(t, err)
	q, err := tdx.ParseQuote(att.Quote)
	require.NoError(t, err)
	rd, err := keyReportData(c.Leaf.PublicKey)
	require.NoError(t, err)
	assert.Equal(t, rd, q.Body.ReportData)
	assert.EqualValues(t, 0, ag.TLSKeyCalls())

	nb, na := uint64(100), uint64(50)
	_, err = ag.Certificate(TLSKeyRequest{NotBefore: &nb, NotAfter: &na})
	require.Error(t, err)
}
