package ext

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCompactRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		n    int
		want []byte
	}{
		{0, []byte{0x00}},
		{1, []byte{0x04}},
		{63, []byte{0xfc}},
		{64, []byte{0x01, 0x01}},
		{5010, []byte{0x49, 0x4e}},
		{1<<14 - 1, []byte{0xfd, 0xff}},
		{1 << 14, []byte{0x02, 0x00, 0x01, 0x00}},
		{1<<30 - 1, []byte{0xfe, 0xff, 0xff, 0xff}},
		{1 << 30, []byte{0x03, 0x00, 0x00, 0x00, 0x40}},
		{1<<31 - 1, []byte{0x03, 0xff, 0xff, 0xff, 0x7f}},
	}
	for _, tc := range tests {
		var w scaleWriter
		w.compact(tc.n)
		assert.Equal(t, tc.want, w.b, "encode %d", tc.n)

		r := newScaleReader(tc.want)
		got, err := r.compact("n")
		require.NoError(t, err, "decode %x", tc.want)
		assert.Equal(t, tc.n, got)
		assert.Zero(t, r.remaining())
	}
}

func TestCompactRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "need 1 bytes, have 0"},
		{"two-byte form truncated", []byte{0x01}, "need 2 bytes, have 1"},
		{"four-byte form truncated", []byte{0x02, 0, 0}, "need 4 bytes, have 3"},
		{"big form truncated", []byte{0x03, 0, 0}, "need 4 bytes, have 2"},
		{"63 in two bytes", []byte{0xfd, 0x00}, "non-canonical compact encoding of 63"},
		{"zero in four bytes", []byte{0x02, 0, 0, 0}, "non-canonical"},
		{"2^30-1 in big form", []byte{0x03, 0xff, 0xff, 0xff, 0x3f}, "non-canonical"},
		{"2^31 does not fit", []byte{0x03, 0, 0, 0, 0x80}, "too large"},
		{"five-byte big form", []byte{0x07, 0, 0, 0, 0, 1}, "compact integer of 5 bytes"},
	}
	for _, tc := range tests {
		r := newScaleReader(tc.in)
		_, err := r.compact("n")
		require.Error(t, err, tc.name)
		assert.Contains(t, err.Error(), tc.want, tc.name)
	}
}

func TestScaleLengthChecksRemaining(t *testing.T) {
	t.Parallel()
	// A Vec<u8> of 1000 bytes announced with only 3 behind it must fail
	// before anything is allocated for it.
	var w scaleWriter
	w.compact(1000)
	w.raw([]byte{1, 2, 3})
	r := newScaleReader(w.b)
	_, err := r.bytes("v")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "offset 0: v: length 1000 needs at least 1000 bytes, have 3")
}
