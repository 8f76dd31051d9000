package ext

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/teesql/ratls/tdx"
)

func TestParseFullEnvelope(t *testing.T) {
	t.Parallel()
	a := mustParse(t, fullEnvelope(t))

	assert.Equal(t, EnvelopeV0, a.Envelope)
	require.Len(t, a.Quote, 5010)
	q := mustQuote(t, a.Quote)
	assert.EqualValues(t, 4, q.Header.Version)
	assert.Equal(t, q.Body.ReportData[:], a.ReportData)
	assert.Equal(t, make([]byte, 64), a.ReportData, "recorded with all-zero report data")
	assert.Contains(t, a.Config, `"kms_urls"`)

	// The event log holds 33 events; its 9 IMR 3 entries are the runtime
	// events, which the envelope also lists on their own.
	require.Len(t, a.Events, 33)
	rt := runtimeEvents(a)
	require.Len(t, rt, 9)
	names := make([]string, len(rt))
	for i, ev := range rt {
		names[i] = ev.Event
		assert.Len(t, ev.Digest, 48, "the full log keeps runtime digests")
	}
	assert.Equal(t, []string{"system-preparing", "app-id", "compose-hash", "instance-id", "boot-mr-done",
		"os-image-hash", "key-provider", "storage-fs", "system-ready"}, names)
	// Boot events come first, then the runtime events.
	for i, ev := range a.Events {
		assert.Equal(t, i >= 24, ev.IMR == 3, "event %d", i)
	}

	for imr := range 4 {
		got, err := Replay(a.Events, imr)
		require.NoError(t, err)
		assert.Equal(t, q.Body.RTMR[imr], got, "RTMR%d", imr)
	}

	id, err := VerifiedAppIdentity(a.Events, q.Body.RTMR[3])
	require.NoError(t, err)
	assert.Equal(t, fullAppID, fmt.Sprintf("%x", id.AppID))
	assert.Equal(t, fullComposeHash, fmt.Sprintf("%x", id.ComposeHash))
	assert.Equal(t, fullInstanceID, fmt.Sprintf("%x", id.InstanceID))
	assert.Equal(t, fullOSImageHash, fmt.Sprintf("%x", id.OSImageHash))
	assert.Regexp(t, `^c143116f`, fmt.Sprintf("%x", id.ComposeHash))
	assert.Regexp(t, `^5bb4ff9a`, fmt.Sprintf("%x", id.AppID))
	assert.Contains(t, string(id.KeyProvider), `"name":"kms"`)
}

func TestParseLiteEnvelope(t *testing.T) {
	t.Parallel()
	a := mustParse(t, liteEnvelope(t))

	require.Len(t, a.Quote, 5006)
	q := mustQuote(t, a.Quote)
	assert.Equal(t, q.Body.ReportData[:], a.ReportData)
	assert.Contains(t, a.Config, `"tdx_attestation_variant":"lite"`)

	require.Len(t, a.Events, 12)
	for i, ev := range a.Events[:3] {
		assert.EqualValues(t, 0, ev.IMR, "event %d", i)
		assert.Len(t, ev.Digest, 48)
	}
	rt := runtimeEvents(a)
	require.Len(t, rt, 9)
	for _, ev := range rt {
		assert.Empty(t, ev.Digest, "stripped: runtime digests are left empty")
	}

	got, err := Replay(a.Events, 3)
	require.NoError(t, err)
	assert.Equal(t, q.Body.RTMR[3], got)
	id, err := VerifiedAppIdentity(a.Events, q.Body.RTMR[3])
	require.NoError(t, err)
	assert.Len(t, id.AppID, 20)
	assert.Len(t, id.ComposeHash, 32)
}

func TestEnvelopeRoundTrip(t *testing.T) {
	t.Parallel()
	for name, b := range map[string][]byte{"full": fullEnvelope(t), "lite": liteEnvelope(t)} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			a := mustParse(t, b)
			v0, err := MarshalEnvelope(a, EnvelopeV0)
			require.NoError(t, err)
			assert.True(t, bytes.Equal(b, v0), "V0 re-encoding differs from the recorded bytes")

			v1, err := MarshalEnvelope(a, EnvelopeV1)
			require.NoError(t, err)
			assert.True(t, isMsgpackMap(v1[0]))
			b1 := mustParse(t, v1)
			assert.Equal(t, EnvelopeV1, b1.Envelope)
			assert.Equal(t, StackDstack, b1.Stack)
			b1.Envelope, b1.Stack = a.Envelope, a.Stack
			assert.Equal(t, a, b1)

			again, err := MarshalEnvelope(mustParse(t, v1), EnvelopeV1)
			require.NoError(t, err)
			assert.True(t, bytes.Equal(v1, again), "V1 encoding is not stable")
		})
	}
}

