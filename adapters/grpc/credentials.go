// Package ratlsgrpc provides gRPC transport credentials (grpc-go) for
// attested TLS between services in Intel TDX trust domains.
//
// [NewClientCredentials] wraps a *ratls.Client: the server's quote is
// verified inside the handshake, before gRPC sends its HTTP/2 preface, and a
// server that fails attestation never sees a byte of it. [NewServerCredentials]
// wraps a *ratls.Server, which presents its RA-TLS certificate and verifies
// clients' attestations. Both sides offer and require ALPN "h2", as grpc-go's
// own TLS credentials do; each handshake uses its own copy of the tls.Config.
//
// Handlers read the peer's verified report with [ReportFromContext] (or from
// the [AuthInfo] in peer.FromContext). A connection is attested once, when it
// is made; gRPC keeps connections open for long, so use
// keepalive.ServerParameters.MaxConnectionAge on servers to have clients
// re-attested periodically.
//
// # Errors
//
// ClientHandshake and ServerHandshake return the ratls error itself, so
// errors.Is(err, ratls.ErrMRTDNotAllowed) and the other sentinels hold on
// it. An RPC's error does not carry it: grpc-go ends an RPC whose connection
// failed its handshake with a status error, codes.Unavailable (or
// codes.DeadlineExceeded for a wait-for-ready RPC whose deadline passed),
// made from the handshake error's text alone. errors.Is on an RPC error can
// therefore never match a ratls sentinel, and matching its message text
// would depend on grpc-go's wording; this package offers no such guess.
// Dialing through grpc.WithContextDialer and ratls.Client.DialContext is no
// way round it either: with these credentials gRPC would run a second TLS
// handshake inside the first, and without them it would treat the
// connection as insecure, and its dial errors are flattened the same way.
//
// To learn why a server is refused, repeat the handshake outside gRPC:
// ratls.Client.DialContext to the same address (or these credentials'
// ClientHandshake on a net.Conn) returns the error with its sentinel; see
// the attestation failure example. A refused server never receives a byte
// of HTTP/2, either way.
package ratlsgrpc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/teesql/ratls"
)

// alpnH2 is the only protocol gRPC speaks over TLS.
const alpnH2 = "h2"

// serverHandshakeTimeout caps a server handshake. grpc.Server also sets its
// ConnectionTimeout (120 s by default) as a deadline on the connection;
// whichever is earlier applies.
const serverHandshakeTimeout = 30 * time.Second

// ErrALPN: the handshake completed without negotiating ALPN "h2"; the peer
// is not a gRPC endpoint over TLS.
var ErrALPN = errors.New("ratlsgrpc: peer did not negotiate ALPN h2")

// AuthInfo is the credentials.AuthInfo of an attested connection, found in
// peer.FromContext(ctx).AuthInfo.
type AuthInfo struct {
	credentials.CommonAuthInfo
	// State is the connection's TLS state.
	State tls.ConnectionState
	// Report is what was verified about the peer: the server's attestation on
	// a client; on a server, the client's, or nil if the server's
	// InsecureSkipClientAttestation is set.
	Report *ratls.Report
}

// AuthType returns "ratls".
func (AuthInfo) AuthType() string { return "ratls" }

// ReportFromContext returns the peer's verified report in a gRPC handler (or
// in a client's call context populated with grpc.Peer). It is false when the
// connection was not made by this package's credentials or the peer was not
// attested.
func ReportFromContext(ctx context.Context) (*ratls.Report, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok || p == nil {
		return nil, false
	}
	var ai AuthInfo
	switch v := p.AuthInfo.(type) {
	case AuthInfo:
		ai = v
	case *AuthInfo:
		if v == nil {
			return nil, false
		}
		ai = *v
	default:
		return nil, false
	}
	return ai.Report, ai.Report != nil
}

// creds implements credentials.TransportCredentials for one side.
type creds struct {
	client     *ratls.Client // client side
	server     *ratls.Server // server side
	serverName string        // OverrideServerName; empty: from the authority
}

// NewClientCredentials returns client transport credentials (for
// grpc.WithTransportCredentials) that dial attested servers with client. The
// SNI is the host of the target's authority, or the name given to
// OverrideServerName.
func NewClientCredentials(client *ratls.Client) credentials.TransportCredentials {
	return &creds{client: client}
}

// NewServerCredentials returns server transport credentials (for grpc.Creds)
// that serve server's RA-TLS certificate and verify clients as server is
// configured to.
func NewServerCredentials(server *ratls.Server) credentials.TransportCredentials {
	return &creds{server: server}
}

