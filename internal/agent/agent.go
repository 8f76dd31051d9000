// Package agent obtains RA-TLS certificates from the dstack guest agent
// through the official Go SDK, after finding the agent itself: the SDK
// silently falls back to a socket that may not exist, which would turn "not
// in a CVM" into a confusing connection error at the first handshake.
package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/Dstack-TEE/dstack/sdk/go/dstack"
)

// EnvSimulatorEndpoint names the environment variable that points at a
// dstack simulator (an http URL or a socket path).
const EnvSimulatorEndpoint = "DSTACK_SIMULATOR_ENDPOINT"

// DefaultTimeout bounds one agent call when New is given none. The SDK's
// HTTP client has no timeout of its own.
const DefaultTimeout = 10 * time.Second

// ErrNoEndpoint: no agent endpoint could be found. Discover returns it
// as a *NoEndpointError.
var ErrNoEndpoint = errors.New("agent: no dstack guest agent endpoint")

// NoEndpointError says why no agent endpoint was found.
type NoEndpointError struct {
	// Reason says what was looked for and not found.
	Reason string
}

// Error returns ErrNoEndpoint's text and the reason.
func (e *NoEndpointError) Error() string { return ErrNoEndpoint.Error() + ": " + e.Reason }

// Is makes errors.Is(err, ErrNoEndpoint) hold.
func (e *NoEndpointError) Is(target error) bool { return target == ErrNoEndpoint }

// DefaultSockets returns the paths where the guest agent listens, in the
// order they are searched: the legacy paths first, as the SDK does.
func DefaultSockets() []string {
	return []string{
		"/var/run/dstack.sock",
		"/run/dstack.sock",
		"/var/run/dstack/dstack.sock",
		"/run/dstack/dstack.sock",
	}
}

// ProbeTimeout bounds the connection attempt Discover makes to each
// standard socket.
const ProbeTimeout = time.Second

// Discover returns the agent endpoint: endpoint if set, else the value of
// DSTACK_SIMULATOR_ENDPOINT (read with getenv), else the first of sockets
// that is a socket accepting connections. A socket file left behind by an
// agent that is gone refuses connections: it is skipped, so that a later
// path with a live agent is found and "no agent" is reported as such rather
// than as a failed request. Each probe is bounded by ctx and ProbeTimeout;
// a socket that does not answer in time (an overloaded agent) is used.
//
// An explicit endpoint (argument or environment) is not dialled, since
// there is no other to fall back to, but a socket path must exist and be a
// socket: the first request tells whether something listens there (see
// Unreachable).
func Discover(ctx context.Context, endpoint string, getenv func(string) string, sockets []string) (string, error) {
	if endpoint != "" {
		return checkEndpoint(endpoint, "configured endpoint")
	}
	if getenv != nil {
		if env := getenv(EnvSimulatorEndpoint); env != "" {
			return checkEndpoint(env, EnvSimulatorEndpoint)
		}
	}
	var stale []string
	for _, p := range sockets {
		if !isSocket(p) {
			continue
		}
		if probe(ctx, p) {
			return p, nil
		}
		stale = append(stale, p)
	}
	reason := fmt.Sprintf("%s is unset and none of %s is a socket", EnvSimulatorEndpoint, strings.Join(sockets, ", "))
	if len(stale) > 0 {
		reason = fmt.Sprintf("%s is unset and none of %s is a socket that accepts connections; %s refused them (stale socket files left by a stopped agent?)",
			EnvSimulatorEndpoint, strings.Join(sockets, ", "), strings.Join(stale, ", "))
	}
	return "", &NoEndpointError{Reason: reason}
}

// probe reports whether the socket at path may have an agent behind it:
// false only when nothing listens there.
func probe(ctx context.Context, path string) bool {
	d := net.Dialer{Timeout: ProbeTimeout}
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return !Unreachable(err)
	}
	c.Close()
	return true
}

// Unreachable reports whether err comes from connecting to an endpoint
// where nothing listens: a socket path that does not exist or that no
// process accepts on, or a TCP port that refuses connections. Other
// failures (timeouts, permissions, HTTP errors) are not: something may be
// there.
func Unreachable(err error) bool {
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "dial" {
		return false
	}
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT)
}

// checkEndpoint returns endpoint if it is a URL or an existing socket.
func checkEndpoint(endpoint, source string) (string, error) {
	if isURL(endpoint) || isSocket(endpoint) {
		return endpoint, nil
	}
	return "", &NoEndpointError{Reason: fmt.Sprintf("%s %q is neither an http(s) URL nor an existing socket", source, endpoint)}
}

func isURL(s string) bool {
	return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://")
}

func isSocket(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode()&os.ModeSocket != 0
}

// Client talks to one agent endpoint. It is safe for concurrent use.
type Client struct {
	sdk      *dstack.DstackClient
	endpoint string
	timeout  time.Duration
}

// New returns a Client for endpoint (from Discover). Each call is bounded
// by timeout (zero: DefaultTimeout).
func New(endpoint string, timeout time.Duration, logger *slog.Logger) *Client {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	if logger == nil {
		logger = slog.Default()
	}
	return &Client{
		sdk:      dstack.NewDstackClient(dstack.WithEndpoint(endpoint), dstack.WithLogger(logger)),
		endpoint: endpoint,
		timeout:  timeout,
	}
}

// Request says what certificate to ask for. The agent always makes it an
// RA-TLS certificate: its key is new and the quote binds it.
type Request struct {
	// Subject and AltNames go into the certificate (empty: the agent's
	// defaults).
	Subject  string
	AltNames []string
	// ServerAuth and ClientAuth set the extended key usages.
	ServerAuth bool
	ClientAuth bool
}

// Certificate asks the agent for a new RA-TLS key and certificate.
func (c *Client) Certificate(ctx context.Context, req Request) (*tls.Certificate, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	opts := []dstack.TlsKeyOption{
		dstack.WithUsageRaTls(true),
		dstack.WithUsageServerAuth(req.ServerAuth),
		dstack.WithUsageClientAuth(req.ClientAuth),
	}
	if req.Subject != "" {
		opts = append(opts, dstack.WithSubject(req.Subject))
	}
	if len(req.AltNames) > 0 {
		opts = append(opts, dstack.WithAltNames(req.AltNames))
	}
	resp, err := c.sdk.GetTlsKey(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("agent: GetTlsKey at %s: %w", c.endpoint, err)
	}
	cert, err := parse(resp)
	if err != nil {
		return nil, fmt.Errorf("agent: GetTlsKey at %s: %w", c.endpoint, err)
	}
	return cert, nil
}

// parse turns the agent's answer (a PKCS#8 PEM key and a PEM chain, leaf
// first) into a tls.Certificate, checking that the key matches the leaf.
func parse(resp *dstack.GetTlsKeyResponse) (*tls.Certificate, error) {
	if len(resp.CertificateChain) == 0 {
		return nil, errors.New("response has no certificate chain")
	}
	var chain strings.Builder
	for _, p := range resp.CertificateChain {
		chain.WriteString(p)
		chain.WriteString("\n")
	}
	cert, err := tls.X509KeyPair([]byte(chain.String()), []byte(resp.Key))
	if err != nil {
		return nil, fmt.Errorf("response key and certificate: %w", err)
	}
	return &cert, nil
}
