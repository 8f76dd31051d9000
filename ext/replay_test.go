package ext

import (
	"bytes"
	"crypto/sha512"
	"encoding/binary"
	"fmt"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRuntimeEventDigest(t *testing.T) {
	t.Parallel()
	// Spelled out from the definition, independently of the implementation.
	pre := binary.LittleEndian.AppendUint32(nil, 0x08000001)
	pre = append(pre, ":app-id:"...)
	pre = append(pre, 0xde, 0xad)
	assert.Equal(t, sha512.Sum384(pre), RuntimeEventDigest("app-id", []byte{0xde, 0xad}))

	// The full testdata log records runtime digests: each must match.
	a := mustParse(t, fullEnvelope(t))
	for _, ev := range runtimeEvents(a) {
		d := RuntimeEventDigest(ev.Event, ev.Payload)
		assert.Equal(t, ev.Digest, d[:], ev.Event)
	}
}

func TestReplayFold(t *testing.T) {
	t.Parallel()
	d1 := bytes.Repeat([]byte{1}, 48)
	d2 := bytes.Repeat([]byte{2}, 48)
	events := []Event{
		{IMR: 1, EventType: 4, Digest: d1},
		{IMR: 2, EventType: 4, Digest: d2},
		{IMR: 1, EventType: 4, Digest: d2},
		{IMR: 3, EventType: RuntimeEventType, Event: "x", Payload: []byte("y")},
	}
	var zero [48]byte
	step := func(mr [48]byte, d []byte) [48]byte { return sha512.Sum384(append(mr[:], d...)) }

	got, err := Replay(events, 0)
	require.NoError(t, err)
	assert.Equal(t, zero, got, "no events: all zeros")

	got, err = Replay(events, 1)
	require.NoError(t, err)
	assert.Equal(t, step(step(zero, d1), d2), got)

	rt := RuntimeEventDigest("x", []byte("y"))
	got, err = Replay(events, 3)
	require.NoError(t, err)
	assert.Equal(t, step(zero, rt[:]), got)

	for _, imr := range []int{-1, 4} {
		_, err := Replay(events, imr)
		assert.ErrorContains(t, err, "out of range", "IMR %d", imr)
	}
	_, err = Replay([]Event{{IMR: 0, EventType: 4, Digest: d1[:20]}}, 0)
	assert.ErrorIs(t, err, ErrMalformed)
}

func TestReplayDetectsTampering(t *testing.T) {
	t.Parallel()
	for name, env := range map[string][]byte{"full": fullEnvelope(t), "lite": liteEnvelope(t)} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			a := mustParse(t, env)
			rtmr3 := mustQuote(t, a.Quote).Body.RTMR[3]
			i := slices.IndexFunc(a.Events, func(e Event) bool { return e.Event == "compose-hash" })
			require.Positive(t, i)

			// Flip one payload byte, as a forger would to claim another app.
			events := slices.Clone(a.Events)
			events[i].Payload = slices.Clone(events[i].Payload)
			events[i].Payload[0] ^= 1
			_, err := VerifiedAppIdentity(events, rtmr3)
			require.ErrorIs(t, err, ErrReplayMismatch)
			if len(events[i].Digest) > 0 {
				// The recorded digest no longer matches the content.
				assert.Contains(t, err.Error(), "records digest")
			} else {
				assert.Contains(t, err.Error(), fmt.Sprintf("the quote has %x", rtmr3))
			}

			// Strip the digests, so that only the fold can catch it.
			for j := range events {
				if events[j].IMR == 3 {
					events[j].Digest = nil
				}
			}
			got, err := Replay(events, 3)
			require.NoError(t, err)
			_, err = VerifiedAppIdentity(events, rtmr3)
			require.ErrorIs(t, err, ErrReplayMismatch)
			assert.Contains(t, err.Error(), fmt.Sprintf("RTMR3 replays to %x, the quote has %x", got, rtmr3))

			// Dropping or reordering events breaks the fold too.
			_, err = VerifiedAppIdentity(slices.Delete(slices.Clone(a.Events), i, i+1), rtmr3)
			assert.ErrorIs(t, err, ErrReplayMismatch)
			swapped := slices.Clone(a.Events)
			swapped[i], swapped[i+1] = swapped[i+1], swapped[i]
			_, err = VerifiedAppIdentity(swapped, rtmr3)
			assert.ErrorIs(t, err, ErrReplayMismatch)
		})
	}
}

// identityLog is a runtime log with the given (name, payload) events, and
// the RTMR3 it replays to.
func identityLog(t *testing.T, pairs ...any) ([]Event, [48]byte) {
	t.Helper()
	var events []Event
	for i := 0; i < len(pairs); i += 2 {
		events = append(events, Event{IMR: 3, EventType: RuntimeEventType, Event: pairs[i].(string), Payload: pairs[i+1].([]byte)})
	}
	mr, err := Replay(events, 3)
	require.NoError(t, err)
	return events, mr
}

