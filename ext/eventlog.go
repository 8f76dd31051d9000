package ext

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"unicode/utf8"
)

// jsonEvent is one entry of dstack's JSON event log (serde's rendering of
// TdxEvent: byte fields as hex). Pointers tell a missing field (or null) from
// a zero one.
type jsonEvent struct {
	IMR          *uint32 `json:"imr"`
	EventType    *uint32 `json:"event_type"`
	Digest       *string `json:"digest"`
	Event        *string `json:"event"`
	EventPayload *string `json:"event_payload"`
	// Newer dstack may add these; version 1 is the only digest scheme
	// replayed here, hash_input is a derivable hint and is ignored.
	Version   *uint32 `json:"version,omitempty"`
	HashInput *string `json:"hash_input,omitempty"`
}

// ParseEventLogJSON parses the legacy .1.2 JSON event log: an array of
// {imr, event_type, digest (hex, optional), event, event_payload (hex)}.
// Unknown fields, nulls and anything after the array are errors wrapping
// ErrMalformed.
func ParseEventLogJSON(b []byte) ([]Event, error) {
	events, err := parseEventLogJSON(b)
	if err != nil {
		return nil, fmt.Errorf("%w: JSON event log: %w", ErrMalformed, err)
	}
	return events, nil
}

func parseEventLogJSON(b []byte) ([]Event, error) {
	if len(b) > MaxEnvelopeSize {
		return nil, fmt.Errorf("%d bytes exceeds the %d-byte limit", len(b), MaxEnvelopeSize)
	}
	if !utf8.Valid(b) {
		// encoding/json would silently replace invalid bytes in strings.
		return nil, errors.New("not valid UTF-8")
	}
	// Decode entry by entry so that a huge array of tiny entries is cut off
	// at MaxEvents instead of being materialised first.
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil {
		return nil, err
	} else if tok != json.Delim('[') {
		return nil, fmt.Errorf("found %v, want an array", tok)
	}
	var events []Event
	for i := 0; dec.More(); i++ {
		if i == MaxEvents {
			return nil, fmt.Errorf("more than %d events", MaxEvents)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("event %d: %w", i, err)
		}
		je, err := decodeJSONEvent(raw)
		if err != nil {
			return nil, fmt.Errorf("event %d: %w", i, err)
		}
		ev, err := je.event()
		if err != nil {
			return nil, fmt.Errorf("event %d: %w", i, err)
		}
		events = append(events, ev)
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim(']') {
		return nil, fmt.Errorf("unterminated array: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the array")
	}
	if err := checkEvents(events); err != nil {
		return nil, err
	}
	return events, nil
}

// jsonEventKeys are the keys of a jsonEvent, spelled exactly.
var jsonEventKeys = []string{"imr", "event_type", "digest", "event", "event_payload", "version", "hash_input"}

// decodeJSONEvent decodes one entry. encoding/json matches keys without
// case and lets a repeated key win silently; serde does neither, so the keys
// are checked first: a log must not read one way here and another upstream.
func decodeJSONEvent(raw json.RawMessage) (*jsonEvent, error) {
	if bytes.Equal(raw, []byte("null")) {
		return nil, errors.New("null")
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := d.Token(); err != nil || tok != json.Delim('{') {
		return nil, errors.New("not an object")
	}
	var seen []string
	for d.More() {
		tok, err := d.Token()
		if err != nil {
			return nil, err
		}
		key, _ := tok.(string)
		if !slices.Contains(jsonEventKeys, key) {
			return nil, fmt.Errorf("unknown field %q", key)
		}
		if slices.Contains(seen, key) {
			return nil, fmt.Errorf("duplicate field %q", key)
		}
		seen = append(seen, key)
		var skip json.RawMessage
		if err := d.Decode(&skip); err != nil {
			return nil, err
		}
	}
	var je jsonEvent
	if err := json.Unmarshal(raw, &je); err != nil {
		return nil, err
	}
	return &je, nil
}

func (je *jsonEvent) event() (Event, error) {
	switch {
	case je.IMR == nil:
		return Event{}, errors.New(`missing or null field "imr"`)
	case je.EventType == nil:
		return Event{}, errors.New(`missing or null field "event_type"`)
	case je.Event == nil:
		return Event{}, errors.New(`missing or null field "event"`)
	case je.EventPayload == nil:
		return Event{}, errors.New(`missing or null field "event_payload"`)
	}
	if je.Version != nil && *je.Version != v1EventLogVersion {
		return Event{}, fmt.Errorf("event log version %d is not supported, want %d", *je.Version, v1EventLogVersion)
	}
	ev := Event{IMR: *je.IMR, EventType: *je.EventType, Event: *je.Event}
	var err error
	if je.Digest != nil {
		if ev.Digest, err = decodeHex(*je.Digest); err != nil {
			return Event{}, fmt.Errorf("digest: %w", err)
		}
	}
	if ev.Payload, err = decodeHex(*je.EventPayload); err != nil {
		return Event{}, fmt.Errorf("event_payload: %w", err)
	}
	return ev, nil
}

func decodeHex(s string) ([]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, err
	}
	return cloneBytes(b), nil
}

// MarshalEventLogJSON encodes events as dstack's JSON event log (the .1.2
// extension), the inverse of ParseEventLogJSON. Byte fields are lower-case
// hex; an empty digest is written as "".
func MarshalEventLogJSON(events []Event) ([]byte, error) {
	type entry struct {
		IMR          uint32 `json:"imr"`
		EventType    uint32 `json:"event_type"`
		Digest       string `json:"digest"`
		Event        string `json:"event"`
		EventPayload string `json:"event_payload"`
	}
	entries := make([]entry, len(events))
	for i, ev := range events {
		if !utf8.ValidString(ev.Event) {
			return nil, fmt.Errorf("ext: MarshalEventLogJSON: event %d name is not valid UTF-8", i)
		}
		entries[i] = entry{ev.IMR, ev.EventType, hex.EncodeToString(ev.Digest), ev.Event, hex.EncodeToString(ev.Payload)}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // as serde_json writes it
	if err := enc.Encode(entries); err != nil {
		return nil, fmt.Errorf("ext: MarshalEventLogJSON: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
