package ratlstest

import (
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/teesql/ratls/ext"
)

// TD describes a simulated trust domain: the measurements its quotes carry
// and the app identity its event log declares. Zero fields take the values
// of DefaultTD, so TD{Debug: true} is the default TD in debug mode. For a
// quote whose every field is chosen (zero values included, TD 1.5 bodies),
// use Authority.MintQuote.
type TD struct {
	// MRTD is the TD measurement (the same for every app on one OS image).
	MRTD [48]byte
	// RTMR holds RTMR0-2, the boot measurements (firmware, kernel, kernel
	// command line). A zero entry is derived from OSImageHash, since one
	// OS image measures the same boot chain. RTMR3 is not settable: it is
	// always the replay of the runtime events below, as in dstack.
	RTMR [3][48]byte
	// TDAttributes are the TD attributes. Zero: SEPT_VE_DISABLE only (bit
	// 28), as dstack launches TDs.
	TDAttributes [8]byte
	// Debug sets TDATTRIBUTES.DEBUG (bit 0) on top of TDAttributes.
	// Verifiers must reject a debug TD.
	Debug bool
	// TEETCBSVN is the TDX TCB of the platform as the quote reports it
	// (byte 0: TDX module SVN, byte 1: module major version, then other
	// TDX components). Zero: the authority's platform TCB, which its
	// default collateral rates UpToDate; a lower value matches a lower
	// TCB level (OutOfDate by default).
	TEETCBSVN [16]byte
	// QuoteVersion is 4 or 5 (TD 1.0 body).
	QuoteVersion int
	// AppID, ComposeHash, InstanceID and OSImageHash are the payloads of the
	// runtime events of the same names, replayed into RTMR3.
	AppID       [20]byte
	ComposeHash [32]byte
	InstanceID  [20]byte
	OSImageHash [32]byte
}

// DefaultTD returns the TD that agents simulate unless told otherwise. Its
// measurements are fixed (SHA-384 or SHA-512 of labels), so tests can pin
// them in a Policy: see MRTDHex and ComposeHashHex.
// TEETCBSVN is left zero: it depends on the Authority.
func DefaultTD() TD {
	td := TD{
		MRTD:         label48("ratlstest MRTD"),
		TDAttributes: defaultTDAttributes,
		QuoteVersion: 4,
		AppID:        [20]byte(label("ratlstest app-id")),
		ComposeHash:  [32]byte(label("ratlstest compose-hash")),
		InstanceID:   [20]byte(label("ratlstest instance-id")),
		OSImageHash:  [32]byte(label("ratlstest os-image-hash")),
	}
	td.RTMR = bootRTMRs(td.OSImageHash)
	return td
}

// defaultTDAttributes has only SEPT_VE_DISABLE (bit 28) set, as dstack's
// TDs: not debug.
var defaultTDAttributes = [8]byte{3: 0x10}

// bootRTMRs derives RTMR0-2 from the OS image: a real event log of the
// boot chain is not simulated (the stripped certificate log cannot replay
// them anyway), so fixed labels stand in for it.
func bootRTMRs(osImageHash [32]byte) [3][48]byte {
	var r [3][48]byte
	for i := range r {
		r[i] = label48(fmt.Sprintf("ratlstest RTMR%d %x", i, osImageHash))
	}
	return r
}

// OtherMRTD is an MRTD that differs from DefaultTD's, for tests that need a
// TD running an image the policy does not allow.
func OtherMRTD() [48]byte { return label48("ratlstest other MRTD") }

func label48(s string) [48]byte { return sha512.Sum384([]byte(s)) }

// label returns 64 bytes derived from s; callers take the prefix they need.
func label(s string) []byte {
	h := sha512.Sum512([]byte(s))
	return h[:]
}

// withDefaults fills td's zero fields from DefaultTD.
func (td TD) withDefaults() TD {
	d := DefaultTD()
	if td.MRTD == ([48]byte{}) {
		td.MRTD = d.MRTD
	}
	if td.QuoteVersion == 0 {
		td.QuoteVersion = d.QuoteVersion
	}
	if td.AppID == ([20]byte{}) {
		td.AppID = d.AppID
	}
	if td.ComposeHash == ([32]byte{}) {
		td.ComposeHash = d.ComposeHash
	}
	if td.InstanceID == ([20]byte{}) {
		td.InstanceID = d.InstanceID
	}
	if td.OSImageHash == ([32]byte{}) {
		td.OSImageHash = d.OSImageHash
	}
	if td.TDAttributes == ([8]byte{}) {
		td.TDAttributes = d.TDAttributes
	}
	// Derived from this TD's image, not DefaultTD's.
	boot := bootRTMRs(td.OSImageHash)
	for i := range td.RTMR {
		if td.RTMR[i] == ([48]byte{}) {
			td.RTMR[i] = boot[i]
		}
	}
	return td
}

