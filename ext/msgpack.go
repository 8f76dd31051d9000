package ext

import (
	"encoding/binary"
	"fmt"
	"math"
)

// A small, strict MessagePack reader and writer: only what the V1 envelope
// needs (maps with string keys, arrays, strings, binary, unsigned integers).
// The reader is driven by the envelope's schema, so nesting is bounded by
// the schema; the one generic walk (skip) has its own depth limit.

const maxSkipDepth = 32

// mpReader decodes MessagePack values, checking every length against the
// bytes that remain.
type mpReader struct{ cursor }

func newMPReader(b []byte) *mpReader { return &mpReader{cursor{b: b}} }

func (r *mpReader) peek(what string) (byte, error) {
	if r.remaining() < 1 {
		return 0, r.errorf(what, "need 1 byte, have 0")
	}
	return r.b[r.off], nil
}

// uintN reads an n-byte big-endian length or value.
func (r *mpReader) uintN(n int, what string) (uint64, error) {
	b, err := r.next(n, what)
	if err != nil {
		return 0, err
	}
	var v uint64
	for _, x := range b {
		v = v<<8 | uint64(x)
	}
	return v, nil
}

// header reads the type byte and, for the long forms, the length of a map,
// array, string or binary value. want is the family expected ('m', 'a', 's'
// or 'b'); the length is checked against the bytes that remain, assuming
// each item needs at least minItem bytes.
func (r *mpReader) header(what string, want byte, minItem int) (int, error) {
	start := r.off
	t, err := r.peek(what)
	if err != nil {
		return 0, err
	}
	r.off++
	var fam byte
	var n uint64
	switch {
	case t >= 0x80 && t <= 0x8f:
		fam, n = 'm', uint64(t&0x0f)
	case t >= 0x90 && t <= 0x9f:
		fam, n = 'a', uint64(t&0x0f)
	case t >= 0xa0 && t <= 0xbf:
		fam, n = 's', uint64(t&0x1f)
	default:
		var size int
		fam, size = longForm(t)
		if fam == 0 {
			r.off = start
			return 0, r.errorf(what, "found %s, want %s", mpTypeName(t), familyName(want))
		}
		if n, err = r.uintN(size, what); err != nil {
			return 0, err
		}
	}
	if fam != want {
		r.off = start
		return 0, r.errorf(what, "found %s, want %s", mpTypeName(t), familyName(want))
	}
	if n > math.MaxInt32 {
		// No envelope is that large; the cap keeps int conversions exact
		// on every platform.
		r.off = start
		return 0, r.errorf(what, "length %d is too large", n)
	}
	if rem := r.remaining(); minItem > 0 && n > uint64(rem/minItem) {
		r.off = start
		return 0, r.errorf(what, "length %d needs at least %d bytes, have %d", n, n*uint64(minItem), rem)
	}
	return int(n), nil
}

// longForm returns the family and length-field size of the str/bin/array/map
// forms that carry an explicit length, or 0 for any other type byte.
func longForm(t byte) (fam byte, size int) {
	switch t {
	case 0xc4, 0xc5, 0xc6:
		return 'b', 1 << (t - 0xc4)
	case 0xd9, 0xda, 0xdb:
		return 's', 1 << (t - 0xd9)
	case 0xdc, 0xdd:
		return 'a', 2 << (t - 0xdc)
	case 0xde, 0xdf:
		return 'm', 2 << (t - 0xde)
	}
	return 0, 0
}

func familyName(f byte) string {
	return map[byte]string{'m': "a map", 'a': "an array", 's': "a string", 'b': "binary"}[f]
}

func mpTypeName(t byte) string {
	switch {
	case t <= 0x7f || t >= 0xe0 || (t >= 0xcc && t <= 0xd3):
		return "an integer"
	case t <= 0x8f || t == 0xde || t == 0xdf:
		return "a map"
	case t <= 0x9f || t == 0xdc || t == 0xdd:
		return "an array"
	case t <= 0xbf || (t >= 0xd9 && t <= 0xdb):
		return "a string"
	case t == 0xc0:
		return "nil"
	case t == 0xc2 || t == 0xc3:
		return "a boolean"
	case t >= 0xc4 && t <= 0xc6:
		return "binary"
	case t == 0xca || t == 0xcb:
		return "a float"
	default:
		return fmt.Sprintf("type byte %#02x", t)
	}
}

