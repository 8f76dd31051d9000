package ext

import (
	"encoding/binary"
	"math"
)

// scaleReader decodes the subset of SCALE (Parity's SCALE codec) that the V0
// envelope uses.
type scaleReader struct{ cursor }

func newScaleReader(b []byte) *scaleReader { return &scaleReader{cursor{b: b}} }

func (r *scaleReader) u8(what string) (byte, error) {
	b, err := r.next(1, what)
	if err != nil {
		return 0, err
	}
	return b[0], nil
}

func (r *scaleReader) u32(what string) (uint32, error) {
	b, err := r.next(4, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

// compact reads a Compact<u32>. Like parity-scale-codec it accepts only the
// canonical (shortest) form, so that one value has one encoding.
func (r *scaleReader) compact(what string) (int, error) {
	start := r.off
	first, err := r.u8(what)
	if err != nil {
		return 0, err
	}
	var v uint64
	var lo uint64
	switch first & 3 {
	case 0:
		return int(first >> 2), nil
	case 1:
		r.off = start
		b, err := r.next(2, what)
		if err != nil {
			return 0, err
		}
		v, lo = uint64(binary.LittleEndian.Uint16(b)>>2), 1<<6
	case 2:
		r.off = start
		b, err := r.next(4, what)
		if err != nil {
			return 0, err
		}
		v, lo = uint64(binary.LittleEndian.Uint32(b)>>2), 1<<14
	case 3:
		// Big-integer mode: the upper six bits plus four give the byte
		// count. A u32 has exactly four bytes, so the upper bits must be 0.
		if first>>2 != 0 {
			r.off = start
			return 0, r.errorf(what, "compact integer of %d bytes does not fit a u32", int(first>>2)+4)
		}
		b, err := r.next(4, what)
		if err != nil {
			return 0, err
		}
		v, lo = uint64(binary.LittleEndian.Uint32(b)), 1<<30
	}
	if v < lo {
		r.off = start
		return 0, r.errorf(what, "non-canonical compact encoding of %d", v)
	}
	if v > math.MaxInt32 {
		// Every length we read is bounded by MaxEnvelopeSize anyway; keeping
		// int32 range means no overflow in the callers' arithmetic.
		r.off = start
		return 0, r.errorf(what, "length %d is too large", v)
	}
	return int(v), nil
}

// length reads a compact collection length and checks that at least
// n*minItemSize bytes remain, so that nothing is allocated for a length the
// input cannot back.
func (r *scaleReader) length(what string, minItemSize, maxItems int) (int, error) {
	start := r.off
	n, err := r.compact(what)
	if err != nil {
		return 0, err
	}
	if n > maxItems {
		r.off = start
		return 0, r.errorf(what, "%d items exceeds the limit of %d", n, maxItems)
	}
	if rem := r.remaining(); minItemSize > 0 && n > rem/minItemSize {
		r.off = start
		return 0, r.errorf(what, "length %d needs at least %d bytes, have %d", n, n*minItemSize, rem)
	}
	return n, nil
}

// bytes reads a Vec<u8> and returns a copy (nil when empty).
func (r *scaleReader) bytes(what string) ([]byte, error) {
	n, err := r.length(what, 1, math.MaxInt32)
	if err != nil {
		return nil, err
	}
	b, err := r.next(n, what)
	if err != nil {
		return nil, err
	}
	return cloneBytes(b), nil
}

// str reads a String, which Rust requires to be UTF-8.
func (r *scaleReader) str(what string) (string, error) {
	start := r.off
	b, err := r.bytes(what)
	if err != nil {
		return "", err
	}
	return r.text(b, start, what)
}

// scaleWriter encodes the same subset.
type scaleWriter struct{ b []byte }

func (w *scaleWriter) u8(v byte)    { w.b = append(w.b, v) }
func (w *scaleWriter) u32(v uint32) { w.b = binary.LittleEndian.AppendUint32(w.b, v) }
func (w *scaleWriter) raw(p []byte) { w.b = append(w.b, p...) }

func (w *scaleWriter) compact(n int) {
	switch {
	case n < 1<<6:
		w.b = append(w.b, byte(n)<<2)
	case n < 1<<14:
		w.b = binary.LittleEndian.AppendUint16(w.b, uint16(n)<<2|1)
	case n < 1<<30:
		w.b = binary.LittleEndian.AppendUint32(w.b, uint32(n)<<2|2)
	default:
		w.b = append(w.b, 3)
		w.b = binary.LittleEndian.AppendUint32(w.b, uint32(n))
	}
}

func (w *scaleWriter) bytes(p []byte) { w.compact(len(p)); w.raw(p) }
func (w *scaleWriter) str(s string)   { w.compact(len(s)); w.b = append(w.b, s...) }

func cloneBytes(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return append([]byte(nil), b...)
}
