package fuzz

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/teesql/ratls/dcap"
	"github.com/teesql/ratls/tdx"
)

// The recorded dcap-qvl quote verifies against its collateral at this time.
var dcapVerifyAt = time.Date(2025, 6, 25, 0, 0, 0, 0, time.UTC)

func dcapSeed(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", "dcap-qvl", name))
	require.NoError(tb, err)
	return b
}

func dcapCollateral(tb testing.TB) *dcap.Collateral {
	tb.Helper()
	var c dcap.Collateral
	require.NoError(tb, json.Unmarshal(dcapSeed(tb, "tdx_quote_collateral.json"), &c))
	return &c
}

func dcapVerifier(tb testing.TB) *dcap.Verifier {
	tb.Helper()
	v, err := dcap.New(dcap.Options{Logger: slog.New(slog.DiscardHandler)})
	require.NoError(tb, err)
	return v
}

var dcapSentinels = []error{
	dcap.ErrMalformedQuote, dcap.ErrUnsupportedQuote, dcap.ErrPCKChain, dcap.ErrRevoked,
	dcap.ErrQEReportSignature, dcap.ErrQEBinding, dcap.ErrQuoteSignature, dcap.ErrQEIdentity,
	dcap.ErrFMSPCMismatch, dcap.ErrCollateralMismatch, dcap.ErrSEAMSigner, dcap.ErrTDXModule,
	dcap.ErrTCBLevelNotFound, dcap.ErrCollateralSignature, dcap.ErrCollateralExpired,
	dcap.ErrCollateralNotYetValid, dcap.ErrMalformedCollateral, dcap.ErrFetch,
}

// requireDCAPError checks that err wraps one of package dcap's sentinels
// and says so in its message.
func requireDCAPError(t *testing.T, err error) {
	t.Helper()
	for _, s := range dcapSentinels {
		if errors.Is(err, s) {
			require.True(t, strings.HasPrefix(err.Error(), "dcap: "), "message %q", err)
			return
		}
	}
	t.Fatalf("error wraps no dcap sentinel: %v", err)
}

// FuzzVerifyWithCollateral mutates the recorded quote. Verification must
// never panic, must fail with a dcap sentinel, and may only succeed for a
// quote whose signed header and body are the recorded ones: no mutation of
// signed bytes gets past the signatures.
func FuzzVerifyWithCollateral(f *testing.F) {
	quote := dcapSeed(f, "tdx_quote")
	f.Add(quote)
	f.Add(quote[:len(quote)/2])
	f.Add(bytes.TrimRight(quote, "\x00"))
	if q, err := tdx.ParseQuote(quote); err == nil {
		// Seeds reaching every stage: the same quote as v5 (TD 1.0 and
		// TD 1.5 bodies), with its QE auth data and PCK chain altered.
		for _, edit := range []func(*tdx.Quote){
			func(c *tdx.Quote) { c.Header.Version = 5 },
			func(c *tdx.Quote) { c.Header.Version, c.BodyType = 5, tdx.BodyTypeTD15 },
			func(c *tdx.Quote) { c.QEAuthData = nil },
			func(c *tdx.Quote) { c.PCKChainPEM = c.PCKChainPEM[:len(c.PCKChainPEM)/2] },
		} {
			c := q.UnsignedCopy()
			edit(c)
			if b, err := c.Marshal(); err == nil {
				f.Add(b)
			}
		}
	}
	want, err := tdx.ParseQuote(quote)
	require.NoError(f, err)
	coll := dcapCollateral(f)
	v := dcapVerifier(f)

	f.Fuzz(func(t *testing.T, b []byte) {
		verdict, err := v.VerifyWithCollateral(context.Background(), b, coll, dcapVerifyAt)
		if err != nil {
			require.Nil(t, verdict)
			requireDCAPError(t, err)
			return
		}
		require.Equal(t, want.SignedBytes(), verdict.Quote.SignedBytes())
		require.Equal(t, want.Body, verdict.Quote.Body)
		require.Equal(t, tdx.TCBUpToDate, verdict.TCBStatus)
	})
}

// FuzzCollateralJSON mutates the QuoteCollateralV3 JSON. Decoding and
// verification must never panic, and collateral can only verify when the
// signed documents are the recorded ones.
func FuzzCollateralJSON(f *testing.F) {
	raw := dcapSeed(f, "tdx_quote_collateral.json")
	f.Add(raw)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"tcb_info":"{}","qe_identity":"{}","root_ca_crl":"30","pck_crl":"3000"}`))
	rec := dcapCollateral(f)
	for _, edit := range []func(*dcap.Collateral){
		func(c *dcap.Collateral) { c.TCBInfoIssuerChain = c.PCKCRLIssuerChain },
		func(c *dcap.Collateral) { c.PCKCRL = c.RootCACRL },
		func(c *dcap.Collateral) { c.TCBInfo = strings.ToLower(c.TCBInfo) },
	} {
		c := *rec
		edit(&c)
		if b, err := json.Marshal(&c); err == nil {
			f.Add(b)
		}
	}
	quote := dcapSeed(f, "tdx_quote")
	v := dcapVerifier(f)

	f.Fuzz(func(t *testing.T, b []byte) {
		var c dcap.Collateral
		if json.Unmarshal(b, &c) != nil {
			return
		}
		verdict, err := v.VerifyWithCollateral(context.Background(), quote, &c, dcapVerifyAt)
		if err != nil {
			requireDCAPError(t, err)
			return
		}
		require.Equal(t, rec.TCBInfo, c.TCBInfo)
		require.Equal(t, rec.QEIdentity, c.QEIdentity)
		require.Equal(t, tdx.TCBUpToDate, verdict.TCBStatus)
	})
}

// FuzzParseTCBInfo: the TCB info parser never panics, fails only with
// ErrMalformedCollateral, and what it accepts re-encodes to a document it
// accepts again, identically.
func FuzzParseTCBInfo(f *testing.F) {
	c := dcapCollateral(f)
	f.Add([]byte(c.TCBInfo))
	f.Add([]byte(c.QEIdentity))
	f.Add([]byte(`{"id":"TDX","version":3}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		info, err := dcap.ParseTCBInfo(b)
		if err != nil {
			require.ErrorIs(t, err, dcap.ErrMalformedCollateral)
			return
		}
		requireStableJSON(t, info, func(b []byte) (any, error) { return dcap.ParseTCBInfo(b) })
	})
}

// FuzzParseQEIdentity: as FuzzParseTCBInfo, for the QE identity.
func FuzzParseQEIdentity(f *testing.F) {
	c := dcapCollateral(f)
	f.Add([]byte(c.QEIdentity))
	f.Add([]byte(c.TCBInfo))
	f.Add([]byte(`{"id":"TD_QE","version":2}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		id, err := dcap.ParseQEIdentity(b)
		if err != nil {
			require.ErrorIs(t, err, dcap.ErrMalformedCollateral)
			return
		}
		requireStableJSON(t, id, func(b []byte) (any, error) { return dcap.ParseQEIdentity(b) })
	})
}

func requireStableJSON(t *testing.T, v any, parse func([]byte) (any, error)) {
	t.Helper()
	first, err := json.Marshal(v)
	require.NoError(t, err)
	again, err := parse(first)
	require.NoError(t, err, "re-encoded document refused: %s", first)
	second, err := json.Marshal(again)
	require.NoError(t, err)
	require.JSONEq(t, string(first), string(second))
}
