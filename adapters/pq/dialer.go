package ratlspq

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/lib/pq"

	"github.com/teesql/ratls"
)

// Dialer implements pq.Dialer and pq.DialerContext with a *ratls.Client:
// every connection it returns has completed an attested TLS handshake, the
// ClientHello being its first byte. NewConnector uses one; use it directly
// only with sslmode=disable in the DSN (pq.DialOpen, pq.NewDialListener),
// or pq would send an SSLRequest inside the attested channel.
type Dialer struct {
	client *ratls.Client
}

var (
	_ pq.Dialer        = (*Dialer)(nil)
	_ pq.DialerContext = (*Dialer)(nil)
)

// NewDialer returns a Dialer that dials with client.
func NewDialer(client *ratls.Client) *Dialer { return &Dialer{client: client} }

// DialContext dials address (host:port; the host is sent as SNI) and
// completes the attested handshake, bounded by ctx and the client's
// HandshakeTimeout.
func (d *Dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, fmt.Errorf("ratlspq: network %q is not supported, only tcp", network)
	}
	tc, err := d.client.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	return tc, nil
}

// Dial is DialContext without a context: the client's HandshakeTimeout
// bounds it.
func (d *Dialer) Dial(network, address string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, address)
}

// DialTimeout is DialContext bounded by timeout.
func (d *Dialer) DialTimeout(network, address string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return d.DialContext(ctx, network, address)
}
