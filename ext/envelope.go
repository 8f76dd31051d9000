package ext

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/teesql/ratls/tdx"
)

// envelope is what V0 and V1 carry, before the two copies of the runtime
// events are reconciled into Attestation.Events.
type envelope struct {
	quote      []byte
	eventLog   []Event
	runtime    []runtimeEvent
	reportData []byte
	config     string

	stack             string // V1 only
	reportDataPayload string // V1 "dstack-pod" only
}

type runtimeEvent struct {
	name    string
	payload []byte
}

// ParseEnvelope parses a .1.8 attestation envelope (V0 SCALE or V1 msgpack).
//
// It checks structure only: the quote must parse and its REPORTDATA must
// equal the envelope's report_data, and the runtime events the envelope
// carries twice must agree; nothing is verified. Errors wrap ErrMalformed.
func ParseEnvelope(b []byte) (*Attestation, error) {
	a, err := parseEnvelope(b)
	if err != nil {
		return nil, fmt.Errorf("%w: attestation envelope: %w", ErrMalformed, err)
	}
	return a, nil
}

func isMsgpackMap(b byte) bool { return b >= 0x80 && b <= 0x8f || b == 0xde || b == 0xdf }

func parseEnvelope(b []byte) (*Attestation, error) {
	if len(b) > MaxEnvelopeSize {
		return nil, fmt.Errorf("%d bytes exceeds the %d-byte limit", len(b), MaxEnvelopeSize)
	}
	if len(b) == 0 {
		return nil, errors.New("empty")
	}
	var (
		e       *envelope
		version int
		err     error
	)
	switch {
	case b[0] == 0x00:
		version = EnvelopeV0
		e, err = decodeV0(b)
	case isMsgpackMap(b[0]):
		version = EnvelopeV1
		e, err = decodeV1(b)
	default:
		return nil, fmt.Errorf("first byte %#02x is neither 0x00 (V0, SCALE) nor a msgpack map (V1)", b[0])
	}
	var events []Event
	if err == nil {
		events, err = mergeRuntimeEvents(e.eventLog, e.runtime)
	}
	if err == nil {
		err = checkEvents(events)
	}
	if err == nil {
		err = checkReportData(e.quote, e.reportData)
	}
	if err != nil {
		return nil, fmt.Errorf("V%d: %w", version, err)
	}
	return &Attestation{
		Quote:             e.quote,
		Events:            events,
		ReportData:        e.reportData,
		Config:            e.config,
		Envelope:          version,
		Stack:             e.stack,
		ReportDataPayload: e.reportDataPayload,
	}, nil
}

// mergeRuntimeEvents reconciles the two copies of the runtime events: the
// IMR 3 entries of the event log and the separate runtime_events list.
// Upstream replays the latter, other tools read the former; accepting an
// envelope where they differ would let the two disagree about the app, so
// they must match entry for entry. An event log without IMR 3 entries takes
// them from the list.
func mergeRuntimeEvents(log []Event, runtime []runtimeEvent) ([]Event, error) {
	var inLog []*Event
	for i := range log {
		if log[i].IMR == 3 && log[i].IsRuntime() {
			inLog = append(inLog, &log[i])
		}
	}
	if len(inLog) == 0 {
		if len(log)+len(runtime) > MaxEvents {
			return nil, fmt.Errorf("%d events exceeds the limit of %d", len(log)+len(runtime), MaxEvents)
		}
		for _, rt := range runtime {
			log = append(log, Event{IMR: 3, EventType: RuntimeEventType, Event: rt.name, Payload: rt.payload})
		}
		return log, nil
	}
	if len(inLog) != len(runtime) {
		return nil, fmt.Errorf("the event log has %d runtime events, runtime_events has %d", len(inLog), len(runtime))
	}
	for i, ev := range inLog {
		rt := runtime[i]
		if ev.Event != rt.name || !bytes.Equal(ev.Payload, rt.payload) {
			return nil, fmt.Errorf("runtime event %d differs: the event log has %q (payload %x), runtime_events has %q (payload %x)",
				i, ev.Event, ev.Payload, rt.name, rt.payload)
		}
	}
	return log, nil
}

