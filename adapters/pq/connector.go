// Package ratlspq connects database/sql through lib/pq
// (github.com/lib/pq) to PostgreSQL front ends in Intel TDX trust domains,
// such as the TeeSQL sidecar, over attested TLS.
//
// [NewConnector] returns a driver.Connector for sql.OpenDB whose every
// connection, including cancel requests and every host of a multi-host DSN,
// is dialed by a *ratls.Client: TLS starts with a raw ClientHello as the
// first byte, the server's quote is verified inside the handshake, and only
// then does pq write its StartupMessage. pq's own TLS is switched off
// (sslmode=disable at the pq level, whatever the DSN says), so pq never sends
// an SSLRequest and never falls back to plaintext: sslmode=prefer and allow,
// which make pq retry a host with and without TLS, have no effect.
//
// Cancel requests: when a query's context ends, pq dials the same host with
// the connector's dialer and the connection's configuration, so the cancel
// request is attested too.
//
// Before any network I/O, the DSN must parse ([ErrBadDSN] otherwise), name
// TCP hosts without hostaddr (the attested dialer sends the name it dials as
// SNI), and, unless [Options.AllowAnyCredentials] is set, follow the TeeSQL
// sidecar's rule ([ErrBadCredentials] otherwise): user teesql_read or
// teesql_readwrite, password exactly 64 lower-case hex characters. Error
// messages never contain the password.
//
// Connections are attested once, when they are made. database/sql does not
// let a driver's caller see each connection's report, so bound how long a
// connection lives with sql.DB.SetConnMaxLifetime (for instance to the ratls
// client's CacheTTL) to have servers attested again.
package ratlspq

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"net/netip"

	"github.com/lib/pq"

	"github.com/teesql/ratls"
	"github.com/teesql/ratls/internal/dsn"
)

// Errors returned before any network I/O; the same values as the pgx
// adapter's.
var (
	// ErrBadDSN: the DSN does not parse, or names a unix socket, no host, or
	// a hostaddr.
	ErrBadDSN = dsn.ErrBadDSN
	// ErrBadCredentials: the user or password break the TeeSQL rule (see
	// Options.AllowAnyCredentials).
	ErrBadCredentials = dsn.ErrBadCredentials
)

// Options adjusts NewConnector. The zero value (or a nil *Options) is the
// TeeSQL setting.
type Options struct {
	// AllowAnyCredentials turns off the TeeSQL credential rule (user
	// teesql_read or teesql_readwrite, password 64 lower-case hex
	// characters), for RA-TLS PostgreSQL front ends other than the TeeSQL
	// sidecar. Default false: the rule is enforced before any network I/O.
	AllowAnyCredentials bool
}

// Connector is a driver.Connector whose connections are all made by a
// *ratls.Client. It is safe for concurrent use.
type Connector struct {
	pq *pq.Connector
}

var _ driver.Connector = (*Connector)(nil)

// NewConnector parses a DSN (URL or keyword/value, as lib/pq; environment
// variables apply) and returns a connector for sql.OpenDB. It performs no
// network I/O. The caller keeps ownership of client and closes it after the
// sql.DB.
func NewConnector(connString string, client *ratls.Client, opts *Options) (*Connector, error) {
	if client == nil {
		return nil, errors.New("ratlspq: nil *ratls.Client")
	}
	cfg, err := pq.NewConfig(connString)
	if err != nil {
		return nil, dsn.Malformed(connString, err, func(s string) error { _, err := pq.NewConfig(s); return err })
	}
	if err := checkHosts(cfg); err != nil {
		return nil, err
	}
	if opts == nil || !opts.AllowAnyCredentials {
		if err := dsn.CheckCredentials(cfg.User, cfg.Password); err != nil {
			return nil, err
		}
	}

	// ratls does TLS below pq: pq must neither negotiate TLS (an SSLRequest
	// inside the attested channel would confuse the server) nor ever retry
	// without it.
	cfg.SSLMode = pq.SSLModeDisable
	cfg.SSLNegotiation = pq.SSLNegotiationPostgres

	c, err := pq.NewConnectorConfig(cfg)
	if err != nil {
		return nil, dsn.Malformed(connString, err, nil)
	}
	c.Dialer(NewDialer(client))
	return &Connector{pq: c}, nil
}

// Connect dials an attested connection and starts a PostgreSQL session on it.
// An attestation failure matches the ratls sentinel with errors.Is.
func (c *Connector) Connect(ctx context.Context) (driver.Conn, error) {
	return c.pq.Connect(ctx)
}

// Driver returns lib/pq's driver.
func (c *Connector) Driver() driver.Driver { return c.pq.Driver() }

func checkHosts(cfg pq.Config) error {
	type host struct {
		name string
		addr netip.Addr
	}
	hosts := []host{{cfg.Host, cfg.Hostaddr}}
	for _, m := range cfg.Multi {
		hosts = append(hosts, host{m.Host, m.Hostaddr})
	}
	for _, h := range hosts {
		if h.addr.IsValid() {
			return fmt.Errorf("%w: hostaddr %s is not supported: the attested dialer sends the address it dials as SNI; put the address in host instead", ErrBadDSN, h.addr)
		}
		if err := dsn.CheckHost(h.name); err != nil {
			return err
		}
	}
	return nil
}
