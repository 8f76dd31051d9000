package ext

import (
	"fmt"
	"math"
)

// The V1 envelope is dstack's msgpack encoding (rmp-serde, named fields) of
//
//	{version: 1,
//	 platform: {kind: "tdx", data: {quote, event_log: [TdxEvent]}},
//	 stack: {kind: "dstack" | "dstack-pod",
//	         data: {report_data, runtime_events: [RuntimeEvent], config
//	                [, report_data_payload]}}}
//
// TdxEvent = {imr, event_type, digest, event, event_payload [, version]
// [, hash_input]}; RuntimeEvent = {event, payload [, version]}. Maps are
// read in any key order; unknown, duplicate or missing keys are errors.

// v1EventLogVersion is the only runtime-event digest scheme this package
// replays: SHA-384(u32le(type) ":" name ":" payload). dstack's version 2
// hashes canonical JSON instead.
const v1EventLogVersion = 1

func decodeV1(b []byte) (*envelope, error) {
	r := newMPReader(b)
	e := &envelope{}
	err := r.fields("envelope", []string{"version", "platform", "stack"}, func(key string) (bool, error) {
		switch key {
		case "version":
			start := r.off
			v, err := r.uint("version", math.MaxUint64)
			if err == nil && v != EnvelopeV1 {
				r.off = start
				err = r.errorf("version", "version %d is not supported, want %d", v, EnvelopeV1)
			}
			return true, err
		case "platform":
			return true, decodeV1Platform(r, e)
		case "stack":
			return true, decodeV1Stack(r, e)
		}
		return false, nil
	})
	if err != nil {
		return nil, err
	}
	if r.remaining() != 0 {
		return nil, r.errorf("end", "%d trailing bytes", r.remaining())
	}
	return e, nil
}

func decodeV1Platform(r *mpReader, e *envelope) error {
	kind, data, err := r.tagged("platform")
	if err != nil {
		return err
	}
	if kind != "tdx" {
		return fmt.Errorf("platform kind %q is not supported, want \"tdx\"", kind)
	}
	err = data.fields("platform.data", []string{"quote", "event_log"}, func(key string) (bool, error) {
		var err error
		switch key {
		case "quote":
			e.quote, err = data.byteVector("platform.data.quote")
		case "event_log":
			e.eventLog, err = decodeV1EventLog(data)
		default:
			return false, nil
		}
		return true, err
	})
	if err != nil {
		return err
	}
	return data.end("platform.data")
}

func decodeV1EventLog(r *mpReader) ([]Event, error) {
	required := []string{"imr", "event_type", "event", "event_payload"}
	return decodeV1List(r, "platform.data.event_log", required, func(ev *Event, what, key string) (bool, error) {
		var err error
		var v uint64
		switch key {
		case "imr":
			v, err = r.uint(what+".imr", math.MaxUint32)
			ev.IMR = uint32(v)
		case "event_type":
			v, err = r.uint(what+".event_type", math.MaxUint32)
			ev.EventType = uint32(v)
		case "digest":
			ev.Digest, err = r.byteVector(what + ".digest")
		case "event":
			ev.Event, err = r.str(what + ".event")
		case "event_payload":
			ev.Payload, err = r.byteVector(what + ".event_payload")
		case "version":
			err = r.eventLogVersion(what + ".version")
		case "hash_input":
			// An optional, derivable hint (hex of the digest pre-image):
			// never trusted, only type-checked.
			_, err = r.str(what + ".hash_input")
		default:
			return false, nil
		}
		return true, err
	})
}

func decodeV1Stack(r *mpReader, e *envelope) error {
	kind, data, err := r.tagged("stack")
	if err != nil {
		return err
	}
	required := []string{"report_data", "runtime_events", "config"}
	switch kind {
	case StackDstack:
	case StackDstackPod:
		required = append(required, "report_data_payload")
	default:
		return fmt.Errorf("stack kind %q is not supported, want %q or %q", kind, StackDstack, StackDstackPod)
	}
	e.stack = kind
	err = data.fields("stack.data", required, func(key string) (bool, error) {
		var err error
		switch key {
		case "report_data":
			e.reportData, err = data.byteVector("stack.data.report_data")
		case "runtime_events":
			e.runtime, err = decodeV1RuntimeEvents(data)
		case "config":
			e.config, err = data.str("stack.data.config")
		case "report_data_payload":
			if kind != StackDstackPod {
				return false, nil
			}
			e.reportDataPayload, err = data.str("stack.data.report_data_payload")
		default:
			return false, nil
		}
		return true, err
	})
	if err != nil {
		return err
	}
	return data.end("stack.data")
}

func decodeV1RuntimeEvents(r *mpReader) ([]runtimeEvent, error) {
	required := []string{"event", "payload"}
	return decodeV1List(r, "stack.data.runtime_events", required, func(ev *runtimeEvent, what, key string) (bool, error) {
		var err error
		switch key {
		case "event":
			ev.name, err = r.str(what + ".event")
		case "payload":
			ev.payload, err = r.byteVector(what + ".payload")
		case "version":
			err = r.eventLogVersion(what + ".version")
		default:
			return false, nil
		}
		return true, err
	})
}

