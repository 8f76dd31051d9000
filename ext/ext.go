// Package ext parses (and, for test authorities, writes) the X.509
// extensions that dstack puts in RA-TLS certificates: the TDX quote, the
// attestation envelope, the event log and the app identity they carry.
//
// CONTRACT SKELETON: names and signatures below are shared with other
// packages. Bodies are being written; keep the exported API stable.
package ext

import (
	"crypto/x509"
	"crypto/x509/pkix"
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

// Event is one event-log entry. Runtime events (IMR 3, EventType
// RuntimeEventType) are measured as
// SHA-384(u32le(EventType) || ":" || Event || ":" || Payload).
type Event struct {
	IMR       uint32
	EventType uint32
	Digest    []byte // 48 bytes; may be empty for runtime events in stripped logs
	Event     string
	Payload   []byte
}

// Attestation is what a certificate (or a standalone envelope) says about the
// TD that owns it. Nothing in it is verified: the quote must be verified and
// the event log replayed against it before any field is trusted.
type Attestation struct {
	// Quote is the raw TDX quote.
	Quote []byte
	// SourceOID is the extension the quote was read from (.1.8 or .1.1).
	SourceOID asn1.ObjectIdentifier
	// Events is the event log: boot events (IMR 0-2) and runtime events
	// (IMR 3), in log order. Empty when the certificate carries none.
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
	// AppInfo is the raw msgpack .1.9 extension value, if present.
	AppInfo []byte
}

// AppIdentity is the application identity measured into RTMR3.
type AppIdentity struct {
	AppID       []byte // 20 bytes
	ComposeHash []byte // 32 bytes
	InstanceID  []byte // 20 bytes
	OSImageHash []byte // 32 bytes
	KeyProvider []byte // raw payload of the key-provider event, if any
}

// FromCertificate extracts the attestation from cert's dstack extensions.
// It prefers .1.8 and falls back to .1.1 (+.1.2); if both are present they
// must carry the same quote. It returns an error wrapping ErrNoQuote,
// ErrMalformed or ErrQuoteMismatch.
func FromCertificate(cert *x509.Certificate) (*Attestation, error) { panic("unimplemented") }

// ParseEnvelope parses a .1.8 attestation envelope (V0 SCALE or V1 msgpack).
func ParseEnvelope(b []byte) (*Attestation, error) { panic("unimplemented") }

// ParseEventLogJSON parses the legacy .1.2 JSON event log.
func ParseEventLogJSON(b []byte) ([]Event, error) { panic("unimplemented") }

// RuntimeEventDigest is the digest dstack extends into RTMR3 for a runtime
// event.
func RuntimeEventDigest(name string, payload []byte) [48]byte { panic("unimplemented") }

// Replay recomputes RTMR imr (0-3) from events, recomputing the digests of
// runtime events.
func Replay(events []Event, imr int) ([48]byte, error) { panic("unimplemented") }

// VerifiedAppIdentity returns the app identity carried by the runtime events
// if and only if they replay to rtmr3 (the RTMR3 of a verified quote);
// otherwise an error wrapping ErrReplayMismatch.
func VerifiedAppIdentity(events []Event, rtmr3 [48]byte) (*AppIdentity, error) {
	panic("unimplemented")
}

// Envelope encodings understood by MarshalEnvelope.
const (
	EnvelopeV0 = 0 // SCALE
	EnvelopeV1 = 1 // msgpack
)

// MarshalEnvelope encodes a as a .1.8 envelope of the given version. It is
// for test authorities (package ratlstest) that mint certificates.
func MarshalEnvelope(a *Attestation, version int) ([]byte, error) { panic("unimplemented") }

// Extensions returns the certificate extensions carrying a: .1.8 (V0) when
// legacy is false, .1.1 and .1.2 when it is true; plus .1.3/.1.4/.1.9 when
// the corresponding fields are set. Each value is wrapped in an OCTET STRING
// as dstack does.
func Extensions(a *Attestation, legacy bool) ([]pkix.Extension, error) { panic("unimplemented") }
