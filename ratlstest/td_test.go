package ratlstest

import (
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"

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
}
