package testpki_test

import (
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/teesql/ratls/internal/testpki"
	"github.com/teesql/ratls/tdx"
)

// A test gets a quote, its collateral and the root to pin. A verifier must
// trust only a.Root() and verify at a.Now().
func Example() {
	a, err := testpki.New(testpki.Options{Now: time.Date(2025, 6, 25, 0, 0, 0, 0, time.UTC)})
	if err != nil {
		log.Fatal(err)
	}
	body := a.DefaultBody()
	body.ReportData[0] = 0x42 // RA-TLS: SHA-512("ratls-cert:" || SPKI)
	quote, err := a.MintQuote(testpki.QuoteOptions{Body: &body})
	if err != nil {
		log.Fatal(err)
	}
	coll, err := a.Collateral(testpki.CollateralOptions{})
	if err != nil {
		log.Fatal(err)
	}
	// verdict, err := verifier.VerifyWithCollateral(ctx, quote, coll, a.Now())
	// with a verifier built on dcap.Options{TrustedRoot: a.Root(), Now: a.Now}.

	q, err := tdx.ParseQuote(quote)
	if err != nil {
		log.Fatal(err)
	}
	var info struct {
		FMSPC      string    `json:"fmspc"`
		NextUpdate time.Time `json:"nextUpdate"`
	}
	if err := json.Unmarshal([]byte(coll.TCBInfo), &info); err != nil {
		log.Fatal(err)
	}
	fmt.Println("quote version:", q.Header.Version, "report data[0]:", q.Body.ReportData[0])
	fmt.Println("root:", a.Root().Subject.CommonName)
	fmt.Println("fmspc:", info.FMSPC, "next update:", info.NextUpdate.Format(time.DateOnly))
	// Output:
	// quote version: 4 report data[0]: 66
	// root: ratls TEST SGX Root CA - NOT INTEL, NEVER TRUST
	// fmspc: 90C06F000000 next update: 2025-07-24
}

// A PCCS double serves the collateral over HTTP at Intel's PCS v4 paths,
// counts requests and injects faults.
func ExampleNewPCCS() {
	a, err := testpki.New(testpki.Options{})
	if err != nil {
		log.Fatal(err)
	}
	coll, err := a.Collateral(testpki.CollateralOptions{})
	if err != nil {
		log.Fatal(err)
	}
	pccs, err := testpki.NewPCCS(coll)
	if err != nil {
		log.Fatal(err)
	}
	srv := httptest.NewServer(pccs)
	defer srv.Close()

	status := func(path string) int {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			log.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	fmt.Println(status(testpki.PathTCBInfo + "?fmspc=" + a.FMSPCHex()))
	fmt.Println(status(testpki.PathTCBInfo + "?fmspc=00606A000000"))
	pccs.SetStatus(http.StatusServiceUnavailable)
	fmt.Println(status(testpki.PathQEIdentity))
	fmt.Println("TCB info requests:", pccs.Requests(testpki.PathTCBInfo))
	// Output:
	// 200
	// 404
	// 503
	// TCB info requests: 2
}

// Negative tests break one thing at a time.
func ExampleAuthority_Collateral_negative() {
	a, err := testpki.New(testpki.Options{})
	if err != nil {
		log.Fatal(err)
	}
	qe := a.QEIdentity()
	qe.MRSigner[0] ^= 0xff // the QE in quotes no longer matches
	for _, opts := range []testpki.CollateralOptions{
		{TCBStatus: tdx.TCBOutOfDate, AdvisoryIDs: []string{"INTEL-SA-00837"}},
		{Expired: true},
		{RevokePCK: true},
		{QEIdentity: &qe},
		{LowercaseFMSPC: true},
	} {
		if _, err := a.Collateral(opts); err != nil {
			log.Fatal(err)
		}
	}
	_, err = a.MintQuote(testpki.QuoteOptions{Defect: testpki.UnboundAttestationKey})
	fmt.Println(err)
	// Output: <nil>
}