func TestMarshalEnvelopeDefaults(t *testing.T) {
	t.Parallel()
	full := mustParse(t, fullEnvelope(t))
	a := &Attestation{Quote: full.Quote, Events: runtimeEvents(full)}
	b, err := MarshalEnvelope(a, EnvelopeV0)
	require.NoError(t, err)
	got := mustParse(t, b)
	assert.Equal(t, full.ReportData, got.ReportData, "ReportData is taken from the quote")
	assert.Equal(t, a.Events, got.Events)

	pod := *full
	pod.Stack, pod.ReportDataPayload = StackDstackPod, `{"pod":"x"}`
	b, err = MarshalEnvelope(&pod, EnvelopeV1)
	require.NoError(t, err)
	got = mustParse(t, b)
	assert.Equal(t, StackDstackPod, got.Stack)
	assert.Equal(t, `{"pod":"x"}`, got.ReportDataPayload)

	for name, tc := range map[string]struct {
		a       *Attestation
		version int
	}{
		"nil":              {nil, EnvelopeV0},
		"no quote":         {&Attestation{}, EnvelopeV0},
		"bad version":      {full, 2},
		"short reportdata": {&Attestation{Quote: full.Quote, ReportData: []byte{1}}, EnvelopeV0},
		"unparsable quote": {&Attestation{Quote: []byte{1, 2, 3}}, EnvelopeV0},
		"pod in V0":        {&pod, EnvelopeV0},
		"unknown stack":    {&Attestation{Quote: full.Quote, Stack: "other"}, EnvelopeV1},
		"payload no pod":   {&Attestation{Quote: full.Quote, ReportDataPayload: "x"}, EnvelopeV1},
		"bad digest":       {&Attestation{Quote: full.Quote, Events: []Event{{IMR: 0, Digest: []byte{1}}}}, EnvelopeV0},
		"imr 4":            {&Attestation{Quote: full.Quote, Events: []Event{{IMR: 4, Digest: make([]byte, 48)}}}, EnvelopeV0},
	} {
		_, err := MarshalEnvelope(tc.a, tc.version)
		assert.Error(t, err, name)
	}
}

// TestEnvelopeEventsFromRuntimeList covers envelopes whose event log has no
// IMR 3 entries: the runtime events come from their own list.
func TestEnvelopeEventsFromRuntimeList(t *testing.T) {
	t.Parallel()
	full := mustParse(t, fullEnvelope(t))
	e := &envelope{quote: full.Quote, reportData: full.ReportData, eventLog: full.Events[:24], stack: StackDstack}
	for _, ev := range runtimeEvents(full) {
		e.runtime = append(e.runtime, runtimeEvent{ev.Event, ev.Payload})
	}
	for name, b := range map[string][]byte{"V0": encodeV0(e), "V1": encodeV1(e)} {
		a := mustParse(t, b)
		require.Len(t, a.Events, 33, name)
		got, err := Replay(a.Events, 3)
		require.NoError(t, err)
		assert.Equal(t, mustQuote(t, a.Quote).Body.RTMR[3], got, name)
	}
}

