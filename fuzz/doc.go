// Package fuzz holds native Go fuzz targets for the parsers that read
// attacker-controlled bytes: TDX quotes (package tdx), dstack certificate
// extensions, attestation envelopes and event logs (package ext).
//
// The package has no API. Each target is seeded from the recorded data in
// ../testdata (and from values built from it) and checks more than "does not
// panic": parsed values re-encode and re-parse to the same thing, and every
// error wraps the package's sentinel. `go test ./fuzz` replays the seeds and
// the regression inputs in testdata/fuzz; to fuzz one target, for example:
//
//	go test ./fuzz -run=NONE -fuzz=FuzzParseEnvelope -fuzztime=30s
//
// A crasher the fuzzer finds is written to testdata/fuzz/FuzzX/ and replayed
// by every later `go test` run: keep it there as a regression input.
package fuzz
