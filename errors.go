package ratls

import (
	"errors"
	"fmt"
	"strings"

	"github.com/teesql/ratls/tdx"
)

// Sentinel errors, one per stage at which an attested connection can fail.
// Every attestation, agent or configuration failure the package returns
// wraps exactly one of them (an unreachable agent is the exception, see
// ErrMissingDstackSocket), plus, where there is one, the underlying
// package's sentinel: ext, dcap, or the Verifier's own error. crypto/tls
// returns a VerifyConnection error unchanged from Handshake, and drivers that
// wrap errors with %w (pgx, database/sql via lib/pq) keep them matchable with
// errors.Is. grpc-go does not: at the RPC level it flattens handshake errors
// into status errors (see package adapters/grpc). Plain network failures and the caller's own context
// cancellation are returned without a ratls sentinel.
//
// The peer only ever learns a generic TLS alert (bad_certificate); the
// details stay in the local error.
var (
	// ErrConfig: a Config, ServerConfig or Policy is invalid (malformed
	// hex, wrong measurement length, unknown TCB status, ...).
	ErrConfig = errors.New("ratls: invalid configuration")
	// ErrNoPeerCertificate: the peer presented no certificate.
	ErrNoPeerCertificate = errors.New("ratls: peer presented no certificate")
	// ErrCertificateValidity: the peer's leaf certificate is outside its
	// validity period (NotBefore/NotAfter), checked against Config.Now.
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
	// collateral). The verifier's error is wrapped too, so that for example
	// errors.Is(err, dcap.ErrCollateralExpired) holds.
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
	// ErrMissingDstackSocket: no dstack guest agent is reachable: the
	// endpoint set in DstackEndpoint or DSTACK_SIMULATOR_ENDPOINT does not
	// exist or refuses connections, or neither is set and none of the
	// standard sockets accepts connections (a socket file left behind by a
	// dead agent does not count). When an endpoint exists but refuses the
	// first certificate request, the error wraps ErrAgent too: the only
	// case where two of these sentinels match.
	ErrMissingDstackSocket = errors.New("ratls: no dstack guest agent socket")
	// ErrAgent: the dstack guest agent failed to issue a certificate (at
	// NewClient/NewServer, or in a handshake whose certificate has expired
	// and could not be renewed).
	ErrAgent = errors.New("ratls: dstack guest agent request failed")
	// ErrHandshakeTimeout: the TCP connect and TLS handshake of Dial did not
	// finish within Config.HandshakeTimeout. It is distinct from the
	// attestation errors; it also wraps context.DeadlineExceeded.
	ErrHandshakeTimeout = errors.New("ratls: handshake timed out")
)

// TCBStatusError reports a TCB status that the policy does not accept. An
// empty Status means the verifier reported none.
type TCBStatusError struct {
	// Status is the platform's TCB status, as the verifier reported it.
	Status tdx.TCBStatus
	// AdvisoryIDs are the Intel advisories that apply at that status.
	AdvisoryIDs []string
	// Accepted are the statuses the policy accepts.
	Accepted []tdx.TCBStatus
}

// Error says which status was found and which are accepted.
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
