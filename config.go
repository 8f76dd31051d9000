// Package ratls makes TLS connections to services in Intel TDX trust domains
// (dstack CVMs) that prove, inside the handshake, what code the server runs.
//
// A dstack RA-TLS certificate carries a TDX quote whose REPORTDATA is
// SHA-512("ratls-cert:" || SubjectPublicKeyInfo): the hardware signs the
// trust domain's measurements and the key that terminates TLS. A Client
// checks all of it in the handshake's VerifyConnection hook, before the
// handshake completes, so no application data is ever sent to a server that
// has not proved what it is:
//
//  1. the leaf certificate is within its validity period;
//  2. the quote is read from extension .1.8 (or the legacy .1.1);
//  3. REPORTDATA binds the certificate's public key (a quote copied from
//     another certificate fails here, before any expensive work);
//  4. the Verifier checks the quote's signatures and collateral (DCAP by
//     default);
//  5. the Policy is applied: MRTD allowlist, debug TDs, TCB status, app
//     identity pins (compose hash, app id) read from the event log, which
//     must replay to the quote's RTMR3.
//
// X.509 chain validation plays no part: dstack certificates are issued by a
// per-app CA, and trust comes from the quote.
//
// VerifyQuote and VerifyCertificate run the same checks outside a
// handshake, on a bare quote or a certificate, for tools and audits.
//
// The client side presents its own dstack-issued certificate (mutual
// RA-TLS), obtained from the local guest agent and renewed in the
// background. Server is the other side: it serves a certificate from the
// agent and verifies its clients' attestations with the same machinery.
package ratls

import (
	"context"
	"crypto/tls"
	"log/slog"
	"time"

	"github.com/teesql/ratls/ext"
	"github.com/teesql/ratls/tdx"
)

// Verifier verifies a TDX quote's signatures, certificate chain and
// collateral. *dcap.Verifier implements it; so does NoopVerifier.
//
// The returned verdict must carry the TCB status: an empty status is refused
// (except from NoopVerifier), and so is a verdict whose ValidUntil has
// already passed by Config.Now (or VerifyAt). A Verifier must be safe for
// concurrent use.
type Verifier interface {
	VerifyQuote(ctx context.Context, quote []byte) (*tdx.Verdict, error)
}

// Policy says which attested peers are acceptable. The zero Policy accepts
// any genuine, non-debug TD whose TCB status is UpToDate or
// SWHardeningNeeded, whatever code it runs: pin MRTDs and ComposeHashes in
// production.
//
// Every list is checked when the Client or Server is built: malformed
// entries are an error wrapping ErrConfig, never silently ignored.
type Policy struct {
	// MRTDs is the allowlist of TD measurements (hex, 96 digits, with or
	// without 0x, any case). Empty: any MRTD (a warning is logged when the
	// Client or Server is built).
	// The MRTD identifies the dstack OS image, not the app: every app on
	// one image shares it.
	MRTDs []string
	// ComposeHashes pins the app's compose hash (hex, 64 digits), read from
	// the RTMR3 event log. Empty: not checked (any code on an allowed
	// image). When set, a peer whose event log is missing or does not
	// replay to its quote's RTMR3 is refused.
	ComposeHashes []string
	// AppIDs pins the dstack app id (hex, 40 digits), read from the RTMR3
	// event log like ComposeHashes. Empty: not checked (any app).
	AppIDs []string
	// AcceptTCBStatuses lists the acceptable TCB statuses. Empty:
	// UpToDate and SWHardeningNeeded. An unknown status is an error.
	// Danger: OutOfDate platforms miss security fixes, and Revoked ones
	// are compromised; accepting any status beyond the default is warned
	// about when the Client or Server is built.
	AcceptTCBStatuses []tdx.TCBStatus
	// AllowDebugMode accepts debug TDs. Default: refused. Danger: a debug
	// TD's memory is open to the host; never in production. A warning is
	// logged when the Client or Server is built.
	AllowDebugMode bool
	// AllowSimulator accepts a certificate with no quote at all, without
	// verifying the peer (the Report says Simulated). A certificate that
	// does carry a quote is still fully verified. Default: refused
	// (ErrNoQuote). Danger: anyone can then impersonate any peer;
	// development only. A warning is logged when the Client or Server is
	// built, and again at the first peer accepted without a quote.
	AllowSimulator bool
}

