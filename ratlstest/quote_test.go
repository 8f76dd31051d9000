package ratlstest

import (
	"context"
	"reflect"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/teesql/ratls/dcap"
	"github.com/teesql/ratls/tdx"
)

// verifyOffline verifies quote with the real DCAP verifier, trusting auth's
// root, against collateral issued with opts, at auth's Now.
func verifyOffline(t *testing.T, auth *Authority, quote []byte, opts CollateralOptions) (*tdx.Verdict, error) {
	t.Helper()
	coll, err := auth.Collateral(opts)
	require.NoError(t, err)
	// Offline: no PCCS involved, the URL is never contacted.
	v, err := auth.NewVerifier("http://127.0.0.1:1", dcap.Options{})
	require.NoError(t, err)
	return v.VerifyWithCollateral(context.Background(), quote, coll, auth.Now())
}

func mintQuote(t *testing.T, auth *Authority, opts QuoteOptions) []byte {
	t.Helper()
	q, err := auth.MintQuote(opts)
	require.NoError(t, err)
	return q
}

func TestMintQuoteDefaultsAreQuoteOfDefaultTD(t *testing.T) {
	t.Parallel()
	auth := newAuthority(t)
	minted, err := tdx.ParseQuote(mintQuote(t, auth, QuoteOptions{}))
	require.NoError(t, err)
	q, err := auth.Quote(TD{}, [64]byte{})
	require.NoError(t, err)
	viaTD, err := tdx.ParseQuote(q)
	require.NoError(t, err)

	assert.EqualValues(t, 4, minted.Header.Version)
	assert.EqualValues(t, tdx.BodyTypeTD10, minted.BodyType)
	assert.Equal(t, viaTD.Body, minted.Body)
	want := auth.DefaultBody()
	want.TEETCBSVN2, want.MRServiceTD = [16]byte{}, [48]byte{} // not in a TD 1.0 body
	assert.Equal(t, want, minted.Body)
	assert.Equal(t, DefaultTD().MRTD, minted.Body.MRTD)
	assert.Equal(t, auth.TEETCBSVN(), minted.Body.TEETCBSVN)
	assert.Equal(t, auth.TEETCBSVN(), auth.DefaultBody().TEETCBSVN2)
	assert.False(t, minted.Body.Debug())
}

func TestMintQuoteVersionsAndBodies(t *testing.T) {
	t.Parallel()
	auth := newAuthority(t)
	chosen := tdx.TDReport{
		MRTD:         OtherMRTD(),
		RTMR:         [4][48]byte{{0x10}, {0x11}, {0x12}, {0x13}},
		TDAttributes: [8]byte{0x01, 3: 0x10}, // debug: DCAP does not judge it
		ReportData:   [64]byte{0xda, 63: 0x7a},
		MRConfigID:   [48]byte{0xc0},
		MROwner:      [48]byte{0x0e},
		TEETCBSVN2:   [16]byte{6, 1, 4},
	}
	tests := []struct {
		name     string
		version  int
		bodyType uint16
	}{
		{"v4", 4, 0},
		{"v5 TD1.0", 5, tdx.BodyTypeTD10},
		{"v5 TD1.5", 5, tdx.BodyTypeTD15},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			q := mintQuote(t, auth, QuoteOptions{Version: tt.version, BodyType: tt.bodyType, Body: chosen})
			verdict, err := verifyOffline(t, auth, q, CollateralOptions{})
			require.NoError(t, err)
			assert.Equal(t, tdx.TCBUpToDate, verdict.TCBStatus)

			got := verdict.Quote
			assert.EqualValues(t, tt.version, got.Header.Version)
			wantType := tt.bodyType
			if wantType == 0 {
				wantType = tdx.BodyTypeTD10
			}
			assert.Equal(t, wantType, got.BodyType)
			assert.Equal(t, chosen.MRTD, got.Body.MRTD)
			assert.Equal(t, chosen.RTMR, got.Body.RTMR)
			assert.Equal(t, chosen.TDAttributes, got.Body.TDAttributes)
			assert.Equal(t, chosen.ReportData, got.Body.ReportData)
			assert.Equal(t, chosen.MRConfigID, got.Body.MRConfigID)
			assert.Equal(t, chosen.MROwner, got.Body.MROwner)
			// Fields left zero took the defaults.
			assert.Equal(t, auth.TEETCBSVN(), got.Body.TEETCBSVN)
			assert.Equal(t, auth.DefaultBody().XFAM, got.Body.XFAM)
			assert.Equal(t, auth.DefaultBody().MRSEAM, got.Body.MRSEAM)
			if wantType == tdx.BodyTypeTD15 {
				assert.Equal(t, chosen.TEETCBSVN2, got.Body.TEETCBSVN2)
			} else {
				assert.Zero(t, got.Body.TEETCBSVN2, "TD 1.0 bodies have no TEE_TCB_SVN2")
			}
		})
	}
}

