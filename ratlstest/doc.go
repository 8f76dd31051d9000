// Package ratlstest is an in-process simulated TEE stack for tests, in the
// spirit of net/http/httptest: no TDX machine is needed, and every layer
// above the hardware runs its real code.
//
// It provides:
//
//   - Authority: a test DCAP PKI (root CA, PCK chain, Quoting Enclave) that
//     mints Intel-format TDX quotes and the collateral to verify them, and
//     builds dcap verifiers trusting it. Quote mints a quote for a TD;
//     MintQuote one with any version (4, 5), body (TD 1.0, 1.5) and
//     report fields; CollateralOptions chooses the TCB levels and their
//     statuses, the QE and TDX module identities, the dates and the
//     revoked certificates;
//   - PCCS: an HTTP server serving that collateral at the Intel PCS v4
//     paths, with request counters and fault knobs;
//   - Agent: a dstack guest agent double speaking the real HTTP API
//     (GetTlsKey and friends) on a unix socket and on 127.0.0.1, issuing
//     RA-TLS certificates whose quotes bind their keys and whose event logs
//     replay to RTMR3;
//   - Sidecar: the production RA-TLS terminating proxy, the very code
//     `ratls sidecar` runs in a real CVM, for tests to put in front of an
//     upstream;
//   - Adversary: TLS servers that cheat in one precise way each (swapped
//     key, debug TD, mismatched quotes, no attestation, wrong MRTD) and
//     count what clients send them;
//   - Stack: all of it wired together, closed with one Close.
//
// Nothing here is trusted by default. The test root is never in a default
// configuration: only a configuration built by this package (or handed
// Authority.Root explicitly) trusts it, and building one logs a warning.
// Simulated certificates are issued by a CA named "ratlstest Dstack App CA -
// TEST ONLY, NOT A REAL TEE".
//
// Every server listens on 127.0.0.1 with an OS-chosen port, or on a unix
// socket in a fresh temporary directory, and every Close waits for the
// goroutines it owns.
package ratlstest