// checkEvents rejects events no replay could use: IMRs other than RTMR0-3,
// IMR 3 events that are not runtime events, and digests that are not
// SHA-384. Runtime events may omit the digest (it is recomputed).
func checkEvents(events []Event) error {
	if len(events) > MaxEvents {
		return fmt.Errorf("%d events exceeds the limit of %d", len(events), MaxEvents)
	}
	for i := range events {
		ev := &events[i]
		if ev.IMR > 3 {
			return fmt.Errorf("event %d (%q): IMR %d, want 0-3", i, ev.Event, ev.IMR)
		}
		if ev.IMR == 3 && !ev.IsRuntime() {
			return errors.New(notRuntimeError(i, ev))
		}
		if len(ev.Digest) == 48 || (len(ev.Digest) == 0 && ev.IsRuntime()) {
			continue
		}
		return fmt.Errorf("event %d (%q, IMR %d, type %#x): digest is %d bytes, want 48", i, ev.Event, ev.IMR, ev.EventType, len(ev.Digest))
	}
	return nil
}

// checkReportData parses the quote and requires its REPORTDATA to equal the
// envelope's copy, so that a reader of either sees the same binding.
func checkReportData(quote, reportData []byte) error {
	q, err := tdx.ParseQuote(quote)
	if err != nil {
		return fmt.Errorf("quote: %w", err)
	}
	if len(reportData) != reportDataSize {
		return fmt.Errorf("report_data is %d bytes, want %d", len(reportData), reportDataSize)
	}
	if !bytes.Equal(reportData, q.Body.ReportData[:]) {
		return fmt.Errorf("report_data %x does not match the quote's REPORTDATA %x", reportData, q.Body.ReportData)
	}
	return nil
}

// MarshalEnvelope encodes a as a .1.8 envelope of the given version. It is
// for test authorities (package ratlstest) that mint certificates.
//
// The event log is a.Events; the runtime_events list is derived from its
// IMR 3 runtime events. An empty a.ReportData is taken from the quote. A V0
// envelope cannot carry a "dstack-pod" stack. The result is what
// ParseEnvelope accepts only if the quote parses and matches ReportData:
// MarshalEnvelope does not check that, so that tests can mint bad envelopes.
func MarshalEnvelope(a *Attestation, version int) ([]byte, error) {
	if a == nil || len(a.Quote) == 0 {
		return nil, errors.New("ext: MarshalEnvelope: no quote")
	}
	e := &envelope{
		quote:             a.Quote,
		eventLog:          a.Events,
		reportData:        a.ReportData,
		config:            a.Config,
		stack:             a.Stack,
		reportDataPayload: a.ReportDataPayload,
	}
	if len(e.reportData) == 0 {
		q, err := tdx.ParseQuote(a.Quote)
		if err != nil {
			return nil, fmt.Errorf("ext: MarshalEnvelope: ReportData is empty and the quote does not parse: %w", err)
		}
		e.reportData = q.Body.ReportData[:]
	}
	if len(e.reportData) != reportDataSize {
		return nil, fmt.Errorf("ext: MarshalEnvelope: ReportData is %d bytes, want %d", len(e.reportData), reportDataSize)
	}
	if err := checkEvents(a.Events); err != nil {
		return nil, fmt.Errorf("ext: MarshalEnvelope: %w", err)
	}
	for i := range a.Events {
		if ev := &a.Events[i]; ev.IMR == 3 && ev.IsRuntime() {
			e.runtime = append(e.runtime, runtimeEvent{ev.Event, ev.Payload})
		}
	}
	if e.stack == "" {
		e.stack = StackDstack
	}
	switch {
	case e.stack != StackDstack && e.stack != StackDstackPod:
		return nil, fmt.Errorf("ext: MarshalEnvelope: unknown stack kind %q", e.stack)
	case e.stack == StackDstack && e.reportDataPayload != "":
		return nil, fmt.Errorf("ext: MarshalEnvelope: ReportDataPayload needs stack kind %q", StackDstackPod)
	}

	var out []byte
	switch version {
	case EnvelopeV0:
		if e.stack != StackDstack {
			return nil, fmt.Errorf("ext: MarshalEnvelope: a V0 envelope cannot carry stack kind %q", e.stack)
		}
		out = encodeV0(e)
	case EnvelopeV1:
		out = encodeV1(e)
	default:
		return nil, fmt.Errorf("ext: MarshalEnvelope: unknown envelope version %d", version)
	}
	if len(out) > MaxEnvelopeSize {
		return nil, fmt.Errorf("ext: MarshalEnvelope: %d bytes exceeds the %d-byte limit", len(out), MaxEnvelopeSize)
	}
	return out, nil
}