func (td TD) validate() error {
	if td.QuoteVersion != 4 && td.QuoteVersion != 5 {
		return fmt.Errorf("ratlstest: TD.QuoteVersion is %d, want 4 or 5", td.QuoteVersion)
	}
	return nil
}

// MRTDHex is td's MRTD (after defaults) in hex, as Policy.MRTDs takes it.
func (td TD) MRTDHex() string {
	m := td.withDefaults().MRTD
	return hex.EncodeToString(m[:])
}

// ComposeHashHex is td's compose hash (after defaults) in hex, as
// Policy.ComposeHashes takes it.
func (td TD) ComposeHashHex() string {
	h := td.withDefaults().ComposeHash
	return hex.EncodeToString(h[:])
}

// AppIDHex is td's app id (after defaults) in hex, as Policy.AppIDs takes
// it.
func (td TD) AppIDHex() string {
	a := td.withDefaults().AppID
	return hex.EncodeToString(a[:])
}

// keyProviderPayload mimics what a KMS-backed dstack app records: which key
// provider released its disk key. The id names this package so that no one
// mistakes a simulated log for a real one.
const keyProviderPayload = `{"name":"ratlstest","id":"not-a-real-key-provider"}`

// Event types of the boot events kept in a stripped certificate log.
const eventTypeACPIData = 0xa

// events returns td's event log as dstack puts it in a certificate (the
// "stripped" form): the three named RTMR0 ACPI events, then the runtime
// events in the order dstack emits them, with empty digests.
func (td TD) events() []ext.Event {
	var evs []ext.Event
	for _, name := range []string{"acpi-loader", "acpi-rsdp", "acpi-tables"} {
		d := label48("ratlstest " + name)
		evs = append(evs, ext.Event{IMR: 0, EventType: eventTypeACPIData, Digest: d[:], Event: name, Payload: []byte("ACPI DATA")})
	}
	for _, rt := range td.runtimeEvents() {
		evs = append(evs, ext.Event{IMR: 3, EventType: ext.RuntimeEventType, Event: rt.name, Payload: rt.payload})
	}
	return evs
}

type runtimeEvent struct {
	name    string
	payload []byte
}

func (td TD) runtimeEvents() []runtimeEvent {
	return []runtimeEvent{
		{"system-preparing", nil},
		{"app-id", td.AppID[:]},
		{"compose-hash", td.ComposeHash[:]},
		{"instance-id", td.InstanceID[:]},
		{"boot-mr-done", nil},
		{"os-image-hash", td.OSImageHash[:]},
		{"key-provider", []byte(keyProviderPayload)},
		{"storage-fs", []byte("zfs")},
		{"system-ready", nil},
	}
}

// rtmrs returns the RTMRs the quotes of td (defaults filled in) carry.
// RTMR3 is the replay of the runtime events, computed here independently
// of package ext so that the simulator checks ext rather than mirroring it.
func (td TD) rtmrs() [4][48]byte {
	var r [4][48]byte
	copy(r[:3], td.RTMR[:])
	for _, ev := range td.runtimeEvents() {
		r[3] = extend(r[3], runtimeDigest(ev.name, ev.payload))
	}
	return r
}

// extend is the RTMR extend operation: SHA-384(mr || digest).
func extend(mr, digest [48]byte) [48]byte {
	return sha512.Sum384(append(mr[:], digest[:]...))
}

// runtimeDigest is dstack's measurement of a runtime event:
// SHA-384(u32le(0x08000001) || ":" || name || ":" || payload).
func runtimeDigest(name string, payload []byte) [48]byte {
	h := sha512.New384()
	binary.Write(h, binary.LittleEndian, uint32(ext.RuntimeEventType))
	h.Write([]byte(":" + name + ":"))
	h.Write(payload)
	return [48]byte(h.Sum(nil))
}

// vmConfig is the envelope's VM configuration, shaped like dstack's.
func (td TD) vmConfig() string {
	b, _ := json.Marshal(map[string]any{
		"os_image_hash": hex.EncodeToString(td.OSImageHash[:]),
		"cpu_count":     2,
		"memory_size":   int64(2) << 30,
		"image":         "ratlstest-simulated",
		"spec_version":  1,
	})
	return string(b)
}

// eventLogJSON is td's full event log (digests included) in the agent's
// JSON form, as GetQuote and Info return it.
func (td TD) eventLogJSON() string {
	type entry struct {
		IMR          uint32 `json:"imr"`
		EventType    uint32 `json:"event_type"`
		Digest       string `json:"digest"`
		Event        string `json:"event"`
		EventPayload string `json:"event_payload"`
	}
	var log []entry
	for _, ev := range td.events() {
		d := ev.Digest
		if ev.EventType == ext.RuntimeEventType {
			rd := runtimeDigest(ev.Event, ev.Payload)
			d = rd[:]
		}
		log = append(log, entry{ev.IMR, ev.EventType, hex.EncodeToString(d), ev.Event, hex.EncodeToString(ev.Payload)})
	}
	b, _ := json.Marshal(log)
	return string(b)
}