// ClientHandshake runs the attested handshake on rawConn, bounded by ctx
// (gRPC's dial context). The attestation checks inside it, quote
// verification and collateral fetches included, are bounded by ctx too, and
// by the ratls client's HandshakeTimeout: a ctx that ends during them stops
// them, and ClientHandshake returns at once.
func (c *creds) ClientHandshake(ctx context.Context, authority string, rawConn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	if c.client == nil {
		return nil, nil, errors.New("ratlsgrpc: server credentials used to dial")
	}
	serverName := c.serverName
	if serverName == "" {
		serverName = authority
		if host, _, err := net.SplitHostPort(authority); err == nil {
			serverName = host
		}
	}
	cfg := c.client.TLSConfigContext(ctx, serverName)
	cfg.NextProtos = []string{alpnH2}

	conn := tls.Client(rawConn, cfg)
	cs, err := handshakeH2(ctx, conn)
	if err != nil {
		return nil, nil, err
	}
	report, ok := c.client.Report(conn)
	if !ok {
		if report, err = c.client.VerifyConnection(cs); err != nil {
			conn.Close()
			return nil, nil, err
		}
	}
	return wrapConn(rawConn, conn), authInfo(cs, report), nil
}

// ServerHandshake runs the server side of the handshake on rawConn, bounded
// by the deadline grpc.Server sets on it and by 30 seconds.
func (c *creds) ServerHandshake(rawConn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	if c.server == nil {
		return nil, nil, errors.New("ratlsgrpc: client credentials used to serve")
	}
	conn := tls.Server(rawConn, withH2(c.server.TLSConfig()))
	ctx, cancel := context.WithTimeout(context.Background(), serverHandshakeTimeout)
	defer cancel()
	cs, err := handshakeH2(ctx, conn)
	if err != nil {
		return nil, nil, err
	}
	// The handshake's VerifyConnection hook has applied the client policy;
	// no report means attestation was skipped by configuration.
	report, _ := c.server.Report(conn)
	return wrapConn(rawConn, conn), authInfo(cs, report), nil
}

// handshakeH2 runs conn's handshake and requires ALPN h2; on failure conn
// is closed.
func handshakeH2(ctx context.Context, conn *tls.Conn) (tls.ConnectionState, error) {
	if err := conn.HandshakeContext(ctx); err != nil {
		conn.Close()
		return tls.ConnectionState{}, err
	}
	cs := conn.ConnectionState()
	if cs.NegotiatedProtocol != alpnH2 {
		conn.Close()
		return tls.ConnectionState{}, fmt.Errorf("%w: negotiated %q", ErrALPN, cs.NegotiatedProtocol)
	}
	return cs, nil
}

// withH2 returns a copy of cfg that offers h2, also from configs returned by
// GetConfigForClient (which would otherwise replace the copy's NextProtos).
func withH2(cfg *tls.Config) *tls.Config {
	cfg = cfg.Clone()
	if !slices.Contains(cfg.NextProtos, alpnH2) {
		cfg.NextProtos = append([]string{alpnH2}, cfg.NextProtos...)
	}
	if get := cfg.GetConfigForClient; get != nil {
		cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			inner, err := get(hello)
			if err != nil || inner == nil {
				return inner, err
			}
			inner = inner.Clone()
			inner.GetConfigForClient = nil
			if !slices.Contains(inner.NextProtos, alpnH2) {
				inner.NextProtos = append([]string{alpnH2}, inner.NextProtos...)
			}
			return inner, nil
		}
	}
	return cfg
}

func authInfo(cs tls.ConnectionState, report *ratls.Report) AuthInfo {
	return AuthInfo{
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity},
		State:          cs,
		Report:         report,
	}
}

// Info describes the credentials. SecurityVersion is the lowest TLS version
// they accept ("1.2": handshakes negotiate 1.3 whenever the peer offers
// it); the version of a connection is AuthInfo.State.Version. ServerName is
// the OverrideServerName value.
func (c *creds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{
		SecurityProtocol: "tls",
		SecurityVersion:  c.minVersion(),
		ServerName:       c.serverName,
	}
}

// minVersion reads the lowest accepted version from the ratls side's own
// configuration, so that Info cannot claim more than handshakes enforce.
func (c *creds) minVersion() string {
	var v uint16
	switch {
	case c.client != nil:
		v = c.client.TLSConfig("").MinVersion
	case c.server != nil:
		v = c.server.TLSConfig().MinVersion
	}
	if v == 0 {
		v = tls.VersionTLS12 // crypto/tls's default minimum
	}
	return strings.TrimPrefix(tls.VersionName(v), "TLS ")
}

// Clone returns an independent copy; the ratls client or server is shared.
func (c *creds) Clone() credentials.TransportCredentials {
	cp := *c
	return &cp
}

// OverrideServerName sets the SNI (and, through Info, the default
// :authority) used by client handshakes.
//
// Deprecated: use grpc.WithAuthority, as grpc-go recommends.
func (c *creds) OverrideServerName(name string) error {
	c.serverName = name
	return nil
}

// wrapConn keeps the raw connection's syscall.Conn visible through the TLS
// connection: grpc-go uses it to set TCP_USER_TIMEOUT for keepalives.
func wrapConn(rawConn net.Conn, conn *tls.Conn) net.Conn {
	if sc, ok := rawConn.(syscall.Conn); ok {
		return &syscallConn{Conn: conn, sc: sc}
	}
	return conn
}

type syscallConn struct {
	*tls.Conn
	sc syscall.Conn
}

// SyscallConn returns the raw connection's syscall.RawConn.
func (c *syscallConn) SyscallConn() (syscall.RawConn, error) { return c.sc.SyscallConn() }
