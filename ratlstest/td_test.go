package ratlstest

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"

	"github.com/Dstack-TEE/dstack/sdk/go/dstack"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/teesql/ratls/ext"
	"github.com/teesql/ratls/tdx"
)

// TestRuntimeDigestMatchesRecordedDstack replays the runtime events of a
// real dstack certificate envelope with this package's own measurement
// code: the simulator must measure exactly as dstack does.
func TestRuntimeDigestMatchesRecordedDstack(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../testdata/dstack/tdx-lite-attestation.json")
	require.NoError(t, err)
	var doc struct{ Attestation string }
	require.NoError(t, json.Unmarshal(raw, &doc))
	env, err := hex.DecodeString(doc.Attestation)
	require.NoError(t, err)
	att, err := ext.ParseEnvelope(env)
	require.NoError(t, err)
	q, err := tdx.ParseQuote(att.Quote)
	require.NoError(t, err)

	var rtmr3 [48]byte
	n := 0
	for _, ev := range att.Events {
		if ev.IMR == 3 && ev.EventType == ext.RuntimeEventType {
			d := runtimeDigest(ev.Event, ev.Payload)
			rtmr3 = extend(rtmr3, d)
			n++
		}
	}
	require.Equal(t, 9, n)
	assert.Equal(t, q.Body.RTMR[3], rtmr3)
}

func TestTDDefaultsAndEvents(t *testing.T) {
	t.Parallel()
	td := TD{Debug: true}.withDefaults()
	d := DefaultTD()
	assert.True(t, td.Debug)
	assert.Equal(t, d.MRTD, td.MRTD)
	assert.Equal(t, d.ComposeHash, td.ComposeHash)
	assert.NotEqual(t, d.MRTD, OtherMRTD())
	assert.Len(t, td.MRTDHex(), 96)
	assert.Len(t, td.ComposeHashHex(), 64)
	assert.Len(t, td.AppIDHex(), 40)

	// The events replay, with package ext's code, to the RTMR3 the quote
	// will carry, and yield the TD's identity.
	rt := td.rtmrs()
	got, err := ext.Replay(td.events(), 3)
	require.NoError(t, err)
	assert.Equal(t, rt[3], got)
	id, err := ext.VerifiedAppIdentity(td.events(), rt[3])
	require.NoError(t, err)
	assert.Equal(t, td.AppID[:], id.AppID)
	assert.Equal(t, td.ComposeHash[:], id.ComposeHash)
	assert.Equal(t, td.InstanceID[:], id.InstanceID)
	assert.Equal(t, td.OSImageHash[:], id.OSImageHash)

	other := TD{ComposeHash: [32]byte{1}}.withDefaults()
	assert.NotEqual(t, rt[3], other.rtmrs()[3], "the compose hash must be measured")

	require.Error(t, TD{QuoteVersion: 3}.withDefaults().validate())

	// RTMR0-2 and attributes: DefaultTD spells out the defaults, and the
	// boot RTMRs follow the OS image unless chosen.
	assert.Equal(t, d, TD{}.withDefaults())
	assert.Equal(t, d.TDAttributes, td.TDAttributes)
	img := TD{OSImageHash: [32]byte{0x1a}}.withDefaults()
	for i := range 3 {
		assert.NotEqual(t, d.RTMR[i], img.RTMR[i], "RTMR%d must follow the OS image", i)
	}
	chosen := TD{OSImageHash: [32]byte{0x1a}, RTMR: [3][48]byte{1: {0xb1}}}.withDefaults()
	assert.Equal(t, [48]byte{0xb1}, chosen.RTMR[1])
	assert.Equal(t, img.RTMR[0], chosen.RTMR[0])
	assert.Equal(t, img.RTMR[2], chosen.RTMR[2])
}

// The TD's measurement knobs reach the quote and are judged by the real
// DCAP verifier: a lower TDX module SVN rates the TD OutOfDate.
func TestTDMeasurementKnobs(t *testing.T) {
	t.Parallel()
	auth := newAuthority(t)
	svn := auth.TEETCBSVN()
	svn[0]--
	td := TD{
		RTMR:         [3][48]byte{1: {0xb1}},
		TDAttributes: [8]byte{3: 0x10, 7: 0x40},
		Debug:        true,
		TEETCBSVN:    svn,
	}
	q, err := auth.Quote(td, [64]byte{0x0d})
	require.NoError(t, err)
	verdict, err := verifyOffline(t, auth, q, CollateralOptions{})
	require.NoError(t, err)
	assert.Equal(t, tdx.TCBOutOfDate, verdict.TCBStatus)
	body := verdict.Quote.Body
	full := td.withDefaults()
	assert.Equal(t, [48]byte{0xb1}, body.RTMR[1])
	assert.Equal(t, DefaultTD().RTMR[0], body.RTMR[0])
	assert.Equal(t, full.rtmrs()[3], body.RTMR[3])
	assert.Equal(t, [8]byte{0x01, 3: 0x10, 7: 0x40}, body.TDAttributes)
	assert.True(t, body.Debug())
	assert.Equal(t, svn, body.TEETCBSVN)

	// The agent serves the same measurements.
	ag := newAgent(t, auth, AgentOptions{TD: td})
	info, err := dstack.NewDstackClient(dstack.WithEndpoint(ag.SocketPath())).Info(context.Background())
	require.NoError(t, err)
	tcb, err := info.DecodeTcbInfo()
	require.NoError(t, err)
	assert.Equal(t, hex.EncodeToString(body.RTMR[1][:]), tcb.Rtmr1)
	assert.Equal(t, hex.EncodeToString(body.RTMR[0][:]), tcb.Rtmr0)
}
