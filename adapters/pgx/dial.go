package ratlspgx

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/teesql/ratls"
)

// dialer is the DialFunc of configurations made by Configure.
type dialer struct {
	client *ratls.Client
	opts   *Options
}

func (d *dialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		// Unix sockets are refused by Configure; this catches a config
		// changed afterwards.
		return nil, fmt.Errorf("ratlspgx: network %q is not supported, only tcp", network)
	}
	tc, err := d.client.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	report, ok := d.client.Report(tc)
	if !ok || report == nil {
		tc.Close()
		return nil, errors.New("ratlspgx: ratls returned a connection without an attestation report")
	}
	now := d.opts.now()
	if !report.ValidUntil.IsZero() && !now.Before(report.ValidUntil) {
		tc.Close()
		return nil, fmt.Errorf("%w: valid until %s, now %s", ErrReportExpired,
			report.ValidUntil.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return &attestedConn{
		Conn:        tc,
		remote:      dialAddr{network: network, addr: addr},
		report:      report,
		established: now,
	}, nil
}

// attestedConn is the connection pgx gets: the attested *tls.Conn, with the
// address it was dialed by as RemoteAddr, so that pgx's cancel request
// (which re-dials RemoteAddr) is sent to the same name with the same SNI.
type attestedConn struct {
	*tls.Conn
	remote      net.Addr
	report      *ratls.Report
	established time.Time
}

func (c *attestedConn) RemoteAddr() net.Addr { return c.remote }

// dialAddr is a host:port as given to the dialer, not resolved.
type dialAddr struct{ network, addr string }

func (a dialAddr) Network() string { return a.network }
func (a dialAddr) String() string  { return a.addr }

// Report returns the attestation report verified when conn's network
// connection was made, or false if conn was not made by a configuration of
// this package. An AfterNetConnect hook that wraps the connection must let
// it be reached through a NetConn() net.Conn method (as *tls.Conn does). For
// a *pgx.Conn, pass conn.PgConn().
func Report(conn *pgconn.PgConn) (*ratls.Report, bool) {
	ac, ok := attested(conn)
	if !ok {
		return nil, false
	}
	return ac.report, true
}

func attested(conn *pgconn.PgConn) (*attestedConn, bool) {
	if conn == nil {
		return nil, false
	}
	c := conn.Conn()
	// Unwrap AfterNetConnect wrappers; bounded, as wrappers are untrusted
	// code that could point at themselves.
	for range 8 {
		switch v := c.(type) {
		case *attestedConn:
			return v, true
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return nil, false
		}
	}
	return nil, false
}
