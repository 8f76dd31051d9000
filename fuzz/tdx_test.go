package fuzz

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/teesql/ratls/tdx"
)

// quoteSeeds are the recorded quotes (dcap-qvl's and the two in the dstack
// envelopes) and a version 5 re-encoding of one of them.
func quoteSeeds(tb testing.TB) [][]byte {
	full, lite := dstackEnvelopes(tb)
	seeds := [][]byte{
		seedFile(tb, "dcap-qvl/tdx_quote"),
		parsedEnvelope(tb, full).Quote,
		parsedEnvelope(tb, lite).Quote,
	}
	q, err := tdx.ParseQuote(seeds[0])
	require.NoError(tb, err)
	for _, body := range []uint16{tdx.BodyTypeTD10, tdx.BodyTypeTD15} {
		v5 := q.UnsignedCopy()
		v5.Header.Version, v5.BodyType = 5, body
		b, err := v5.Marshal()
		require.NoError(tb, err)
		seeds = append(seeds, b)
	}
	return seeds
}

func FuzzParseQuote(f *testing.F) {
	for _, s := range quoteSeeds(f) {
		f.Add(s)
	}
	f.Add([]byte{4, 0, 2, 0, 0x81, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		q, err := tdx.ParseQuote(data)
		if err != nil {
			require.ErrorIs(t, err, tdx.ErrMalformed)
			require.Nil(t, q)
			return
		}
		// Marshal is the inverse of ParseQuote up to the zero padding real
		// quotes carry after the signature data.
		m, err := q.Marshal()
		require.NoError(t, err)
		require.LessOrEqual(t, len(m), len(data))
		require.Equal(t, data[:len(m)], m)
		require.Zero(t, bytes.Count(data[len(m):], []byte{0})-len(data[len(m):]), "non-zero padding accepted")
		require.Equal(t, q.SignedBytes(), m[:len(q.SignedBytes())])

		back, err := tdx.ParseQuote(m)
		require.NoError(t, err)
		require.Equal(t, q, back)
	})
}