// mapLen reads a map header; every entry needs at least two bytes.
func (r *mpReader) mapLen(what string) (int, error) { return r.header(what, 'm', 2) }

// arrayLen reads an array header; every item needs at least one byte.
func (r *mpReader) arrayLen(what string, maxItems int) (int, error) {
	start := r.off
	n, err := r.header(what, 'a', 0)
	if err != nil {
		return 0, err
	}
	if n > maxItems {
		r.off = start
		return 0, r.errorf(what, "%d items exceeds the limit of %d", n, maxItems)
	}
	if rem := r.remaining(); n > rem {
		r.off = start
		return 0, r.errorf(what, "length %d needs at least %d bytes, have %d", n, n, rem)
	}
	return n, nil
}

func (r *mpReader) str(what string) (string, error) {
	start := r.off
	n, err := r.header(what, 's', 1)
	if err != nil {
		return "", err
	}
	b, err := r.next(n, what)
	if err != nil {
		return "", err
	}
	return r.text(b, start, what)
}

// uint reads a non-negative integer in any of MessagePack's integer forms
// (some encoders write small positive values as signed types).
func (r *mpReader) uint(what string, max uint64) (uint64, error) {
	start := r.off
	t, err := r.peek(what)
	if err != nil {
		return 0, err
	}
	r.off++
	var v uint64
	switch {
	case t <= 0x7f:
		v = uint64(t)
	case t >= 0xcc && t <= 0xcf: // uint 8/16/32/64
		v, err = r.uintN(1<<(t-0xcc), what)
	case t >= 0xd0 && t <= 0xd3: // int 8/16/32/64
		n := 1 << (t - 0xd0)
		v, err = r.uintN(n, what)
		if err == nil && v>>(8*n-1) != 0 {
			r.off = start
			return 0, r.errorf(what, "negative integer, want a non-negative one")
		}
	case t >= 0xe0:
		r.off = start
		return 0, r.errorf(what, "negative integer, want a non-negative one")
	default:
		r.off = start
		return 0, r.errorf(what, "found %s, want an integer", mpTypeName(t))
	}
	if err != nil {
		return 0, err
	}
	if v > max {
		r.off = start
		return 0, r.errorf(what, "%d exceeds %d", v, max)
	}
	return v, nil
}

// byteVector reads a Vec<u8>, which serde writes either as binary (with
// serde_bytes-style helpers) or as an array of integers 0-255 (plain Vec<u8>).
func (r *mpReader) byteVector(what string) ([]byte, error) {
	t, err := r.peek(what)
	if err != nil {
		return nil, err
	}
	if t >= 0xc4 && t <= 0xc6 {
		n, err := r.header(what, 'b', 1)
		if err != nil {
			return nil, err
		}
		b, err := r.next(n, what)
		if err != nil {
			return nil, err
		}
		return cloneBytes(b), nil
	}
	if mpTypeName(t) != "an array" {
		return nil, r.errorf(what, "found %s, want binary or an array of bytes", mpTypeName(t))
	}
	n, err := r.arrayLen(what, MaxEnvelopeSize)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, nil
	}
	out := make([]byte, n)
	for i := range out {
		v, err := r.uint(what, math.MaxUint8)
		if err != nil {
			return nil, fmt.Errorf("byte %d: %w", i, err)
		}
		out[i] = byte(v)
	}
	return out, nil
}

