package ratlspgx

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/teesql/ratls"
)

var errNoReport = errors.New("ratlspgx: pooled connection has no attestation report (was its net.Conn replaced by an AfterNetConnect hook?)")

// ConfigurePool applies Configure to pc.ConnConfig and installs the
// re-verification hooks: a connection whose report has expired, or older
// than opts.MaxConnAge, is destroyed instead of being handed out
// (PrepareConn) or returned to the pool (AfterRelease), so the next
// acquisition attests a fresh connection. Hooks already set in pc
// (PrepareConn, or the deprecated BeforeAcquire; AfterRelease) still run,
// after the check: set them before calling ConfigurePool, not after. A
// positive opts.MaxConnAge caps pc.MaxConnLifetime.
func ConfigurePool(pc *pgxpool.Config, client *ratls.Client, opts *Options) error {
	if err := Configure(&pc.ConnConfig.Config, client, opts); err != nil {
		return err
	}
	if opts != nil && opts.MaxConnAge > 0 && (pc.MaxConnLifetime <= 0 || pc.MaxConnLifetime > opts.MaxConnAge) {
		pc.MaxConnLifetime = opts.MaxConnAge
	}

	prepare, before := pc.PrepareConn, pc.BeforeAcquire
	pc.PrepareConn = func(ctx context.Context, c *pgx.Conn) (bool, error) {
		if c == nil {
			return false, errNoReport
		}
		if _, ok := attested(c.PgConn()); !ok {
			// Retrying would meet the same: fail the acquisition.
			return false, errNoReport
		}
		if Stale(c, opts) {
			// Destroyed; pgxpool retries the acquisition on another
			// connection, dialing (and attesting) a new one if needed.
			return false, nil
		}
		switch {
		case prepare != nil:
			return prepare(ctx, c)
		case before != nil:
			return before(ctx, c), nil
		}
		return true, nil
	}

	release := pc.AfterRelease
	pc.AfterRelease = func(c *pgx.Conn) bool {
		if Stale(c, opts) {
			return false
		}
		if release != nil {
			return release(c)
		}
		return true
	}
	return nil
}

// Stale reports whether a connection made by this package must be replaced
// before further use: its attestation report has reached ValidUntil, or the
// connection is at least opts.MaxConnAge old. A connection this package did
// not make is stale: nothing says it was attested.
func Stale(c *pgx.Conn, opts *Options) bool {
	if c == nil {
		return true
	}
	ac, ok := attested(c.PgConn())
	if !ok {
		return true
	}
	now := opts.now()
	if !ac.report.ValidUntil.IsZero() && !now.Before(ac.report.ValidUntil) {
		return true
	}
	return opts != nil && opts.MaxConnAge > 0 && now.Sub(ac.established) >= opts.MaxConnAge
}