// Config configures a Client. The zero Config is safe: full DCAP
// verification against Intel's root and PCS, the default Policy, a client
// certificate from the local dstack guest agent.
type Config struct {
	// Policy says which servers are accepted. The zero Policy accepts any
	// genuine, non-debug TD on an UpToDate or SWHardeningNeeded platform,
	// whatever code it runs: pin MRTDs and ComposeHashes in production.
	Policy Policy
	// Verifier verifies quotes. Nil: DCAP with Intel's pinned root and
	// collateral from Intel PCS (dcap.New with zero Options, but Now and
	// Logger from this Config).
	//
	// Danger: the Verifier is what makes a quote proof of anything. One
	// that accepts a quote without checking its signatures, its PCK chain
	// up to Intel's root and its collateral lets anyone forge an
	// attestation, whatever the Policy pins. NoopVerifier does exactly
	// that (tests and development only; a warning is logged when the
	// Client is built, however the NoopVerifier was made).
	Verifier Verifier
	// ClientCertificate, if set, is presented instead of one from the
	// dstack guest agent (no agent is contacted, nothing is renewed). It
	// is presented only to servers that ask for a client certificate;
	// attested servers refuse one that carries no quote binding its key.
	// Nil: a certificate from the agent, renewed in the background.
	ClientCertificate *tls.Certificate
	// DstackEndpoint overrides agent discovery (an http URL or a socket
	// path), and is used as given: if nothing listens there, NewClient
	// fails with ErrMissingDstackSocket. Empty: DSTACK_SIMULATOR_ENDPOINT
	// if set, else the first of the standard sockets /var/run/dstack.sock,
	// /run/dstack.sock, /var/run/dstack/dstack.sock and
	// /run/dstack/dstack.sock that accepts connections.
	DstackEndpoint string
	// CertificateMaxAge renews the client certificate once it is this old,
	// even if still valid. Zero: renewal at two thirds of its lifetime
	// only. Negative: ErrConfig.
	CertificateMaxAge time.Duration
	// CacheTTL bounds how long a verified server certificate is trusted
	// without re-verifying its quote. Zero: 10 minutes. Negative: no cache.
	// An entry never outlives the certificate or the verdict's ValidUntil,
	// and failures are never cached. The cache belongs to the Client, whose
	// policy and verifier are fixed, so it is keyed by the certificate alone
	// (SHA-256 of its DER); it holds at most 1024 entries. Concurrent
	// handshakes presenting one certificate verify it once, cache or not.
	// Danger: a long TTL delays noticing newly published collateral (a
	// platform whose TCB status was downgraded).
	CacheTTL time.Duration
	// HandshakeTimeout bounds the TCP connect and TLS handshake of Dial,
	// and the attestation checks of handshakes driven by others (TLSConfig,
	// TLSConfigContext, VerifyConnection). Zero: 30 seconds. Negative:
	// ErrConfig.
	HandshakeTimeout time.Duration
	// Logger receives warnings (insecure settings) and renewal failures.
	// Nil: slog.Default().
	Logger *slog.Logger
	// Now is the clock for certificate validity, collateral expiry and the
	// cache. Nil: time.Now. Danger: a clock set back accepts expired
	// certificates and stale collateral.
	Now func() time.Time

	// hooks replaces machine-dependent parts in tests.
	hooks *hooks
}

// Report is what was verified about a peer. Measurements are raw bytes;
// print them with %x.
type Report struct {
	// QuoteVersion is 4 or 5.
	QuoteVersion uint16
	// MRTD measures the TD's initial memory: the dstack OS image.
	MRTD [48]byte
	// RTMR are the runtime measurement registers; RTMR[3] holds the app's
	// runtime events.
	RTMR [4][48]byte
	// ReportData is SHA-512("ratls-cert:" || the peer's public key).
	ReportData [64]byte
	// TDAttributes are the TD's attributes; bit 0 of byte 0 is DEBUG.
	TDAttributes [8]byte
	// Debug is the TD's debug bit (in an accepted report, set only if
	// Policy.AllowDebugMode).
	Debug bool
	// TCBStatus is the platform's TCB status from the verifier's verdict;
	// in an accepted report, one the Policy accepts. Empty with
	// NoopVerifier: the platform was not checked at all.
	TCBStatus tdx.TCBStatus
	// AdvisoryIDs are the Intel security advisories (INTEL-SA-XXXXX) that
	// apply to the platform at its TCB status, from the verdict. An
	// accepted report may have some (SWHardeningNeeded names the
	// advisories the software must mitigate): log or check them. Empty
	// with NoopVerifier.
	AdvisoryIDs []string
	// FMSPC identifies the platform's family and model (upper-case hex,
	// 12 digits), from its PCK certificate. Empty with NoopVerifier.
	FMSPC string
	// App is the app identity, set only when the event log replays to the
	// quote's RTMR3.
	App *ext.AppIdentity
	// SourceOID is the extension the quote came from (empty for a bare
	// quote, see VerifyQuote).
	SourceOID string
	// Simulated is true when the peer presented no quote and AllowSimulator
	// let it through: nothing else in the report is meaningful.
	Simulated bool
	// VerifiedAt is when the quote was verified, by Config.Now. A report
	// served from the cache keeps the time of the verification it reuses.
	VerifiedAt time.Time
	// ValidUntil is when the verification stops holding: the earliest of
	// the certificate's expiry (a bare quote has none), the verdict's
	// ValidUntil (the collateral's expiry) and the end of the cache TTL.
	// Zero: no bound (a bare quote with NoopVerifier and no cache).
	// A connection outliving it stays open; re-verify by reconnecting.
	ValidUntil time.Time
}

