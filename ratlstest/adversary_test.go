package ratlstest

import (
	"context"
	"crypto/tls"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/teesql/ratls"
	"github.com/teesql/ratls/ext"
	"github.com/teesql/ratls/tdx"
)

// TestAdversariesRejected dials each adversary with a ratls client: the
// handshake must fail with the sentinel of the check that catches it, and
// the adversary must receive no application byte.
func TestAdversariesRejected(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := StartStack(t, StackOptions{})
	client, err := st.NewClient(ctx)
	require.NoError(t, err)

	tests := []struct {
		kind AdversaryKind
		want error
	}{
		{SwappedKey, ratls.ErrKeyBinding},
		{DebugTD, ratls.ErrDebugMode},
		{MismatchedQuotes, ratls.ErrMalformedExtension},
		{NoAttestation, ratls.ErrNoQuote},
		{WrongMRTD, ratls.ErrMRTDNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.kind.String(), func(t *testing.T) {
			t.Parallel()
			adv, err := st.NewAdversary(tt.kind)
			require.NoError(t, err)
			assert.Equal(t, tt.kind, adv.Kind())

			conn, err := client.DialContext(ctx, "tcp", adv.Addr())
			if err == nil {
				conn.Write([]byte("must never arrive"))
				conn.Close()
			}
			require.ErrorIs(t, err, tt.want)
			for _, other := range tests {
				if other.want != tt.want {
					assert.NotErrorIs(t, err, other.want)
				}
			}
			require.NoError(t, adv.Close())
			assert.EqualValues(t, 0, adv.Handshakes())
			assert.EqualValues(t, 0, adv.BytesReceived())
			assert.Empty(t, adv.Received())
		})
	}
}

// TestAdversaryRecorderAndNaiveClient shows that the byte counters work:
// a ratls client accepts the well-behaved Recorder and what it sends is
// recorded; a client that skips verification leaks its bytes to a cheat.
func TestAdversaryRecorderAndNaiveClient(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := StartStack(t, StackOptions{})
	client, err := st.NewClient(ctx)
	require.NoError(t, err)

	rec, err := st.NewAdversary(Recorder)
	require.NoError(t, err)
	conn, err := client.DialContext(ctx, "tcp", rec.Addr())
	require.NoError(t, err)
	_, err = conn.Write([]byte("hello attested server"))
	require.NoError(t, err)
	require.NoError(t, conn.Close())
	require.NoError(t, rec.Close())
	assert.EqualValues(t, 1, rec.Handshakes())
	assert.Equal(t, "hello attested server", string(rec.Received()))
	assert.EqualValues(t, len("hello attested server"), rec.BytesReceived())

	cheat, err := st.NewAdversary(SwappedKey)
	require.NoError(t, err)
	naive, err := tls.Dial("tcp", cheat.Addr(), &tls.Config{InsecureSkipVerify: true})
	require.NoError(t, err)
	_, err = naive.Write([]byte("leaked"))
	require.NoError(t, err)
	require.NoError(t, naive.Close())
	require.NoError(t, cheat.Close())
	assert.Equal(t, "leaked", string(cheat.Received()))
}

// TestAdversaryCertificates checks each adversary's certificate for the
// one defect it is meant to have, independently of the ratls client.
func TestAdversaryCertificates(t *testing.T) {
	t.Parallel()
	auth := newAuthority(t)
	td := DefaultTD()
	for _, kind := range []AdversaryKind{SwappedKey, DebugTD, MismatchedQuotes, NoAttestation, WrongMRTD, Recorder} {
		t.Run(kind.String(), func(t *testing.T) {
			t.Parallel()
			adv, err := NewAdversary(auth, kind, TD{})
			require.NoError(t, err)
			defer adv.Close()
			leaf := adv.Certificate()
			att, err := ext.FromCertificate(leaf)
			if kind == NoAttestation {
				require.ErrorIs(t, err, ext.ErrNoQuote)
				return
			}
			if kind == MismatchedQuotes {
				require.ErrorIs(t, err, ext.ErrQuoteMismatch)
				return
			}
			require.NoError(t, err)
			q, err := tdx.ParseQuote(att.Quote)
			require.NoError(t, err)
			rd, err := keyReportData(leaf.PublicKey)
			require.NoError(t, err)
			assert.Equal(t, kind != SwappedKey, rd == q.Body.ReportData, "key binding")
			assert.Equal(t, kind == DebugTD, q.Body.Debug(), "debug bit")
			assert.Equal(t, kind != WrongMRTD, q.Body.MRTD == td.MRTD, "MRTD")
		})
	}
	_, err := NewAdversary(auth, AdversaryKind(0), TD{})
	require.Error(t, err)
	_, err = NewAdversary(nil, Recorder, TD{})
	require.Error(t, err)
}

// TestAdversaryWrongMRTDAgainstOtherTD: when the expected TD already uses
// OtherMRTD, WrongMRTD must still differ from it.
func TestAdversaryWrongMRTDAgainstOtherTD(t *testing.T) {
	t.Parallel()
	adv, err := NewAdversary(newAuthority(t), WrongMRTD, TD{MRTD: OtherMRTD()})
	require.NoError(t, err)
	defer adv.Close()
	att, err := ext.FromCertificate(adv.Certificate())
	require.NoError(t, err)
	q, err := tdx.ParseQuote(att.Quote)
	require.NoError(t, err)
	assert.NotEqual(t, OtherMRTD(), q.Body.MRTD)
}
