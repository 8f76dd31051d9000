// Package testpki is a TEST-ONLY imitation of Intel's DCAP attestation PKI:
// it mints Intel-format TDX quotes and the collateral (TCB info, QE
// identity, CRLs) needed to verify them, and serves that collateral like a
// PCCS.
//
// NEVER TRUST ANYTHING THIS PACKAGE PRODUCES. Every Authority generates its
// own root key in New; the root is named "ratls TEST SGX Root CA - NOT
// INTEL, NEVER TRUST" (or, with Options.IntelRootName, carries Intel's
// common name but still the organization "ratls TEST PKI - NOT INTEL, NEVER
// TRUST"). Nothing here is a default anywhere: a verifier believes these
// quotes only if a test hands it Authority.Root explicitly. Certificates
// point at CRL URLs under the reserved .invalid domain, so nothing can ever
// be fetched for them from the network.
//
// A test gets a quote, its collateral and the root to pin in a few lines:
//
//	a, err := testpki.New(testpki.Options{})
//	quote, err := a.MintQuote(testpki.QuoteOptions{})
//	coll, err := a.Collateral(testpki.CollateralOptions{})
//	// verify quote against coll at a.Now(), trusting only a.Root()
//
// Quotes follow Intel's TDX DCAP layout (versions 4 and 5, TD 1.0 and
// TD 1.5 bodies) and the PCK certificate carries Intel's SGX extension
// (OID 1.2.840.113741.1.13.1) in Intel's exact ASN.1 layout, so independent
// verifiers (go-tdx-guest, dcap-qvl) read them as they read real ones.
// Collateral is the QuoteCollateralV3 interchange format (dcap.Collateral).
//
// Everything is deterministic except keys and ECDSA signatures: all dates
// derive from Options.Now.
package testpki
