package ext

import (
	"bytes"
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMsgpackWriterForms(t *testing.T) {
	t.Parallel()
	enc := func(f func(w *mpWriter)) []byte {
		var w mpWriter
		f(&w)
		return w.b
	}
	tests := []struct {
		name string
		got  []byte
		want []byte
	}{
		{"uint 0", enc(func(w *mpWriter) { w.uint(0) }), []byte{0x00}},
		{"uint 127", enc(func(w *mpWriter) { w.uint(127) }), []byte{0x7f}},
		{"uint 128", enc(func(w *mpWriter) { w.uint(128) }), []byte{0xcc, 0x80}},
		{"uint 256", enc(func(w *mpWriter) { w.uint(256) }), []byte{0xcd, 0x01, 0x00}},
		{"uint 0x08000001", enc(func(w *mpWriter) { w.uint(RuntimeEventType) }), []byte{0xce, 0x08, 0x00, 0x00, 0x01}},
		{"uint 2^32", enc(func(w *mpWriter) { w.uint(1 << 32) }), []byte{0xcf, 0, 0, 0, 1, 0, 0, 0, 0}},
		{"fixstr", enc(func(w *mpWriter) { w.str("kind") }), []byte{0xa4, 'k', 'i', 'n', 'd'}},
		{"str8", enc(func(w *mpWriter) { w.str(strings.Repeat("x", 32)) }), append([]byte{0xd9, 32}, strings.Repeat("x", 32)...)},
		{"str16", enc(func(w *mpWriter) { w.str(strings.Repeat("x", 256)) })[:3], []byte{0xda, 0x01, 0x00}},
		{"bin8", enc(func(w *mpWriter) { w.bin([]byte{1, 2}) }), []byte{0xc4, 2, 1, 2}},
		{"bin8 empty", enc(func(w *mpWriter) { w.bin(nil) }), []byte{0xc4, 0}},
		{"bin16", enc(func(w *mpWriter) { w.bin(make([]byte, 300)) })[:3], []byte{0xc5, 0x01, 0x2c}},
		{"fixmap", enc(func(w *mpWriter) { w.mapHeader(3) }), []byte{0x83}},
		{"map16", enc(func(w *mpWriter) { w.mapHeader(16) }), []byte{0xde, 0x00, 0x10}},
		{"byte array", enc(func(w *mpWriter) { w.byteArray([]byte{1, 200}) }), []byte{0x92, 0x01, 0xcc, 200}},
		{"array16", enc(func(w *mpWriter) { w.arrayHeader(70000) }), []byte{0xdd, 0, 1, 0x11, 0x70}},
	}
	for _, tc := range tests {
		assert.Equal(t, tc.want, tc.got, tc.name)
	}
}

func TestMsgpackReaderUint(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   []byte
		want uint64
		err  string
	}{
		{[]byte{0x05}, 5, ""},
		{[]byte{0xcc, 0xff}, 255, ""},
		{[]byte{0xd0, 0x05}, 5, ""}, // small value written as int8
		{[]byte{0xd1, 0x00, 0x7f}, 127, ""},
		{[]byte{0xd0, 0xff}, 0, "negative"},
		{[]byte{0xff}, 0, "negative"},
		{[]byte{0xcd, 0x01, 0x00}, 0, "256 exceeds 255"},
		{[]byte{0xc0}, 0, "found nil, want an integer"},
		{[]byte{0xca, 0, 0, 0, 0}, 0, "found a float"},
		{[]byte{0xcd, 0x01}, 0, "need 2 bytes, have 1"},
	}
	for _, tc := range tests {
		r := newMPReader(tc.in)
		got, err := r.uint("x", math.MaxUint8)
		if tc.err != "" {
			require.Error(t, err, "%x", tc.in)
			assert.Contains(t, err.Error(), tc.err, "%x", tc.in)
			continue
		}
		require.NoError(t, err, "%x", tc.in)
		assert.Equal(t, tc.want, got)
	}
}

func TestMsgpackByteVector(t *testing.T) {
	t.Parallel()
	for name, in := range map[string][]byte{
		"bin":            {0xc4, 3, 1, 2, 0xff},
		"bin16":          {0xc5, 0, 3, 1, 2, 0xff},
		"array of ints":  {0x93, 0x01, 0x02, 0xcc, 0xff},
		"array as int16": {0x93, 0xd1, 0x00, 0x01, 0x02, 0xcd, 0x00, 0xff},
	} {
		r := newMPReader(in)
		got, err := r.byteVector("v")
		require.NoError(t, err, name)
		assert.Equal(t, []byte{1, 2, 0xff}, got, name)
		assert.Zero(t, r.remaining(), name)
	}
	for name, tc := range map[string]struct {
		in   []byte
		want string
	}{
		"element 256":       {[]byte{0x91, 0xcd, 0x01, 0x00}, "256 exceeds 255"},
		"negative element":  {[]byte{0x91, 0xff}, "negative"},
		"string":            {[]byte{0xa1, 'x'}, "found a string, want binary or an array"},
		"array past end":    {[]byte{0xdd, 0x00, 0x00, 0x10, 0x00, 0x01}, "length 4096 needs at least 4096 bytes, have 1"},
		"array too long":    {[]byte{0xdd, 0x7f, 0xff, 0xff, 0xff, 0x01}, "exceeds the limit"},
		"array 2^32-1":      {[]byte{0xdd, 0xff, 0xff, 0xff, 0xff, 0x01}, "length 4294967295 is too large"},
		"bin past end":      {[]byte{0xc6, 0x7f, 0xff, 0xff, 0xff, 0x01}, "needs at least"},
		"nested array":      {[]byte{0x91, 0x90}, "found an array, want an integer"},
		"truncated element": {[]byte{0x92, 0x01}, "length 2 needs at least 2 bytes, have 1"},
		"truncated int16":   {[]byte{0x91, 0xcd, 0x01}, "need 2 bytes, have 1"},
	} {
		r := newMPReader(tc.in)
		_, err := r.byteVector("v")
		require.Error(t, err, name)
		assert.Contains(t, err.Error(), tc.want, name)
	}
}

func TestMsgpackSkipDepth(t *testing.T) {
	t.Parallel()
	deep := append(bytes.Repeat([]byte{0x91}, maxSkipDepth+2), 0x00)
	r := newMPReader(deep)
	require.ErrorContains(t, r.skip("x", 0), "nested deeper")

	ok := append(bytes.Repeat([]byte{0x91}, maxSkipDepth), 0x00)
	r = newMPReader(ok)
	require.NoError(t, r.skip("x", 0))
	assert.Zero(t, r.remaining())

	// Every type skips over exactly its encoding.
	for _, v := range [][]byte{
		{0xc0}, {0xc2}, {0xc3}, {0x7f}, {0xe0}, {0xcc, 1}, {0xd3, 1, 2, 3, 4, 5, 6, 7, 8},
		{0xca, 1, 2, 3, 4}, {0xcb, 1, 2, 3, 4, 5, 6, 7, 8}, {0xd4, 1, 2}, {0xd8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17},
		{0xc7, 2, 9, 1, 2}, {0xa2, 'h', 'i'}, {0xc4, 1, 9}, {0x82, 0x01, 0x02, 0xa1, 'k', 0x90},
	} {
		r := newMPReader(append(bytes.Clone(v), 0xaa))
		require.NoError(t, r.skip("x", 0), "%x", v)
		assert.Equal(t, 1, r.remaining(), "%x", v)
	}
	r = newMPReader([]byte{0xc1})
	assert.ErrorContains(t, r.skip("x", 0), "invalid type byte 0xc1")
}
