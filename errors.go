package ratls

import (
	"errors"
	"fmt"
	"strings"

	"github.com/teesql/ratls/tdx"
)

// Sentinel errors, one per stage at which an attested connection can fail.
// Every error the package returns wraps exactly one of them, and drivers that
// wrap errors (pgx, database/sql, grpc) keep them matchable with errors.Is.
var (
	// ErrNoPeerCertificate: the peer presented no certificate.
	ErrNoPeerCertificate = errors.New("ratls: peer presented no certificate")
	// ErrCertificateValidity: the peer's certificate is outside its validity
	// period.
	ErrCertificateValidity = errors.New("ratls: peer certificate not valid at this time")
	// ErrNoQuote: the peer's certificate carries no TDX quote (and
	// AllowSimulator is off).
	ErrNoQuote = errors.New("ratls: peer certificate carries no TDX quote")
	// ErrMalformedExtension: a dstack extension is present but malformed,
	// or the .1.1 and .1.8 quotes disagree.
	ErrMalformedExtension = errors.New("ratls: malformed attestation extension")
	// ErrKeyBinding: the quote's REPORTDATA does not bind the certificate's
	// public key. The quote was made for another key: a copied quote.
	ErrKeyBinding = errors.New("ratls: quote does not bind the certificate key")
	// ErrQuoteInvalid: the verifier rejected the quote (signature, chain,
	// collateral).
	ErrQuoteInvalid = errors.New("ratls: quote verification failed")
	// ErrDebugMode: the peer is a debug TD and AllowDebugMode is off.
	ErrDebugMode = errors.New("ratls: peer is a debug TD")
	// ErrMRTDNotAllowed: the peer's MRTD is not in the allowlist.
	ErrMRTDNotAllowed = errors.New("ratls: MRTD not allowed")
	// ErrTCBStatus: the platform's TCB status is not accepted. The error is
	// a *TCBStatusError carrying the status and advisories.
	ErrTCBStatus = errors.New("ratls: TCB status not accepted")
	// ErrAppIdentity: an app identity pin (compose hash, app id) is set and
	// the peer's verified identity does not match, or cannot be established
	// because the event log is missing or does not replay to RTMR3.
	ErrAppIdentity = errors.New("ratls: app identity not allowed")
	// ErrMissingDstackSocket: no dstack guest agent endpoint is reachable
	// (DSTACK_SIMULATOR_ENDPOINT unset and none of the sockets exist).
	ErrMissingDstackSocket = errors.New("ratls: no dstack guest agent socket")
	// ErrAgent: the dstack guest agent failed to issue a certificate.
	ErrAgent = errors.New("ratls: dstack guest agent request failed")
	// ErrHandshakeTimeout: the TLS handshake did not finish in time.
	ErrHandshakeTimeout = errors.New("ratls: handshake timed out")
)

// TCBStatusError reports a TCB status that the policy does not accept.
type TCBStatusError struct {
	Status      tdx.TCBStatus
	AdvisoryIDs []string
	Accepted    []tdx.TCBStatus
}

func (e *TCBStatusError) Error() string {
	accepted := make([]string, len(e.Accepted))
	for i, s := range e.Accepted {
		accepted[i] = string(s)
	}
	msg := fmt.Sprintf("%v: got %q, accepted %s", ErrTCBStatus, e.Status, strings.Join(accepted, ", "))
	if len(e.AdvisoryIDs) > 0 {
		msg += " (advisories " + strings.Join(e.AdvisoryIDs, ", ") + ")"
	}
	return msg
}

// Is makes errors.Is(err, ErrTCBStatus) hold.
func (e *TCBStatusError) Is(target error) bool { return target == ErrTCBStatus }
