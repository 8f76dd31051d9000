package ext

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestEventLogJSONRoundTrip(t *testing.T) {
	t.Parallel()
	for name, env := range map[string][]byte{"full": fullEnvelope(t), "lite": liteEnvelope(t)} {
		a := mustParse(t, env)
		b, err := MarshalEventLogJSON(a.Events)
		require.NoError(t, err, name)
		got, err := ParseEventLogJSON(b)
		require.NoError(t, err, name)
		assert.Equal(t, a.Events, got, name)

		again, err := MarshalEventLogJSON(got)
		require.NoError(t, err)
		assert.Equal(t, string(b), string(again), name)
	}
}

func TestEventLogJSONFormat(t *testing.T) {
	t.Parallel()
	b, err := MarshalEventLogJSON([]Event{{IMR: 3, EventType: RuntimeEventType, Event: "a<b", Payload: []byte{0xAB}}})
	require.NoError(t, err)
	assert.Equal(t, `[{"imr":3,"event_type":134217729,"digest":"","event":"a<b","event_payload":"ab"}]`, string(b))

	b, err = MarshalEventLogJSON(nil)
	require.NoError(t, err)
	assert.Equal(t, `[]`, string(b))

	_, err = MarshalEventLogJSON([]Event{{Event: "\xff"}})
	assert.Error(t, err)
}

func TestParseEventLogJSONAccepts(t *testing.T) {
	t.Parallel()
	digest := strings.Repeat("AB", 48)
	got, err := ParseEventLogJSON([]byte(` [ {"event_payload":"","event":"x","event_type":1,"imr":0,"digest":"` + digest + `"},
		{"imr":3,"event_type":134217729,"event":"app-id","event_payload":"01","version":1,"hash_input":"00"} ] `))
	require.NoError(t, err)
	require.Len(t, got, 2)
	assert.Equal(t, Event{IMR: 0, EventType: 1, Digest: mustHex(t, digest), Event: "x"}, got[0])
	assert.Equal(t, Event{IMR: 3, EventType: RuntimeEventType, Event: "app-id", Payload: []byte{1}}, got[1])

	got, err = ParseEventLogJSON([]byte(`[]`))
	require.NoError(t, err)
	assert.Empty(t, got)
}

func TestParseEventLogJSONRejects(t *testing.T) {
	t.Parallel()
	digest := `"` + strings.Repeat("00", 48) + `"`
	ok := `{"imr":0,"event_type":1,"digest":` + digest + `,"event":"","event_payload":""}`
	tooMany := "[" + strings.TrimSuffix(strings.Repeat(ok+",", MaxEvents+1), ",") + "]"
	tests := []struct {
		name, in, want string
	}{
		{"empty", ``, "EOF"},
		{"null", `null`, "want an array"},
		{"object", `{}`, "want an array"},
		{"string", `"[]"`, "want an array"},
		{"null entry", `[null]`, "event 0: null"},
		{"entry not an object", `[[1]]`, "event 0: not an object"},
		{"unterminated", `[` + ok, "unterminated"},
		{"trailing data", `[]x`, "data after the array"},
		{"second array", `[] []`, "data after the array"},
		{"missing imr", `[{"event_type":1,"digest":` + digest + `,"event":"","event_payload":""}]`, `missing or null field "imr"`},
		{"null imr", `[{"imr":null,"event_type":1,"digest":` + digest + `,"event":"","event_payload":""}]`, `missing or null field "imr"`},
		{"missing payload", `[{"imr":0,"event_type":1,"digest":` + digest + `,"event":""}]`, `missing or null field "event_payload"`},
		{"missing event", `[{"imr":0,"event_type":1,"digest":` + digest + `,"event_payload":""}]`, `missing or null field "event"`},
		{"missing event_type", `[{"imr":0,"digest":` + digest + `,"event":"","event_payload":""}]`, `missing or null field "event_type"`},
		{"unknown field", `[{"imr":0,"pcr":1}]`, `unknown field "pcr"`},
		{"key in other case", `[{"IMR":0}]`, `unknown field "IMR"`},
		{"duplicate key", `[{"imr":0,"imr":3}]`, `duplicate field "imr"`},
		{"negative imr", `[{"imr":-1,"event_type":1,"digest":` + digest + `,"event":"","event_payload":""}]`, "cannot unmarshal"},
		{"fractional imr", `[{"imr":0.5,"event_type":1,"digest":` + digest + `,"event":"","event_payload":""}]`, "cannot unmarshal"},
		{"imr as string", `[{"imr":"0","event_type":1,"digest":` + digest + `,"event":"","event_payload":""}]`, "cannot unmarshal"},
		{"imr 2^32", `[{"imr":4294967296,"event_type":1,"digest":` + digest + `,"event":"","event_payload":""}]`, "cannot unmarshal"},
		{"imr 4", `[{"imr":4,"event_type":1,"digest":` + digest + `,"event":"","event_payload":""}]`, "IMR 4, want 0-3"},
		{"bad hex digest", `[{"imr":0,"event_type":1,"digest":"zz","event":"","event_payload":""}]`, "digest: encoding/hex"},
		{"odd hex payload", `[{"imr":0,"event_type":1,"digest":` + digest + `,"event":"","event_payload":"abc"}]`, "event_payload: encoding/hex"},
		{"non-runtime IMR 3 event", `[{"imr":3,"event_type":1,"digest":` + digest + `,"event":"","event_payload":""}]`, "RTMR3 holds runtime events only"},
		{"short digest", `[{"imr":0,"event_type":1,"digest":"00","event":"","event_payload":""}]`, "digest is 1 bytes, want 48"},
		{"boot event without digest", `[{"imr":0,"event_type":1,"event":"","event_payload":""}]`, "digest is 0 bytes, want 48"},
		{"event log version 2", `[{"imr":3,"event_type":134217729,"event":"","event_payload":"","version":2}]`, "event log version 2 is not supported"},
		{"invalid UTF-8", "[{\"imr\":0,\"event_type\":1,\"digest\":" + digest + ",\"event\":\"\xff\",\"event_payload\":\"\"}]", "not valid UTF-8"},
		{"too many events", tooMany, fmt.Sprintf("more than %d events", MaxEvents)},
		{"too large", `[` + strings.Repeat(" ", MaxEnvelopeSize) + `]`, "exceeds the 10485760-byte limit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseEventLogJSON([]byte(tc.in))
			require.Error(t, err)
			assert.True(t, errors.Is(err, ErrMalformed), "%v", err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestParseEventLogJSONTruncated(t *testing.T) {
	t.Parallel()
	b, err := MarshalEventLogJSON(mustParse(t, liteEnvelope(t)).Events)
	require.NoError(t, err)
	for n := range len(b) {
		if _, err := ParseEventLogJSON(b[:n]); !errors.Is(err, ErrMalformed) {
			t.Fatalf("prefix of %d bytes: err = %v, want ErrMalformed", n, err)
		}
	}
}
