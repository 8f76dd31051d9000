package ext

import (
	"bytes"
	"crypto/sha512"
	"encoding/binary"
	"fmt"
)

// RuntimeEventDigest is the digest dstack extends into RTMR3 for a runtime
// event: SHA-384(u32le(RuntimeEventType) || ":" || name || ":" || payload).
func RuntimeEventDigest(name string, payload []byte) [48]byte {
	h := sha512.New384()
	var typ [4]byte
	binary.LittleEndian.PutUint32(typ[:], RuntimeEventType)
	h.Write(typ[:])
	h.Write([]byte{':'})
	h.Write([]byte(name))
	h.Write([]byte{':'})
	h.Write(payload)
	var d [48]byte
	h.Sum(d[:0])
	return d
}

// Replay recomputes RTMR imr (0-3) from events, recomputing the digests of
// runtime events.
//
// Each event of that IMR extends the register: mr = SHA-384(mr || digest),
// from 48 zero bytes. Other events use their recorded 48-byte digest, which
// only the comparison with a verified quote makes meaningful; in IMR 3 every
// event must be a runtime event (ErrMalformed otherwise). A runtime
// event whose recorded digest differs from the recomputed one is an error
// wrapping ErrReplayMismatch: the log contradicts itself.
func Replay(events []Event, imr int) ([48]byte, error) {
	var mr [48]byte
	if imr < 0 || imr > 3 {
		return mr, fmt.Errorf("ext: Replay: IMR %d out of range 0-3", imr)
	}
	h := sha512.New384()
	for i := range events {
		ev := &events[i]
		if ev.IMR != uint32(imr) {
			continue
		}
		var digest []byte
		if imr == 3 && !ev.IsRuntime() {
			return [48]byte{}, fmt.Errorf("%w: %s", ErrMalformed, notRuntimeError(i, ev))
		}
		if ev.IsRuntime() {
			d := RuntimeEventDigest(ev.Event, ev.Payload)
			if len(ev.Digest) != 0 && !bytes.Equal(ev.Digest, d[:]) {
				return [48]byte{}, fmt.Errorf("%w: runtime event %d (%q) records digest %x, its content hashes to %x",
					ErrReplayMismatch, i, ev.Event, ev.Digest, d)
			}
			digest = d[:]
		} else {
			if len(ev.Digest) != 48 {
				return [48]byte{}, fmt.Errorf("%w: event %d (%q, IMR %d): digest is %d bytes, want 48",
					ErrMalformed, i, ev.Event, ev.IMR, len(ev.Digest))
			}
			digest = ev.Digest
		}
		h.Reset()
		h.Write(mr[:])
		h.Write(digest)
		h.Sum(mr[:0])
	}
	return mr, nil
}

// notRuntimeError describes an IMR 3 event that is not a runtime event.
// RTMR3 is dstack's runtime register and upstream replays it from runtime
// events only, recomputing every digest. Accepting another type there would
// let a log relabel a genuine identity event (or "system-ready") as an
// opaque digest that folds the same, hiding it from VerifiedAppIdentity.
func notRuntimeError(i int, ev *Event) string {
	return fmt.Sprintf("event %d (%q) in IMR 3 has type %#x, want %#x: RTMR3 holds runtime events only", i, ev.Event, ev.EventType, RuntimeEventType)
}

// Runtime event names that carry the app identity.
const (
	eventAppID       = "app-id"
	eventComposeHash = "compose-hash"
	eventInstanceID  = "instance-id"
	eventOSImageHash = "os-image-hash"
	eventKeyProvider = "key-provider"
	eventSystemReady = "system-ready"
)

// VerifiedAppIdentity returns the app identity carried by the runtime events
// if and only if they replay to rtmr3 (the RTMR3 of a verified quote);
// otherwise an error wrapping ErrReplayMismatch.
//
// Like dstack, it reads identity events only up to "system-ready": events
// after it are extended by the running app itself (the guest agent lets it)
// and say nothing about what was booted. Before that point each identity
// event must appear at most once; app-id (20 bytes) and compose-hash (32)
// are required, instance-id (20) and os-image-hash (32) are checked when
// non-empty. Violations are errors wrapping ErrMalformed.
func VerifiedAppIdentity(events []Event, rtmr3 [48]byte) (*AppIdentity, error) {
	got, err := Replay(events, 3)
	if err != nil {
		return nil, err
	}
	if got != rtmr3 {
		return nil, fmt.Errorf("%w: RTMR3 replays to %x, the quote has %x", ErrReplayMismatch, got, rtmr3)
	}
	id := &AppIdentity{}
	fields := []struct {
		name     string
		dst      *[]byte
		size     int // 0: any
		required bool
	}{
		{eventAppID, &id.AppID, 20, true},
		{eventComposeHash, &id.ComposeHash, 32, true},
		{eventInstanceID, &id.InstanceID, 20, false},
		{eventOSImageHash, &id.OSImageHash, 32, false},
		{eventKeyProvider, &id.KeyProvider, 0, false},
	}
	seen := make([]bool, len(fields))

scan:
	for i := range events {
		ev := &events[i]
		if ev.IMR != 3 || !ev.IsRuntime() {
			continue
		}
		if ev.Event == eventSystemReady {
			break scan
		}
		for j, f := range fields {
			if ev.Event != f.name {
				continue
			}
			if seen[j] {
				return nil, fmt.Errorf("%w: RTMR3 event log has more than one %q event (ambiguous identity)", ErrMalformed, f.name)
			}
			seen[j] = true
			if f.size != 0 && len(ev.Payload) != f.size && (f.required || len(ev.Payload) != 0) {
				return nil, fmt.Errorf("%w: %q event payload is %d bytes, want %d", ErrMalformed, f.name, len(ev.Payload), f.size)
			}
			*f.dst = cloneBytes(ev.Payload)
		}
	}
	for j, f := range fields {
		if f.required && !seen[j] {
			return nil, fmt.Errorf("%w: RTMR3 event log has no %q event", ErrMalformed, f.name)
		}
	}
	return id, nil
}
