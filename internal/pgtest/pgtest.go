// Package pgtest prepares the local PostgreSQL (127.0.0.1:5432, trust
// authentication; scripts/ensure-postgres.sh) for tests that reach it
// through the RA-TLS sidecar double: the TeeSQL roles, a read-only fixture
// table and a scratch table, created idempotently and safely when several
// test binaries do it at once.
//
// When PostgreSQL is unreachable, tests skip with a message, except under
// CI=true where they fail: CI must never pass by skipping the end-to-end
// tests.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Addr is where the local PostgreSQL listens.
const Addr = "127.0.0.1:5432"

// Database is the database the fixtures live in.
const Database = "test"

// The TeeSQL roles (FORMATS.md 9).
const (
	ReadUser      = "teesql_read"
	ReadWriteUser = "teesql_readwrite"
)

// Secret is a well-formed TeeSQL cluster secret. Trust authentication
// ignores it; the adapters' DSN rules require its shape.
const Secret = "7b3c1f0e9d8a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c"

// Table is the fixture table: ReadUser may SELECT it, nothing more.
const Table = "ratls_adapter_fixture"

// ScratchTable is writable by ReadWriteUser; tests insert rows with values
// of their own and delete them.
const ScratchTable = "ratls_adapter_scratch"

// Row is a row of Table.
type Row struct {
	// ID is the primary key.
	ID int32
	// Name is the row's text value.
	Name string
}

// Rows are the rows of Table, by id.
var Rows = []Row{{1, "alpha"}, {2, "beta"}, {3, "gamma"}}

// Require skips t (fails it under CI=true) when PostgreSQL does not accept
// TCP connections at Addr.
func Require(t testing.TB) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", Addr, 2*time.Second)
	if err == nil {
		conn.Close()
		return
	}
	msg := fmt.Sprintf("PostgreSQL unreachable at %s (%v): run `bash scripts/ensure-postgres.sh`", Addr, err)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

var setupOnce = sync.OnceValue(func() error {
	var err error
	// A role created by someone not taking our lock aborts a run; the next
	// run finds it.
	for range 3 {
		if err = setup(); !errors.Is(err, errRace) {
			return err
		}
	}
	return err
})

var errRace = errors.New("pgtest: role created concurrently")

// Setup is Require followed by the creation (once per test binary) of the
// roles and tables.
func Setup(t testing.TB) {
	t.Helper()
	Require(t)
	if err := setupOnce(); err != nil {
		t.Fatalf("pgtest: preparing PostgreSQL: %v", err)
	}
}

// AdminDSN connects directly (no RA-TLS) as the superuser postgres.
func AdminDSN() string {
	return fmt.Sprintf("postgres://postgres@%s/%s?sslmode=disable", Addr, Database)
}

// Admin opens a direct superuser connection, closed at the end of t.
func Admin(t testing.TB) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, AdminDSN())
	if err != nil {
		t.Fatalf("pgtest: connecting as postgres: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// DSN is a TeeSQL DSN for user at hostPort (the sidecar), with extra
// URL query parameters (e.g. "sslmode=prefer").
func DSN(user, hostPort string, params ...string) string {
	s := fmt.Sprintf("postgres://%s:%s@%s/%s", user, Secret, hostPort, Database)
	if len(params) > 0 {
		s += "?" + strings.Join(params, "&")
	}
	return s
}

// ActiveQueries counts the backends other than the caller's that are running
// a statement containing marker.
func ActiveQueries(ctx context.Context, conn *pgx.Conn, marker string) (int, error) {
	var n int
	err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
		WHERE state = 'active' AND pid <> pg_backend_pid() AND position($1 in query) > 0`, marker).Scan(&n)
	return n, err
}

// advisoryKey serializes set-up across test binaries running at once.
const advisoryKey int64 = 0x7261746c73 // "ratls"

func setup() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, AdminDSN())
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())

	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", advisoryKey); err != nil {
		return err
	}
	defer conn.Exec(context.Background(), "SELECT pg_advisory_unlock($1)", advisoryKey)

	// One transaction: tests in other binaries may be querying as the
	// TeeSQL roles right now, and must never see the grants half-applied.
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		for _, role := range []string{ReadUser, ReadWriteUser} {
			var exists bool
			if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", role).Scan(&exists); err != nil {
				return err
			}
			if exists {
				continue
			}
			// The advisory lock keeps our own binaries apart; a duplicate
			// made by anything else is success too, but aborts the
			// transaction, so the caller's next run finds the role.
			if _, err := tx.Exec(ctx, "CREATE ROLE "+role+" LOGIN"); err != nil {
				var pgErr *pgconn.PgError
				if errors.As(err, &pgErr) && (pgErr.Code == "42710" || pgErr.Code == "23505") {
					return fmt.Errorf("%w: %s: %v", errRace, role, err)
				}
				return fmt.Errorf("creating role %s: %w", role, err)
			}
		}
		stmts := []string{
			"CREATE TABLE IF NOT EXISTS " + Table + " (id integer PRIMARY KEY, name text NOT NULL)",
			"CREATE TABLE IF NOT EXISTS " + ScratchTable + " (id bigint PRIMARY KEY, note text NOT NULL)",
			"REVOKE ALL ON " + Table + ", " + ScratchTable + " FROM " + ReadUser + ", " + ReadWriteUser,
			"GRANT SELECT ON " + Table + " TO " + ReadUser + ", " + ReadWriteUser,
			"GRANT SELECT, INSERT, DELETE ON " + ScratchTable + " TO " + ReadWriteUser,
		}
		for _, s := range stmts {
			if _, err := tx.Exec(ctx, s); err != nil {
				return fmt.Errorf("%s: %w", s, err)
			}
		}
		for _, r := range Rows {
			if _, err := tx.Exec(ctx, "INSERT INTO "+Table+" (id, name) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name", r.ID, r.Name); err != nil {
				return err
			}
		}
		_, err := tx.Exec(ctx, "DELETE FROM "+Table+" WHERE id <> ALL($1)", ids())
		return err
	})
}

func ids() []int32 {
	out := make([]int32, len(Rows))
	for i, r := range Rows {
		out[i] = r.ID
	}
	return out
}