// skip steps over one value of any type.
func (r *mpReader) skip(what string, depth int) error {
	if depth > maxSkipDepth {
		return r.errorf(what, "nested deeper than %d", maxSkipDepth)
	}
	t, err := r.peek(what)
	if err != nil {
		return err
	}
	switch {
	case t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3:
		r.off++
		return nil
	case t >= 0xcc && t <= 0xd3:
		return r.fixed(1+1<<((t-0xcc)&3), what)
	case t == 0xca:
		return r.fixed(5, what)
	case t == 0xcb:
		return r.fixed(9, what)
	case t >= 0xd4 && t <= 0xd8: // fixext 1/2/4/8/16
		return r.fixed(2+1<<(t-0xd4), what)
	case t >= 0xc7 && t <= 0xc9: // ext 8/16/32
		r.off++
		n, err := r.uintN(1<<(t-0xc7), what)
		if err != nil {
			return err
		}
		return r.fixed(int(min(n+1, math.MaxInt32)), what)
	case (t >= 0xa0 && t <= 0xbf) || (t >= 0xd9 && t <= 0xdb):
		n, err := r.header(what, 's', 1)
		if err != nil {
			return err
		}
		return r.fixed(n, what)
	case t >= 0xc4 && t <= 0xc6:
		n, err := r.header(what, 'b', 1)
		if err != nil {
			return err
		}
		return r.fixed(n, what)
	case (t >= 0x90 && t <= 0x9f) || t == 0xdc || t == 0xdd:
		n, err := r.header(what, 'a', 1)
		if err != nil {
			return err
		}
		for range n {
			if err := r.skip(what, depth+1); err != nil {
				return err
			}
		}
		return nil
	case (t >= 0x80 && t <= 0x8f) || t == 0xde || t == 0xdf:
		n, err := r.header(what, 'm', 2)
		if err != nil {
			return err
		}
		for range 2 * n {
			if err := r.skip(what, depth+1); err != nil {
				return err
			}
		}
		return nil
	default: // 0xc1, never used
		return r.errorf(what, "invalid type byte %#02x", t)
	}
}

func (r *mpReader) fixed(n int, what string) error {
	_, err := r.next(n, what)
	return err
}

// mpWriter writes the shortest encoding of each value, as rmp-serde does.
type mpWriter struct{ b []byte }

func (w *mpWriter) lenHeader(n int, fix, fixMax byte, c8, c16, c32 byte) {
	switch {
	case n <= int(fixMax) && fix != 0:
		w.b = append(w.b, fix|byte(n))
	case n <= math.MaxUint8 && c8 != 0:
		w.b = append(w.b, c8, byte(n))
	case n <= math.MaxUint16:
		w.b = binary.BigEndian.AppendUint16(append(w.b, c16), uint16(n))
	default:
		w.b = binary.BigEndian.AppendUint32(append(w.b, c32), uint32(n))
	}
}

func (w *mpWriter) mapHeader(n int)   { w.lenHeader(n, 0x80, 15, 0, 0xde, 0xdf) }
func (w *mpWriter) arrayHeader(n int) { w.lenHeader(n, 0x90, 15, 0, 0xdc, 0xdd) }

func (w *mpWriter) str(s string) {
	w.lenHeader(len(s), 0xa0, 31, 0xd9, 0xda, 0xdb)
	w.b = append(w.b, s...)
}

func (w *mpWriter) bin(p []byte) {
	w.lenHeader(len(p), 0, 0, 0xc4, 0xc5, 0xc6)
	w.b = append(w.b, p...)
}

func (w *mpWriter) uint(v uint64) {
	switch {
	case v <= 0x7f:
		w.b = append(w.b, byte(v))
	case v <= math.MaxUint8:
		w.b = append(w.b, 0xcc, byte(v))
	case v <= math.MaxUint16:
		w.b = binary.BigEndian.AppendUint16(append(w.b, 0xcd), uint16(v))
	case v <= math.MaxUint32:
		w.b = binary.BigEndian.AppendUint32(append(w.b, 0xce), uint32(v))
	default:
		w.b = binary.BigEndian.AppendUint64(append(w.b, 0xcf), v)
	}
}

// byteArray writes p as an array of integers, the way serde writes a plain
// Vec<u8>.
func (w *mpWriter) byteArray(p []byte) {
	w.arrayHeader(len(p))
	for _, x := range p {
		w.uint(uint64(x))
	}
}