// decodeV1List reads an array of at most MaxEvents maps into items; field
// decodes the value of one key of an item (named what in errors) and
// reports whether it knew the key.
func decodeV1List[T any](r *mpReader, what string, required []string, field func(item *T, what, key string) (bool, error)) ([]T, error) {
	n, err := r.arrayLen(what, MaxEvents)
	if err != nil {
		return nil, err
	}
	items := make([]T, n)
	for i := range items {
		itemWhat := fmt.Sprintf("%s[%d]", what, i)
		err := r.fields(itemWhat, required, func(key string) (bool, error) { return field(&items[i], itemWhat, key) })
		if err != nil {
			return nil, err
		}
	}
	return items, nil
}

func (r *mpReader) eventLogVersion(what string) error {
	start := r.off
	v, err := r.uint(what, math.MaxUint32)
	if err != nil {
		return err
	}
	if v != v1EventLogVersion {
		r.off = start
		return r.errorf(what, "event log version %d is not supported, want %d", v, v1EventLogVersion)
	}
	return nil
}

// fields reads a map with string keys, handing each key to f, which decodes
// the value and reports whether it knew the key. Unknown, duplicate and
// missing required keys are errors.
func (r *mpReader) fields(what string, required []string, f func(key string) (bool, error)) error {
	n, err := r.mapLen(what)
	if err != nil {
		return err
	}
	// f rejects unknown keys, so seen never grows beyond the known ones,
	// whatever n claims.
	seen := make(map[string]bool)
	for range n {
		start := r.off
		key, err := r.str(what + " key")
		if err != nil {
			return err
		}
		if seen[key] {
			r.off = start
			return r.errorf(what, "duplicate key %q", key)
		}
		known, err := f(key)
		if err != nil {
			return err
		}
		if !known {
			r.off = start
			return r.errorf(what, "unknown key %q", key)
		}
		seen[key] = true
	}
	for _, k := range required {
		if !seen[k] {
			return r.errorf(what, "missing key %q", k)
		}
	}
	return nil
}

// tagged reads a serde adjacently tagged enum, {kind: string, data: value},
// in either key order. It returns the kind and a reader bounded to the data
// value, for the caller to decode once it knows the kind.
func (r *mpReader) tagged(what string) (kind string, data *mpReader, err error) {
	err = r.fields(what, []string{"kind", "data"}, func(key string) (bool, error) {
		var err error
		switch key {
		case "kind":
			kind, err = r.str(what + ".kind")
		case "data":
			start := r.off
			if err = r.skip(what+".data", 0); err == nil {
				data = &mpReader{cursor{b: r.b[:r.off], off: start}}
			}
		default:
			return false, nil
		}
		return true, err
	})
	return kind, data, err
}

// end checks that a bounded reader consumed its whole value.
func (r *mpReader) end(what string) error {
	if r.remaining() != 0 {
		return r.errorf(what, "%d unread bytes", r.remaining())
	}
	return nil
}

func encodeV1(e *envelope) []byte {
	var w mpWriter
	w.mapHeader(3)
	w.str("version")
	w.uint(EnvelopeV1)

	w.str("platform")
	w.mapHeader(2)
	w.str("kind")
	w.str("tdx")
	w.str("data")
	w.mapHeader(2)
	w.str("quote")
	w.byteArray(e.quote) // a plain Vec<u8> in dstack: an array of integers
	w.str("event_log")
	w.arrayHeader(len(e.eventLog))
	for i := range e.eventLog {
		ev := &e.eventLog[i]
		w.mapHeader(5)
		w.str("imr")
		w.uint(uint64(ev.IMR))
		w.str("event_type")
		w.uint(uint64(ev.EventType))
		w.str("digest")
		w.bin(ev.Digest)
		w.str("event")
		w.str(ev.Event)
		w.str("event_payload")
		w.bin(ev.Payload)
	}

	w.str("stack")
	w.mapHeader(2)
	w.str("kind")
	w.str(e.stack)
	w.str("data")
	if e.stack == StackDstackPod {
		w.mapHeader(4)
	} else {
		w.mapHeader(3)
	}
	w.str("report_data")
	w.byteArray(e.reportData)
	w.str("runtime_events")
	w.arrayHeader(len(e.runtime))
	for _, rt := range e.runtime {
		w.mapHeader(3)
		w.str("event")
		w.str(rt.name)
		w.str("payload")
		w.bin(rt.payload)
		w.str("version")
		w.uint(v1EventLogVersion)
	}
	w.str("config")
	w.str(e.config)
	if e.stack == StackDstackPod {
		w.str("report_data_payload")
		w.str(e.reportDataPayload)
	}
	return w.b
}