// A chosen TEE_TCB_SVN is rated by the default collateral's TCB levels and
// TDX module identities.
func TestMintQuoteTEETCBSVN(t *testing.T) {
	t.Parallel()
	auth := newAuthority(t)
	platform := auth.TEETCBSVN()
	lowMicrocode, lowModule, otherModule, above := platform, platform, platform, platform
	lowMicrocode[2]--
	lowModule[0]--
	otherModule[1]++
	above[2]++
	tests := []struct {
		name       string
		svn        [16]byte
		status     tdx.TCBStatus
		advisories []string
		err        error
	}{
		{"platform", platform, tdx.TCBUpToDate, nil, nil},
		{"above the platform", above, tdx.TCBUpToDate, nil, nil},
		{"low microcode", lowMicrocode, tdx.TCBOutOfDate, []string{"INTEL-SA-00837"}, nil},
		{"low module SVN", lowModule, tdx.TCBOutOfDate, nil, nil},
		{"unlisted module version", otherModule, "", nil, dcap.ErrTDXModule},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			q := mintQuote(t, auth, QuoteOptions{Body: tdx.TDReport{TEETCBSVN: tt.svn}})
			verdict, err := verifyOffline(t, auth, q, CollateralOptions{})
			if tt.err != nil {
				require.ErrorIs(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.svn, verdict.Quote.Body.TEETCBSVN)
			assert.Equal(t, tt.status, verdict.TCBStatus)
			assert.ElementsMatch(t, tt.advisories, verdict.AdvisoryIDs)
		})
	}
}

// Bodies DCAP must refuse whatever the collateral: a TDX module not signed
// by Intel, a service TD bound to a TD 1.5.
func TestMintQuoteRefusedBodies(t *testing.T) {
	t.Parallel()
	auth := newAuthority(t)
	for _, opts := range []QuoteOptions{
		{Body: tdx.TDReport{MRSignerSEAM: [48]byte{0x5e}}},
		{Version: 5, BodyType: tdx.BodyTypeTD15, Body: tdx.TDReport{MRServiceTD: [48]byte{0x5e}}},
	} {
		_, err := verifyOffline(t, auth, mintQuote(t, auth, opts), CollateralOptions{})
		require.ErrorIs(t, err, dcap.ErrSEAMSigner)
	}
}

func TestMintQuoteExactBody(t *testing.T) {
	t.Parallel()
	auth := newAuthority(t)
	body := auth.DefaultBody()
	body.TDAttributes = [8]byte{}

	q, err := tdx.ParseQuote(mintQuote(t, auth, QuoteOptions{Body: body}))
	require.NoError(t, err)
	assert.Equal(t, auth.DefaultBody().TDAttributes, q.Body.TDAttributes, "zero fields take defaults")

	exact := mintQuote(t, auth, QuoteOptions{Body: body, ExactBody: true})
	verdict, err := verifyOffline(t, auth, exact, CollateralOptions{})
	require.NoError(t, err)
	assert.Zero(t, verdict.Quote.Body.TDAttributes)
	assert.Equal(t, body.MRTD, verdict.Quote.Body.MRTD)

	// An all-zero body: TEE_TCB_SVN zero is a version 0 TDX module, which
	// only the catch-all level covers.
	verdict, err = verifyOffline(t, auth, mintQuote(t, auth, QuoteOptions{ExactBody: true}), CollateralOptions{})
	require.NoError(t, err)
	assert.Zero(t, verdict.Quote.Body)
	assert.Equal(t, tdx.TCBOutOfDate, verdict.TCBStatus)
}

func TestMintQuoteRejectsBadOptions(t *testing.T) {
	t.Parallel()
	auth := newAuthority(t)
	for _, opts := range []QuoteOptions{
		{Version: 3},
		{Version: 65536 + 4}, // would wrap to 4 as a uint16
		{Version: -1},
		{Version: 4, BodyType: tdx.BodyTypeTD15},
		{Version: 5, BodyType: 7},
	} {
		_, err := auth.MintQuote(opts)
		assert.Error(t, err, "%+v", opts)
	}
}

// withDefaultFields must know every field of tdx.TDReport: one added to
// tdx later must not be silently ignored.
func TestWithDefaultFieldsCoversEveryField(t *testing.T) {
	t.Parallel()
	var def tdx.TDReport
	fillBytes(reflect.ValueOf(&def).Elem(), 0xdd)
	assert.Equal(t, def, withDefaultFields(tdx.TDReport{}, def), "zero fields take defaults")

	typ := reflect.TypeFor[tdx.TDReport]()
	for i := range typ.NumField() {
		var b tdx.TDReport
		fillBytes(reflect.ValueOf(&b).Elem().Field(i), 0x01)
		got := withDefaultFields(b, def)
		assert.Equal(t, reflect.ValueOf(b).Field(i).Interface(), reflect.ValueOf(got).Field(i).Interface(),
			"field %s set by the caller must be kept", typ.Field(i).Name)
	}
}

// fillBytes sets every byte of v (arrays of bytes, nested arrays, structs)
// to x.
func fillBytes(v reflect.Value, x byte) {
	switch v.Kind() {
	case reflect.Uint8:
		v.SetUint(uint64(x))
	case reflect.Array:
		for i := range v.Len() {
			fillBytes(v.Index(i), x)
		}
	case reflect.Struct:
		for i := range v.NumField() {
			fillBytes(v.Field(i), x)
		}
	default:
		panic("fillBytes: unexpected kind " + v.Kind().String())
	}
}