func TestVerifiedAppIdentityRules(t *testing.T) {
	t.Parallel()
	app, compose := bytes.Repeat([]byte{0xa}, 20), bytes.Repeat([]byte{0xc}, 32)
	inst, osHash := bytes.Repeat([]byte{0x1}, 20), bytes.Repeat([]byte{0x0}, 32)

	t.Run("minimal", func(t *testing.T) {
		t.Parallel()
		events, mr := identityLog(t, "app-id", app, "compose-hash", compose)
		id, err := VerifiedAppIdentity(events, mr)
		require.NoError(t, err)
		assert.Equal(t, &AppIdentity{AppID: app, ComposeHash: compose}, id)
	})
	t.Run("empty instance id", func(t *testing.T) {
		t.Parallel()
		events, mr := identityLog(t, "app-id", app, "instance-id", []byte{}, "compose-hash", compose, "os-image-hash", osHash)
		id, err := VerifiedAppIdentity(events, mr)
		require.NoError(t, err)
		assert.Nil(t, id.InstanceID)
		assert.Equal(t, osHash, id.OSImageHash)
	})
	t.Run("events after system-ready are the app's", func(t *testing.T) {
		t.Parallel()
		events, mr := identityLog(t, "app-id", app, "compose-hash", compose, "instance-id", inst,
			"system-ready", []byte{}, "compose-hash", bytes.Repeat([]byte{0xe}, 32), "app-id", []byte("x"))
		id, err := VerifiedAppIdentity(events, mr)
		require.NoError(t, err)
		assert.Equal(t, compose, id.ComposeHash)
		assert.Equal(t, app, id.AppID)
		assert.Equal(t, inst, id.InstanceID)
	})
	t.Run("boot events are not identity", func(t *testing.T) {
		t.Parallel()
		events, mr := identityLog(t, "app-id", app, "compose-hash", compose)
		events = append(events, Event{IMR: 2, EventType: 6, Digest: make([]byte, 48), Event: "compose-hash", Payload: []byte{1}})
		id, err := VerifiedAppIdentity(events, mr)
		require.NoError(t, err)
		assert.Equal(t, compose, id.ComposeHash)
	})

	tests := []struct {
		name  string
		pairs []any
		want  string
	}{
		{"two compose hashes", []any{"app-id", app, "compose-hash", compose, "compose-hash", compose}, `more than one "compose-hash"`},
		{"two app ids", []any{"app-id", app, "app-id", app, "compose-hash", compose}, `more than one "app-id"`},
		{"two key providers", []any{"app-id", app, "compose-hash", compose, "key-provider", []byte{}, "key-provider", []byte{}}, `more than one "key-provider"`},
		{"no compose hash", []any{"app-id", app}, `no "compose-hash" event`},
		{"no app id", []any{"compose-hash", compose}, `no "app-id" event`},
		{"compose hash after system-ready", []any{"app-id", app, "system-ready", []byte{}, "compose-hash", compose}, `no "compose-hash" event`},
		{"short app id", []any{"app-id", app[:19], "compose-hash", compose}, `"app-id" event payload is 19 bytes, want 20`},
		{"empty compose hash", []any{"app-id", app, "compose-hash", []byte{}}, `"compose-hash" event payload is 0 bytes, want 32`},
		{"long instance id", []any{"app-id", app, "compose-hash", compose, "instance-id", compose}, `"instance-id" event payload is 32 bytes, want 20`},
		{"short os image hash", []any{"app-id", app, "compose-hash", compose, "os-image-hash", app}, `"os-image-hash" event payload is 20 bytes, want 32`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			events, mr := identityLog(t, tc.pairs...)
			_, err := VerifiedAppIdentity(events, mr)
			require.ErrorIs(t, err, ErrMalformed)
			assert.NotErrorIs(t, err, ErrReplayMismatch)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// TestVerifiedAppIdentityRelabelling is the attack the IMR 3 type rule
// stops: the app emits its own "compose-hash" after boot, then presents the
// genuine compose-hash and system-ready events as opaque (non-runtime)
// events with the same digests. The fold is unchanged; were opaque IMR 3
// events allowed, the app's value would be read as the identity.
func TestVerifiedAppIdentityRelabelling(t *testing.T) {
	t.Parallel()
	app, real, fake := bytes.Repeat([]byte{0xa}, 20), bytes.Repeat([]byte{0xc}, 32), bytes.Repeat([]byte{0xf}, 32)
	events, mr := identityLog(t, "app-id", app, "compose-hash", real, "system-ready", []byte{}, "compose-hash", fake)

	id, err := VerifiedAppIdentity(events, mr)
	require.NoError(t, err)
	assert.Equal(t, real, id.ComposeHash)

	forged := slices.Clone(events)
	for _, i := range []int{1, 2} {
		d := RuntimeEventDigest(forged[i].Event, forged[i].Payload)
		forged[i] = Event{IMR: 3, EventType: 0x1, Digest: d[:], Event: "opaque"}
	}
	_, err = VerifiedAppIdentity(forged, mr)
	require.ErrorIs(t, err, ErrMalformed)
	assert.Contains(t, err.Error(), "RTMR3 holds runtime events only")
}

func BenchmarkReplay(b *testing.B) {
	env, err := ParseEnvelope(fullEnvelope(b))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		for imr := range 4 {
			if _, err := Replay(env.Events, imr); err != nil {
				b.Fatal(err)
			}
		}
	}
}