// clone returns a deep copy, so that callers cannot alter a cached report.
func (r *Report) clone() *Report {
	c := *r
	c.AdvisoryIDs = append([]string(nil), r.AdvisoryIDs...)
	if r.App != nil {
		app := ext.AppIdentity{
			AppID:       append([]byte(nil), r.App.AppID...),
			ComposeHash: append([]byte(nil), r.App.ComposeHash...),
			InstanceID:  append([]byte(nil), r.App.InstanceID...),
			OSImageHash: append([]byte(nil), r.App.OSImageHash...),
			KeyProvider: append([]byte(nil), r.App.KeyProvider...),
		}
		c.App = &app
	}
	return &c
}

// ServerConfig configures a Server: the server side of RA-TLS, run inside a
// CVM (sidecars, attested gRPC servers). The zero ServerConfig is safe:
// clients are verified as a zero Config verifies servers, and the served
// certificate comes from the local dstack guest agent.
type ServerConfig struct {
	// ClientPolicy says which clients are accepted. The zero Policy
	// accepts any genuine, non-debug TD on an UpToDate or
	// SWHardeningNeeded platform, whatever code it runs: pin MRTDs and
	// ComposeHashes in production.
	ClientPolicy Policy
	// Verifier verifies client quotes. Nil: DCAP as in Config.Verifier.
	// Danger: as for Config.Verifier, a Verifier that does not check
	// quotes (NoopVerifier) lets any client forge its attestation; a
	// warning is logged when the Server is built.
	Verifier Verifier
	// InsecureSkipClientAttestation requires a client certificate but does
	// not verify its attestation (ClientPolicy and Verifier are unused).
	// Danger: any client with a certificate gets in. A warning is logged
	// when the Server is built.
	InsecureSkipClientAttestation bool
	// Certificate, if set, is served instead of one from the guest agent
	// (no agent is contacted, nothing is renewed; Subject and AltNames are
	// unused). Attested clients refuse it unless it carries a quote
	// binding its key. Nil: a certificate from the agent, renewed in the
	// background.
	Certificate *tls.Certificate
	// DstackEndpoint overrides agent discovery, as Config.DstackEndpoint.
	// Empty: DSTACK_SIMULATOR_ENDPOINT, then the standard sockets.
	DstackEndpoint string
	// CertificateMaxAge renews the served certificate once it is this old,
	// even if still valid. Zero: renewal at two thirds of its lifetime
	// only. Negative: ErrConfig.
	CertificateMaxAge time.Duration
	// CacheTTL bounds how long a verified client certificate is trusted
	// without re-verifying its quote, as Config.CacheTTL. Zero: 10
	// minutes. Negative: no cache.
	CacheTTL time.Duration
	// Logger receives warnings (insecure settings) and renewal failures.
	// Nil: slog.Default().
	Logger *slog.Logger
	// Now is the clock, as Config.Now. Nil: time.Now.
	Now func() time.Time
	// Subject is the subject common name asked of the agent for the served
	// certificate. Empty: none is asked for, and the agent's default
	// applies. ratls clients ignore names (trust comes from the quote);
	// only clients that check host names need it, and they must also
	// trust the app's CA.
	Subject string
	// AltNames are the subject alternative names (DNS names, IP addresses)
	// asked of the agent for the served certificate. Empty: none is asked
	// for, and the agent's default applies; as with Subject, only clients
	// that check host names care.
	AltNames []string

	// hooks replaces machine-dependent parts in tests.
	hooks *hooks
}
