package main

import (
	"context"
	"fmt"
	"os"
)

// verify-quote checks a recorded quote against its recorded collateral, as
// of a day when that collateral was current, with no network access.
func Example_verifyQuote() {
	code := run(context.Background(), []string{
		"verify-quote",
		"--quote", "../../testdata/dcap-qvl/tdx_quote",
		"--collateral", "../../testdata/dcap-qvl/tdx_quote_collateral.json",
		"--at", "2025-06-25T00:00:00Z",
		"--json",
	}, os.Stdout, os.Stderr)
	fmt.Println("exit status", code)
	// Output:
	// {
	//   "accepted": true,
	//   "error": "",
	//   "tcb_status": "UpToDate",
	//   "advisory_ids": [],
	//   "fmspc": "B0C06F000000",
	//   "quote_version": 4,
	//   "mrtd": "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7",
	//   "td_attributes": "0000001000000000",
	//   "debug": false
	// }
	// exit status 0
}

// A policy that pins another MRTD rejects the same quote: exit status 1,
// and the reason on stderr.
func Example_verifyQuoteWrongMRTD() {
	code := run(context.Background(), []string{
		"verify-quote",
		"--quote", "../../testdata/dcap-qvl/tdx_quote",
		"--collateral", "../../testdata/dcap-qvl/tdx_quote_collateral.json",
		"--at", "2025-06-25T00:00:00Z",
		"--mrtd", "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
	}, os.Stdout, os.Stdout)
	fmt.Println("exit status", code)
	// Output:
	// Quote
	//   version        4
	//   MRTD           91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7
	//   TD attributes  0000001000000000
	//   debug          false
	// Verification
	//   FMSPC          B0C06F000000
	//   TCB status     UpToDate
	//   result         REJECTED: ratls: MRTD not allowed: MRTD 91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7 is not in the allowlist [000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000]
	// ratls verify-quote: ratls: MRTD not allowed: MRTD 91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7 is not in the allowlist [000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000]
	// exit status 1
}
