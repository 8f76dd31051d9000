package dcap_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/teesql/ratls/dcap"
)

// Verify a quote offline against collateral fetched earlier, at a chosen
// time.
func ExampleVerifier_VerifyWithCollateral() {
	quote, err := os.ReadFile("../testdata/dcap-qvl/tdx_quote")
	if err != nil {
		log.Fatal(err)
	}
	raw, err := os.ReadFile("../testdata/dcap-qvl/tdx_quote_collateral.json")
	if err != nil {
		log.Fatal(err)
	}
	var collateral dcap.Collateral
	if err := json.Unmarshal(raw, &collateral); err != nil {
		log.Fatal(err)
	}

	v, err := dcap.New(dcap.Options{}) // Intel's pinned root
	if err != nil {
		log.Fatal(err)
	}
	at := time.Date(2025, 6, 25, 0, 0, 0, 0, time.UTC)
	verdict, err := v.VerifyWithCollateral(context.Background(), quote, &collateral, at)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("status:", verdict.TCBStatus)
	fmt.Println("FMSPC:", verdict.FMSPC)
	fmt.Println("advisories:", len(verdict.AdvisoryIDs))
	fmt.Println("valid until:", verdict.ValidUntil.UTC().Format(time.RFC3339))

	// The same collateral a month later: expired.
	_, err = v.VerifyWithCollateral(context.Background(), quote, &collateral, at.AddDate(0, 1, 7))
	fmt.Println(err)
	// Output:
	// status: UpToDate
	// FMSPC: B0C06F000000
	// advisories: 0
	// valid until: 2025-07-19T10:00:35Z
	// dcap: collateral expired: TCB info valid until 2025-07-19T10:16:03Z, verification time 2025-08-01T00:00:00Z
}

// A verifier for a service: collateral from a PCCS, cached (and persisted)
// per platform family and shared by every verifier using the same Cache.
func ExampleNew() {
	cache, err := dcap.NewCache(dcap.CacheOptions{Dir: os.TempDir() + "/ratls-collateral"})
	if err != nil {
		log.Fatal(err)
	}
	v, err := dcap.New(dcap.Options{
		CollateralURL: "https://pccs.example.com", // PCS v4 API; empty: Intel PCS
		FetchTimeout:  5 * time.Second,
		Cache:         cache,
	})
	if err != nil {
		log.Fatal(err)
	}
	_ = v // v.VerifyQuote(ctx, quote) fetches collateral on first use
}

// Collect collateral on a connected machine for an air-gapped verifier.
func ExampleVerifier_FetchCollateral() {
	v, err := dcap.New(dcap.Options{})
	if err != nil {
		log.Fatal(err)
	}
	quote, err := os.ReadFile("quote.bin")
	if err != nil {
		return // in this example there is no quote to fetch for
	}
	c, err := v.FetchCollateral(context.Background(), quote)
	if err != nil {
		log.Fatal(err)
	}
	out, _ := json.MarshalIndent(c, "", "  ")
	_ = os.WriteFile("collateral.json", out, 0o644)
}
