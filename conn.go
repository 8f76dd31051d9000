package ratls

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
)

// DialContext connects to addr ("host:port") over network ("tcp", "tcp4",
// "tcp6") and completes an attested TLS handshake. The ClientHello is the
// first byte on the wire (no protocol preamble such as PostgreSQL's
// SSLRequest), with the host as SNI unless it is an IP address.
//
// The connect and the handshake, attestation checks included, are bounded
// by Config.HandshakeTimeout (then the error wraps ErrHandshakeTimeout) and
// by ctx. An attestation failure wraps the sentinel of the check that
// failed; the connection is closed without any application data sent.
func (c *Client) DialContext(ctx context.Context, network, addr string) (*tls.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("ratls: dial %s: %w", addr, err)
	}
	hctx, cancel := context.WithTimeoutCause(ctx, c.handshakeTimeout, ErrHandshakeTimeout)
	defer cancel()

	var d net.Dialer
	raw, err := d.DialContext(hctx, network, addr)
	if err != nil {
		return nil, c.dialError(ctx, hctx, addr, err)
	}
	conn := tls.Client(raw, c.tlsConfig(hctx, host))
	if err := conn.HandshakeContext(hctx); err != nil {
		raw.Close()
		return nil, c.dialError(ctx, hctx, addr, err)
	}
	return conn, nil
}

// dialError tells the handshake timeout apart from the caller's own
// cancellation and from the handshake's own failures.
func (c *Client) dialError(ctx, hctx context.Context, addr string, err error) error {
	if ctx.Err() == nil && errors.Is(context.Cause(hctx), ErrHandshakeTimeout) {
		return fmt.Errorf("%w: %s: no attested handshake within %v (%v)%.0w",
			ErrHandshakeTimeout, addr, c.handshakeTimeout, err, context.DeadlineExceeded)
	}
	return fmt.Errorf("ratls: dial %s: %w", addr, err)
}
