// Package ratls makes TLS connections to services in Intel TDX trust domains
// (dstack CVMs) that prove, inside the handshake, what code the server runs.
//
// CONTRACT SKELETON: exported names and signatures below are shared with
// other packages (adapters, ratlstest, cmd). Bodies are being written.
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
type Verifier interface {
	VerifyQuote(ctx context.Context, quote []byte) (*tdx.Verdict, error)
}

// Policy says which attested peers are acceptable. The zero Policy accepts
// any genuine, non-debug TD whose TCB status is UpToDate or
// SWHardeningNeeded, whatever code it runs: pin MRTDs and ComposeHashes in
// production.
type Policy struct {
	// MRTDs is the allowlist of TD measurements (hex, 96 digits, with or
	// without 0x, any case). Empty: any MRTD (a warning is logged once).
	MRTDs []string
	// ComposeHashes pins the app's compose hash (hex, 64 digits), read from
	// the RTMR3 event log. Empty: not checked.
	ComposeHashes []string
	// AppIDs pins the dstack app id (hex, 40 digits). Empty: not checked.
	AppIDs []string
	// AcceptTCBStatuses lists the acceptable TCB statuses. Nil: UpToDate and
	// SWHardeningNeeded. Danger: OutOfDate platforms miss security fixes.
	AcceptTCBStatuses []tdx.TCBStatus
	// AllowDebugMode accepts debug TDs. Danger: a debug TD's memory is open
	// to the host; never in production.
	AllowDebugMode bool
	// AllowSimulator accepts a certificate with no quote at all, without
	// verifying the server. Danger: development only; warned loudly once.
	AllowSimulator bool
}

// Config configures a Client. The zero Config is safe: full DCAP
// verification against Intel's root and PCS, the default Policy, a client
// certificate from the local dstack guest agent.
type Config struct {
	// Policy is applied to every server.
	Policy Policy
	// Verifier verifies quotes. Nil: DCAP with Intel's pinned root and
	// collateral from Intel PCS (dcap.New with zero Options).
	Verifier Verifier
	// ClientCertificate, if set, is presented instead of one from the
	// dstack guest agent (no agent is contacted).
	ClientCertificate *tls.Certificate
	// DstackEndpoint overrides agent discovery (an http URL or a socket
	// path). Empty: DSTACK_SIMULATOR_ENDPOINT, then the standard sockets.
	DstackEndpoint string
	// CertificateMaxAge renews the client certificate once it is this old,
	// even if still valid. Zero: renewal only nears expiry.
	CertificateMaxAge time.Duration
	// CacheTTL bounds how long a verified server certificate is trusted
	// without re-verifying its quote. Zero: 10 minutes. Negative: no cache.
	CacheTTL time.Duration
	// HandshakeTimeout bounds the TCP connect and TLS handshake of Dial.
	// Zero: 30 seconds.
	HandshakeTimeout time.Duration
	// Logger receives warnings (insecure settings) and renewal failures.
	// Nil: slog.Default().
	Logger *slog.Logger
	// Now is the clock. Nil: time.Now.
	Now func() time.Time
}

// Report is what was verified about a peer.
type Report struct {
	QuoteVersion uint16
	MRTD         [48]byte
	RTMR         [4][48]byte
	ReportData   [64]byte
	TDAttributes [8]byte
	Debug        bool
	TCBStatus    tdx.TCBStatus
	AdvisoryIDs  []string
	FMSPC        string
	// App is the app identity, set only when the event log replays to the
	// quote's RTMR3.
	App *ext.AppIdentity
	// SourceOID is the extension the quote came from.
	SourceOID string
	// Simulated is true when the peer presented no quote and AllowSimulator
	// let it through: nothing else in the report is meaningful.
	Simulated bool
	// VerifiedAt is when the quote was verified; ValidUntil when the
	// verification stops holding (collateral, certificate, cache TTL).
	VerifiedAt time.Time
	ValidUntil time.Time
}

// Client dials attested servers. It is safe for concurrent use.
type Client struct{}

// NewClient checks cfg, obtains the client certificate (from the guest agent
// unless cfg.ClientCertificate is set; ErrMissingDstackSocket if none is
// reachable), and starts its renewal.
func NewClient(ctx context.Context, cfg Config) (*Client, error) { panic("unimplemented") }

// TLSConfig returns a client tls.Config for serverName whose
// VerifyConnection hook performs the attestation checks.
func (c *Client) TLSConfig(serverName string) *tls.Config { panic("unimplemented") }

// DialContext connects to addr and completes an attested TLS handshake; the
// ClientHello is the first byte on the wire.
func (c *Client) DialContext(ctx context.Context, network, addr string) (*tls.Conn, error) {
	panic("unimplemented")
}

// Report returns the verified report of a connection made by c.
func (c *Client) Report(conn *tls.Conn) (*Report, bool) { panic("unimplemented") }

// VerifyConnection runs the attestation checks on a completed handshake's
// state. Adapters that drive the handshake themselves (gRPC) call it.
func (c *Client) VerifyConnection(cs tls.ConnectionState) (*Report, error) { panic("unimplemented") }

// Close stops certificate renewal.
func (c *Client) Close() error { panic("unimplemented") }

// ServerConfig configures a Server: the server side of RA-TLS, run inside a
// CVM (sidecars, attested gRPC servers).
type ServerConfig struct {
	// ClientPolicy is applied to clients' attestations.
	ClientPolicy Policy
	// Verifier verifies client quotes. Nil: DCAP as in Config.
	Verifier Verifier
	// InsecureSkipClientAttestation requires a client certificate but does
	// not verify its attestation. Danger: any client with a certificate
	// gets in.
	InsecureSkipClientAttestation bool
	// Certificate, if set, is served instead of one from the guest agent.
	Certificate *tls.Certificate
	// DstackEndpoint, CertificateMaxAge, CacheTTL, Logger, Now: as in Config.
	DstackEndpoint    string
	CertificateMaxAge time.Duration
	CacheTTL          time.Duration
	Logger            *slog.Logger
	Now               func() time.Time
	// Subject and AltNames go into the served certificate.
	Subject  string
	AltNames []string
}

// Server serves RA-TLS. It is safe for concurrent use.
type Server struct{}

// NewServer obtains the server certificate and starts its renewal.
func NewServer(ctx context.Context, cfg ServerConfig) (*Server, error) { panic("unimplemented") }

// TLSConfig returns the server tls.Config.
func (s *Server) TLSConfig() *tls.Config { panic("unimplemented") }

// Report returns the verified report of a client connection (nil, false if
// attestation was skipped or the handshake has not completed).
func (s *Server) Report(conn *tls.Conn) (*Report, bool) { panic("unimplemented") }

// VerifyConnection runs the client attestation checks on a handshake state.
func (s *Server) VerifyConnection(cs tls.ConnectionState) (*Report, error) { panic("unimplemented") }

// Close stops certificate renewal.
func (s *Server) Close() error { panic("unimplemented") }
