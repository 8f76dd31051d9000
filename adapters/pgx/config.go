package ratlspgx

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/teesql/ratls"
	"github.com/teesql/ratls/internal/dsn"
)

// Errors returned before any network I/O. They are the same values as the
// lib/pq adapter's, so one errors.Is check serves both.
var (
	// ErrBadDSN: the DSN does not parse, names a unix socket or no host, or
	// asks for something the attested path cannot do
	// (channel_binding=require).
	ErrBadDSN = dsn.ErrBadDSN
	// ErrBadCredentials: the user or password break the TeeSQL rule (see
	// Options.AllowAnyCredentials).
	ErrBadCredentials = dsn.ErrBadCredentials
)

// ErrReportExpired: a connection's attestation report was already past its
// ValidUntil when the connection was made.
var ErrReportExpired = errors.New("ratlspgx: attestation report already expired")

// defaultCancelGrace bounds how long a query whose context ended waits for
// the server to act on the cancel request.
const defaultCancelGrace = 5 * time.Second

// Options adjusts the configurations built by this package. The zero value
// (or a nil *Options) is the TeeSQL setting.
type Options struct {
	// AllowAnyCredentials turns off the TeeSQL credential rule (user
	// teesql_read or teesql_readwrite, password 64 lower-case hex
	// characters), for RA-TLS PostgreSQL front ends other than the TeeSQL
	// sidecar. Default false: the rule is enforced before any network I/O.
	AllowAnyCredentials bool

	// MaxConnAge makes pools (ParsePoolConfig, ConfigurePool) replace a
	// connection, and so attest the server again, once the connection is
	// this old, even if its report is still valid; it also caps the pool's
	// MaxConnLifetime. Zero: connections are replaced only when their report
	// expires (and by pgx's own MaxConnLifetime).
	MaxConnAge time.Duration

	// CancelGrace is how long a query whose context has ended waits for the
	// server to act on the cancel request before the connection is cut.
	// Zero: 5 seconds.
	CancelGrace time.Duration

	// Now is the clock used to judge expiry. Nil: time.Now.
	Now func() time.Time
}

func (o *Options) now() time.Time {
	if o != nil && o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

// ParseConfig parses a DSN (URL or keyword/value, as pgx.ParseConfig) and
// returns a configuration whose connections are all made by client. It
// performs no network I/O; see Configure for what is checked and changed.
func ParseConfig(connString string, client *ratls.Client, opts *Options) (*pgx.ConnConfig, error) {
	cc, err := pgx.ParseConfig(connString)
	if err != nil {
		return nil, dsn.Malformed(connString, err, func(s string) error { _, err := pgx.ParseConfig(s); return err })
	}
	if err := Configure(&cc.Config, client, opts); err != nil {
		return nil, err
	}
	return cc, nil
}

// ParsePoolConfig is ParseConfig for pgxpool, with the re-verification hooks
// of ConfigurePool. pgxpool's pool_* DSN parameters are honoured.
func ParsePoolConfig(connString string, client *ratls.Client, opts *Options) (*pgxpool.Config, error) {
	pc, err := pgxpool.ParseConfig(connString)
	if err != nil {
		return nil, dsn.Malformed(connString, err, func(s string) error { _, err := pgxpool.ParseConfig(s); return err })
	}
	if err := ConfigurePool(pc, client, opts); err != nil {
		return nil, err
	}
	return pc, nil
}

// Connect is ParseConfig followed by pgx.ConnectConfig.
func Connect(ctx context.Context, connString string, client *ratls.Client, opts *Options) (*pgx.Conn, error) {
	cc, err := ParseConfig(connString, client, opts)
	if err != nil {
		return nil, err
	}
	return pgx.ConnectConfig(ctx, cc)
}

// NewPool is ParsePoolConfig followed by pgxpool.NewWithConfig.
func NewPool(ctx context.Context, connString string, client *ratls.Client, opts *Options) (*pgxpool.Pool, error) {
	pc, err := ParsePoolConfig(connString, client, opts)
	if err != nil {
		return nil, err
	}
	return pgxpool.NewWithConfig(ctx, pc)
}

// Configure makes cfg (made by pgconn.ParseConfig, pgx.ParseConfig or
// pgxpool.ParseConfig: pass &connConfig.Config) dial every connection with
// client. It checks, without network I/O, that every host is a TCP host and,
// unless opts.AllowAnyCredentials, that the credentials follow the TeeSQL
// rule. It then sets DialFunc, LookupFunc and BuildContextWatcherHandler,
// clears TLSConfig, reduces Fallbacks to one plaintext-at-pgx-level (so
// attested) attempt per distinct host and port, and sets SSLCertMode to
// "allow" (ratls always presents its client certificate). Change none of
// these afterwards.
func Configure(cfg *pgconn.Config, client *ratls.Client, opts *Options) error {
	if client == nil {
		return errors.New("ratlspgx: nil *ratls.Client")
	}
	if err := dsn.CheckHost(cfg.Host); err != nil {
		return err
	}
	for _, fb := range cfg.Fallbacks {
		if err := dsn.CheckHost(fb.Host); err != nil {
			return err
		}
	}
	if opts == nil || !opts.AllowAnyCredentials {
		if err := dsn.CheckCredentials(cfg.User, cfg.Password); err != nil {
			return err
		}
	}
	if cfg.ChannelBinding == "require" {
		return fmt.Errorf("%w: channel_binding=require cannot be met: pgx does not see the TLS connection, which ratls owns", ErrBadDSN)
	}

	cfg.TLSConfig = nil
	cfg.Fallbacks = distinctHosts(cfg)
	cfg.SSLCertMode = "allow"
	cfg.ChannelBinding = "disable"

	d := &dialer{client: client, opts: opts}
	cfg.DialFunc = d.dial
	cfg.LookupFunc = passHostThrough

	grace := defaultCancelGrace
	if opts != nil && opts.CancelGrace > 0 {
		grace = opts.CancelGrace
	}
	cfg.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: pc, DeadlineDelay: grace}
	}
	return nil
}

// distinctHosts returns cfg's fallbacks without TLS and without repeats of
// a host and port already tried: the repeats pgx makes for sslmode=prefer
// and allow differ only in TLS, which is now always ratls.
func distinctHosts(cfg *pgconn.Config) []*pgconn.FallbackConfig {
	type hostPort struct {
		host string
		port uint16
	}
	seen := map[hostPort]bool{{cfg.Host, cfg.Port}: true}
	var out []*pgconn.FallbackConfig
	for _, fb := range cfg.Fallbacks {
		k := hostPort{fb.Host, fb.Port}
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, &pgconn.FallbackConfig{Host: fb.Host, Port: fb.Port})
	}
	return out
}

// passHostThrough replaces pgx's resolver so that DialFunc receives the host
// name: the ratls dialer resolves it and sends it as SNI.
func passHostThrough(_ context.Context, host string) ([]string, error) {
	return []string{host}, nil
}
