package ext

import "fmt"

// The V0 envelope is dstack's SCALE encoding of
//
//	VersionedAttestation::V0 { attestation: Attestation {
//	    quote: AttestationQuote::DstackTdx(TdxQuote { quote, event_log }),
//	    runtime_events, report_data: [u8; 64], config } }
//
// that is: 0x00, variant 0x00, Vec<u8> quote, Vec<TdxEvent> event_log,
// Vec<RuntimeEvent> runtime_events, [u8; 64] report_data, String config.

// quoteVariants names the AttestationQuote variants dstack has defined, for
// error messages.
var quoteVariants = map[byte]string{
	0: "DstackTdx",
	1: "DstackGcpTdx",
	2: "DstackNitroEnclave",
	3: "DstackSevSnp",
	4: "DstackNitroTpm",
}

const (
	variantDstackTdx = 0
	// Smallest encodings, used to bound collection lengths before decoding
	// their items: TdxEvent = u32 + u32 + three empty vectors; RuntimeEvent =
	// two empty vectors.
	minTdxEventSize     = 4 + 4 + 1 + 1 + 1
	minRuntimeEventSize = 1 + 1
	reportDataSize      = 64
)

func decodeV0(b []byte) (*envelope, error) {
	r := newScaleReader(b)
	if v, err := r.u8("version"); err != nil {
		return nil, err
	} else if v != 0 {
		return nil, fmt.Errorf("version byte %#02x, want 0x00", v)
	}
	variant, err := r.u8("quote variant")
	if err != nil {
		return nil, err
	}
	if variant != variantDstackTdx {
		name := quoteVariants[variant]
		if name == "" {
			name = "unknown"
		}
		return nil, fmt.Errorf("quote variant %d (%s) is not supported, want 0 (DstackTdx)", variant, name)
	}
	e := &envelope{}
	if e.quote, err = r.bytes("quote"); err != nil {
		return nil, err
	}
	n, err := r.length("event log", minTdxEventSize, MaxEvents)
	if err != nil {
		return nil, err
	}
	e.eventLog = make([]Event, n)
	for i := range e.eventLog {
		if err := decodeV0Event(r, i, &e.eventLog[i]); err != nil {
			return nil, err
		}
	}
	if n, err = r.length("runtime events", minRuntimeEventSize, MaxEvents); err != nil {
		return nil, err
	}
	e.runtime = make([]runtimeEvent, n)
	for i := range e.runtime {
		what := fmt.Sprintf("runtime event %d", i)
		if e.runtime[i].name, err = r.str(what + " name"); err != nil {
			return nil, err
		}
		if e.runtime[i].payload, err = r.bytes(what + " payload"); err != nil {
			return nil, err
		}
	}
	rd, err := r.next(reportDataSize, "report_data")
	if err != nil {
		return nil, err
	}
	e.reportData = cloneBytes(rd)
	if e.config, err = r.str("config"); err != nil {
		return nil, err
	}
	if r.remaining() != 0 {
		return nil, r.errorf("end", "%d trailing bytes", r.remaining())
	}
	return e, nil
}

func decodeV0Event(r *scaleReader, i int, ev *Event) error {
	what := fmt.Sprintf("event log entry %d", i)
	var err error
	if ev.IMR, err = r.u32(what + " imr"); err != nil {
		return err
	}
	if ev.EventType, err = r.u32(what + " event_type"); err != nil {
		return err
	}
	if ev.Digest, err = r.bytes(what + " digest"); err != nil {
		return err
	}
	if ev.Event, err = r.str(what + " event"); err != nil {
		return err
	}
	if ev.Payload, err = r.bytes(what + " event_payload"); err != nil {
		return err
	}
	return nil
}

func encodeV0(e *envelope) []byte {
	var w scaleWriter
	w.u8(EnvelopeV0)
	w.u8(variantDstackTdx)
	w.bytes(e.quote)
	w.compact(len(e.eventLog))
	for i := range e.eventLog {
		ev := &e.eventLog[i]
		w.u32(ev.IMR)
		w.u32(ev.EventType)
		w.bytes(ev.Digest)
		w.str(ev.Event)
		w.bytes(ev.Payload)
	}
	w.compact(len(e.runtime))
	for _, rt := range e.runtime {
		w.str(rt.name)
		w.bytes(rt.payload)
	}
	w.raw(e.reportData)
	w.str(e.config)
	return w.b
}
