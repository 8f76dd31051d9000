// Package ext parses (and, for test authorities, writes) the X.509
// extensions that dstack puts in RA-TLS certificates: the TDX quote, the
// attestation envelope, the event log and the app identity they carry.
//
// Nothing this package returns is trusted by itself. The quote must be
// verified (package dcap), and the event log must replay to the quote's
// RTMRs (Replay, VerifiedAppIdentity) before any event is believed.
//
// Every parser here reads attacker-controlled bytes: inputs are size-capped,
// every length is checked against the bytes that remain before anything is
// allocated, every byte must be consumed, and no input makes them panic.
//
// The .1.9 app info extension is kept as its raw msgpack bytes
// (Attestation.AppInfo), on purpose not decoded: nothing here needs it
// (the app identity that policies pin comes from the RTMR3 event log), its
// format is versioned upstream by dstack, and a decoder for it would be
// one more parser of hostile input to maintain with nothing to show for it.
// Its bytes are not covered by the quote: treat them as claims.
package ext

import (
	"encoding/asn1"
	"errors"
)

// Object identifiers under dstack's arc 1.3.6.1.4.1.62397.1.
var (
	OIDTDXQuote    = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 62397, 1, 1} // raw quote (legacy)
	OIDEventLog    = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 62397, 1, 2} // JSON event log (legacy)
	OIDAppID       = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 62397, 1, 3} // app id, 20 raw bytes
	OIDCertUsage   = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 62397, 1, 4} // "app:custom", ...
	OIDAttestation = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 62397, 1, 8} // V0/V1 envelope
	OIDAppInfo     = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 62397, 1, 9} // msgpack app info
)

var (
	// ErrNoQuote: the certificate carries neither .1.8 nor .1.1.
	ErrNoQuote = errors.New("ext: certificate carries no TDX quote")
	// ErrMalformed: an extension is present but cannot be parsed.
	ErrMalformed = errors.New("ext: malformed extension")
	// ErrQuoteMismatch: .1.1 and .1.8 carry different quotes.
	ErrQuoteMismatch = errors.New("ext: .1.1 and .1.8 quotes differ")
	// ErrReplayMismatch: the event log does not replay to the quoted RTMR.
	ErrReplayMismatch = errors.New("ext: event log does not replay to the quoted RTMR")
)

// RuntimeEventType is the event type dstack uses for events it extends into
// RTMR3 at run time.
const RuntimeEventType = 0x08000001

// Limits on untrusted input. Real envelopes are about 10 KB with a few dozen
// events; the caps only stop a hostile peer from making us allocate or scan
// without bound.
const (
	// MaxEnvelopeSize caps a .1.8 envelope and a .1.2 JSON event log, as
	// upstream dstack does.
	MaxEnvelopeSize = 10 << 20
	// MaxEvents caps the entries of one event list (boot event log, runtime
	// events, or a JSON event log).
	MaxEvents = 4096
)

// Envelope encodings understood by MarshalEnvelope, and recorded in
// Attestation.Envelope by the parsers.
const (
	EnvelopeV0     = 0  // SCALE
	EnvelopeV1     = 1  // msgpack
	EnvelopeLegacy = -1 // no envelope: legacy .1.1 quote (+ .1.2 JSON event log)
)

// Stack kinds of a V1 envelope.
const (
	StackDstack    = "dstack"
	StackDstackPod = "dstack-pod"
)

// Event is one event-log entry. Runtime events (IMR 3, EventType
// RuntimeEventType) are measured as
// SHA-384(u32le(EventType) || ":" || Event || ":" || Payload).
type Event struct {
	// IMR is the register the event was extended into: 0-3 for RTMR0-3.
	IMR uint32
	// EventType is the TCG event type, RuntimeEventType for dstack's
	// runtime events.
	EventType uint32
	// Digest is the 48-byte SHA-384 extended into the register; it may be
	// empty for runtime events in stripped logs (it is recomputed).
	Digest []byte
	// Event is the event's name ("compose-hash", ...).
	Event string
	// Payload is the event's data, untrusted until the log replays.
	Payload []byte
}

// IsRuntime reports whether e is a dstack runtime event, whose digest is
// recomputed from its name and payload rather than taken from Digest.
func (e *Event) IsRuntime() bool { return e.EventType == RuntimeEventType }

// Attestation is what a certificate (or a standalone envelope) says about the
// TD that owns it. Nothing in it is verified: the quote must be verified and
// the event log replayed against it before any field is trusted.
type Attestation struct {
	// Quote is the raw TDX quote.
	Quote []byte
	// SourceOID is the extension the quote was read from (.1.8 or .1.1).
	// ParseEnvelope leaves it nil.
	SourceOID asn1.ObjectIdentifier
	// Events is the event log: boot events (IMR 0-2) and runtime events
	// (IMR 3), in log order. Empty when the certificate carries none.
	//
	// An envelope carries the runtime events twice, inside the event log and
	// in a list of their own; the parsers require both copies to agree and
	// return them once, here.
	Events []Event
	// ReportData is the envelope's copy of REPORTDATA (V0/V1 only; nil for
	// legacy .1.1 certificates).
	ReportData []byte
	// Config is the envelope's VM configuration JSON (may be empty).
	Config string
	// AppID is the raw .1.3 extension value, if present.
	AppID []byte
	// Usage is the .1.4 extension value, if present.
	Usage string
	// AppInfo is the raw msgpack .1.9 extension value, if present. It is
	// deliberately not decoded (see the package doc): no consumer needs it
	// yet, and its format is versioned upstream. Unverified.
	AppInfo []byte

	// Envelope is the encoding the quote was read from: EnvelopeV0,
	// EnvelopeV1 or EnvelopeLegacy.
	Envelope int
	// Stack is the stack kind of a V1 envelope (StackDstack or
	// StackDstackPod); empty otherwise.
	Stack string
	// ReportDataPayload is the report_data_payload of a V1 "dstack-pod"
	// envelope; empty otherwise.
	ReportDataPayload string
}

// AppIdentity is the application identity measured into RTMR3.
type AppIdentity struct {
	AppID       []byte // 20 bytes
	ComposeHash []byte // 32 bytes
	InstanceID  []byte // 20 bytes, or empty when the app runs without one
	OSImageHash []byte // 32 bytes, or empty on images that do not measure it
	KeyProvider []byte // raw payload of the key-provider event, if any
}

// extensionNames label OIDs in error messages.
var extensionNames = []struct {
	oid  asn1.ObjectIdentifier
	name string
}{
	{OIDTDXQuote, "TDX quote"},
	{OIDEventLog, "event log"},
	{OIDAppID, "app id"},
	{OIDCertUsage, "certificate usage"},
	{OIDAttestation, "attestation envelope"},
	{OIDAppInfo, "app info"},
}

func oidName(oid asn1.ObjectIdentifier) string {
	for _, n := range extensionNames {
		if n.oid.Equal(oid) {
			return oid.String() + " (" + n.name + ")"
		}
	}
	return oid.String()
}
