package ratlstest

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/teesql/ratls/dcap"
	"github.com/teesql/ratls/tdx"
)

func TestPCCSServesVerifiableCollateral(t *testing.T) {
	t.Parallel()
	auth := newAuthority(t)
	pccs := newPCCS(t, auth)
	v, err := pccs.NewVerifier(dcap.Options{})
	require.NoError(t, err)

	var rd [64]byte
	copy(rd[:], "pccs test")
	q, err := auth.Quote(TD{}, rd)
	require.NoError(t, err)
	verdict, err := v.VerifyQuote(context.Background(), q)
	require.NoError(t, err)
	assert.Equal(t, tdx.TCBUpToDate, verdict.TCBStatus)

	// Verified collateral is cached: verifying again asks nothing more.
	total := pccs.TotalRequests()
	require.Positive(t, total)
	assert.EqualValues(t, 1, pccs.Requests(PathTCBInfo))
	assert.EqualValues(t, 1, pccs.Requests(PathQEIdentity))
	q2, err := auth.Quote(TD{Debug: true}, rd)
	require.NoError(t, err)
	_, err = v.VerifyQuote(context.Background(), q2)
	require.NoError(t, err)
	assert.Equal(t, total, pccs.TotalRequests())
}

func TestPCCSCollateralKnobs(t *testing.T) {
	t.Parallel()
	auth := newAuthority(t)
	pccs := newPCCS(t, auth)
	q, err := auth.Quote(TD{}, [64]byte{})
	require.NoError(t, err)

	require.NoError(t, pccs.SetCollateral(CollateralOptions{TCBStatus: tdx.TCBOutOfDate, AdvisoryIDs: []string{"INTEL-SA-00000"}}))
	v, err := pccs.NewVerifier(dcap.Options{})
	require.NoError(t, err)
	verdict, err := v.VerifyQuote(context.Background(), q)
	require.NoError(t, err)
	assert.Equal(t, tdx.TCBOutOfDate, verdict.TCBStatus)
	assert.Equal(t, []string{"INTEL-SA-00000"}, verdict.AdvisoryIDs)

	require.NoError(t, pccs.SetCollateral(CollateralOptions{Expired: true}))
	v, err = pccs.NewVerifier(dcap.Options{})
	require.NoError(t, err)
	_, err = v.VerifyQuote(context.Background(), q)
	require.ErrorIs(t, err, dcap.ErrCollateralExpired)
}

func TestPCCSFaults(t *testing.T) {
	t.Parallel()
	auth := newAuthority(t)
	q, err := auth.Quote(TD{}, [64]byte{})
	require.NoError(t, err)
	tests := []struct {
		name  string
		fault Fault
		want  []error // any of
	}{
		{"5xx", Fault{Status: http.StatusInternalServerError}, []error{dcap.ErrFetch}},
		{"garbage", Fault{Garbage: true}, []error{dcap.ErrFetch, dcap.ErrMalformedCollateral}},
		{"slow", Fault{Delay: time.Hour}, []error{dcap.ErrFetch}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			pccs := newPCCS(t, auth)
			pccs.SetFault(tt.fault)
			v, err := pccs.NewVerifier(dcap.Options{FetchTimeout: 100 * time.Millisecond})
			require.NoError(t, err)
			_, err = v.VerifyQuote(context.Background(), q)
			require.Error(t, err)
			matched := false
			for _, w := range tt.want {
				matched = matched || errors.Is(err, w)
			}
			assert.True(t, matched, "error %v matches none of %v", err, tt.want)
			assert.Positive(t, pccs.TotalRequests())

			// The fault lifted, a fresh verifier succeeds.
			pccs.SetFault(Fault{})
			v, err = pccs.NewVerifier(dcap.Options{})
			require.NoError(t, err)
			_, err = v.VerifyQuote(context.Background(), q)
			require.NoError(t, err)
		})
	}
}

func TestNewVerifierRequiresURL(t *testing.T) {
	t.Parallel()
	_, err := newAuthority(t).NewVerifier("", dcap.Options{})
	require.Error(t, err)
}

func TestAuthorityCollateralOffline(t *testing.T) {
	t.Parallel()
	auth := newAuthority(t)
	coll, err := auth.Collateral(CollateralOptions{})
	require.NoError(t, err)
	q, err := auth.Quote(TD{QuoteVersion: 5}, [64]byte{1})
	require.NoError(t, err)
	// An offline verifier: no PCCS involved, so any URL that is never
	// contacted will do.
	v, err := auth.NewVerifier("http://127.0.0.1:1", dcap.Options{})
	require.NoError(t, err)
	verdict, err := v.VerifyWithCollateral(context.Background(), q, coll, auth.Now())
	require.NoError(t, err)
	assert.Equal(t, tdx.TCBUpToDate, verdict.TCBStatus)
	assert.Equal(t, auth.FMSPC(), verdict.FMSPC)
}
