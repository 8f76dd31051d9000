package dcap_test

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tdx-guest/pcs"
	"github.com/google/go-tdx-guest/verify"

	"github.com/teesql/ratls/dcap"
	"github.com/teesql/ratls/tdx"
)

// BenchmarkVerifyCached compares the per-quote cost of this package, with
// the collateral already fetched and verified in its cache, against
// go-tdx-guest's verify.RawTdxQuote fed the same recorded collateral
// through a fake getter (it fetches and re-verifies all collateral on each
// call).
//
//	go test ./dcap -run=NONE -bench=. -benchmem
func BenchmarkVerifyCached(b *testing.B) {
	quote := recordedQuote(b)
	coll := recordedCollateral(b)

	b.Run("dcap", func(b *testing.B) {
		_, srv := startPCCS(b, coll)
		v := newVerifier(b, dcap.Options{CollateralURL: srv.URL, HTTPClient: srv.Client(),
			Now: func() time.Time { return recordedValidAt }})
		if _, err := v.VerifyQuote(context.Background(), quote); err != nil {
			b.Fatal(err) // fills the cache
		}
		b.ReportAllocs()
		for b.Loop() {
			verdict, err := v.VerifyQuote(context.Background(), quote)
			if err != nil || verdict.TCBStatus != tdx.TCBUpToDate {
				b.Fatal(err)
			}
		}
	})

	b.Run("go-tdx-guest", func(b *testing.B) {
		getter := newRecordedGetter(b, coll)
		// Intel's root, given explicitly: with nil go-tdx-guest uses the same
		// embedded root but logs a warning on every call.
		roots := x509.NewCertPool()
		roots.AddCert(dcap.IntelRootCA())
		run := func() error {
			// Options is written into by go-tdx-guest: a fresh one per call.
			return verify.RawTdxQuote(quote, &verify.Options{
				GetCollateral:    true,
				CheckRevocations: true,
				Getter:           getter,
				Now:              recordedValidAt,
				TrustedRoots:     roots,
			})
		}
		// go-tdx-guest compares the FMSPC of the TCB info ("B0C06F000000")
		// with the PCK's ("b0c06f000000") case-sensitively, so it refuses
		// this genuine quote at its very last check, after every signature,
		// chain, CRL and collateral verification: the timing is that of a
		// complete verification.
		if err := run(); err == nil || !strings.Contains(err.Error(), "FMSPC") {
			b.Fatalf("go-tdx-guest: want its FMSPC case mismatch at the last step, got %v", err)
		}
		b.ReportAllocs()
		for b.Loop() {
			_ = run()
		}
	})
}

// BenchmarkVerifyWithCollateral is the air-gapped path: every collateral
// signature and CRL is verified again on each call.
func BenchmarkVerifyWithCollateral(b *testing.B) {
	quote := recordedQuote(b)
	coll := recordedCollateral(b)
	v := newVerifier(b, dcap.Options{})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.VerifyWithCollateral(context.Background(), quote, coll, recordedValidAt); err != nil {
			b.Fatal(err)
		}
	}
}

// recordedGetter answers go-tdx-guest's Intel PCS requests with the
// recorded collateral, as Intel PCS would (URL-encoded issuer chains in
// headers, DER CRLs).
type recordedGetter map[string]struct {
	header map[string][]string
	body   []byte
}

func newRecordedGetter(tb testing.TB, c *dcap.Collateral) recordedGetter {
	unhex := func(s string) []byte {
		b, err := hex.DecodeString(s)
		if err != nil {
			tb.Fatal(err)
		}
		return b
	}
	chain := func(name, pem string) map[string][]string {
		return map[string][]string{name: {url.QueryEscape(pem)}}
	}
	g := recordedGetter{}
	g[pcs.TcbInfoURL(strings.ToLower(recordedFMSPC))] = struct {
		header map[string][]string
		body   []byte
	}{chain("Tcb-Info-Issuer-Chain", c.TCBInfoIssuerChain), []byte(`{"tcbInfo":` + c.TCBInfo + `,"signature":"` + c.TCBInfoSignature + `"}`)}
	g[pcs.QeIdentityURL()] = struct {
		header map[string][]string
		body   []byte
	}{chain("Sgx-Enclave-Identity-Issuer-Chain", c.QEIdentityIssuerChain), []byte(`{"enclaveIdentity":` + c.QEIdentity + `,"signature":"` + c.QEIdentitySignature + `"}`)}
	g[pcs.PckCrlURL("platform")] = struct {
		header map[string][]string
		body   []byte
	}{chain("Sgx-Pck-Crl-Issuer-Chain", c.PCKCRLIssuerChain), unhex(c.PCKCRL)}
	g[dcap.IntelRootCA().CRLDistributionPoints[0]] = struct {
		header map[string][]string
		body   []byte
	}{nil, unhex(c.RootCACRL)}
	return g
}

func (g recordedGetter) Get(u string) (map[string][]string, []byte, error) {
	r, ok := g[u]
	if !ok {
		return nil, nil, fmt.Errorf("recordedGetter: no response for %s", u)
	}
	return r.header, r.body, nil
}