func TestParseEnvelopeRejects(t *testing.T) {
	t.Parallel()
	full := fullEnvelope(t)
	a := mustParse(t, full)
	reEncode := func(f func(e *envelope)) []byte {
		e := &envelope{quote: a.Quote, eventLog: append([]Event(nil), a.Events...), reportData: a.ReportData, config: a.Config}
		for _, ev := range runtimeEvents(a) {
			e.runtime = append(e.runtime, runtimeEvent{ev.Event, ev.Payload})
		}
		f(e)
		return encodeV0(e)
	}
	// The quote length is the compact integer at offset 2 (two-byte form).
	quoteLenEnd := 4
	withQuoteLen := func(prefix ...byte) []byte {
		return append(append([]byte{0, 0}, prefix...), full[quoteLenEnd:]...)
	}
	otherQuote := readTestdata(t, "dcap-qvl/tdx_quote")

	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "empty"},
		{"version byte 1", append([]byte{1}, full[1:]...), "first byte 0x01"},
		{"version byte 0xff", append([]byte{0xff}, full[1:]...), "first byte 0xff"},
		{"quote variant 1", append([]byte{0, 1}, full[2:]...), "quote variant 1 (DstackGcpTdx)"},
		{"quote variant 9", append([]byte{0, 9}, full[2:]...), "quote variant 9 (unknown)"},
		{"trailing byte", append(bytes.Clone(full), 0), "1 trailing bytes"},
		{"trailing bytes", append(bytes.Clone(full), "junk"...), "4 trailing bytes"},
		{"quote length past the end", withQuoteLen(0xfe, 0xff, 0xff, 0xff), "needs at least"},
		{"quote length 2^32-1", withQuoteLen(0x03, 0xff, 0xff, 0xff, 0xff), "too large"},
		{"compact of 8 bytes", withQuoteLen(0x13, 1, 2, 3, 4, 5, 6, 7, 8), "does not fit a u32"},
		{"non-canonical compact", withQuoteLen(0x01, 0x00), "non-canonical"},
		{"non-canonical 4-byte compact", withQuoteLen(0x4a, 0x4e, 0x00, 0x00), "non-canonical"},
		{"too many events", append(bytes.Clone(full[:4+5010]), 0x02, 0x00, 0x01, 0x00), "exceeds the limit"},
		{"event count past the end", append(bytes.Clone(full[:4+5010]), 0x01, 0x04), "needs at least"},
		{"report data mismatch", reEncode(func(e *envelope) { e.reportData = bytes.Repeat([]byte{1}, 64) }),
			"does not match the quote's REPORTDATA"},
		{"unparsable quote", reEncode(func(e *envelope) { e.quote = e.quote[:100] }), "quote: tdx: malformed quote"},
		{"other quote", reEncode(func(e *envelope) { e.quote = otherQuote }), "does not match the quote's REPORTDATA"},
		{"runtime list shorter", reEncode(func(e *envelope) { e.runtime = e.runtime[:8] }), "has 9 runtime events, runtime_events has 8"},
		{"runtime list differs", reEncode(func(e *envelope) { e.runtime[2].payload = []byte{1} }), "runtime event 2 differs"},
		{"runtime name differs", reEncode(func(e *envelope) { e.runtime[1].name = "app-ID" }), "runtime event 1 differs"},
		{"event imr 4", reEncode(func(e *envelope) { e.eventLog[0].IMR = 4 }), "IMR 4, want 0-3"},
		{"non-runtime event in IMR 3", reEncode(func(e *envelope) {
			e.eventLog = append(e.eventLog, Event{IMR: 3, EventType: 1, Digest: make([]byte, 48)})
		}), "in IMR 3 has type 0x1, want 0x8000001"},
		{"boot digest short", reEncode(func(e *envelope) { e.eventLog[0].Digest = e.eventLog[0].Digest[:32] }), "digest is 32 bytes"},
		{"boot digest empty", reEncode(func(e *envelope) { e.eventLog[0].Digest = nil }), "digest is 0 bytes"},
		{"invalid UTF-8 name", reEncode(func(e *envelope) { e.eventLog[0].Event = "\xff" }), "not valid UTF-8"},
		{"invalid UTF-8 config", reEncode(func(e *envelope) { e.config = "{\xc0}" }), "config: string is not valid UTF-8"},
		{"too large", make([]byte, MaxEnvelopeSize+1), "exceeds the 10485760-byte limit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseEnvelope(tc.in)
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrMalformed)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestParseEnvelopeTruncated(t *testing.T) {
	t.Parallel()
	full := mustParse(t, fullEnvelope(t))
	v1, err := MarshalEnvelope(full, EnvelopeV1)
	require.NoError(t, err)
	for name, b := range map[string][]byte{"full": fullEnvelope(t), "lite": liteEnvelope(t), "V1": v1} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			for n := range len(b) {
				_, err := ParseEnvelope(b[:n])
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("prefix of %d bytes: err = %v, want ErrMalformed", n, err)
				}
			}
		})
	}
}

func TestParseEnvelopeWrapsQuoteError(t *testing.T) {
	t.Parallel()
	a := mustParse(t, fullEnvelope(t))
	a.Quote = a.Quote[:700]
	b, err := MarshalEnvelope(a, EnvelopeV0)
	require.NoError(t, err)
	_, err = ParseEnvelope(b)
	assert.ErrorIs(t, err, ErrMalformed)
	assert.ErrorIs(t, err, tdx.ErrMalformed)
}

func BenchmarkParseEnvelope(b *testing.B) {
	for name, env := range map[string][]byte{"full": fullEnvelope(b), "lite": liteEnvelope(b)} {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(env)))
			for b.Loop() {
				if _, err := ParseEnvelope(env); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
