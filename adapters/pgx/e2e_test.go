package ratlspgx_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	ratlspgx "github.com/teesql/ratls/adapters/pgx"
	"github.com/teesql/ratls/internal/pgtest"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func readRows(t *testing.T, rows pgx.Rows) []pgtest.Row {
	t.Helper()
	var got []pgtest.Row
	for rows.Next() {
		var r pgtest.Row
		require.NoError(t, rows.Scan(&r.ID, &r.Name))
		got = append(got, r)
	}
	require.NoError(t, rows.Err())
	return got
}

func TestQueryThroughSidecar(t *testing.T) {
	t.Parallel()
	env := pgtest.Start(t)
	ctx := testCtx(t)

	conn, err := ratlspgx.Connect(ctx, env.DSN(pgtest.ReadUser), env.Client, nil)
	require.NoError(t, err)
	defer conn.Close(ctx)

	rows, err := conn.Query(ctx, "SELECT id, name FROM "+pgtest.Table+" ORDER BY id")
	require.NoError(t, err)
	assert.Equal(t, pgtest.Rows, readRows(t, rows))

	var user string
	require.NoError(t, conn.QueryRow(ctx, "SELECT current_user").Scan(&user))
	assert.Equal(t, pgtest.ReadUser, user)

	// pgx negotiated no TLS of its own inside the attested channel.
	var pgSSL bool
	require.NoError(t, conn.QueryRow(ctx, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&pgSSL))
	assert.False(t, pgSSL)

	// The role is real: PostgreSQL itself refuses the write.
	_, err = conn.Exec(ctx, "INSERT INTO "+pgtest.Table+" (id, name) VALUES (99, 'intruder')")
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	assert.Equal(t, "42501", pgErr.Code, "insufficient_privilege")

	report, ok := ratlspgx.Report(conn.PgConn())
	require.True(t, ok)
	assert.Equal(t, env.Stack.Agent.TD().MRTDHex(), fmt.Sprintf("%x", report.MRTD))
	assert.False(t, report.Simulated)
	assert.True(t, report.ValidUntil.After(report.VerifiedAt))

	// The connection's RemoteAddr is the name it was dialed by (what the
	// cancel request re-dials), not a resolved address.
	assert.Equal(t, env.Sidecar.Addr(), conn.PgConn().Conn().RemoteAddr().String())
	assert.Positive(t, env.Sidecar.BytesReceived())
}

func TestReadWriteRole(t *testing.T) {
	t.Parallel()
	env := pgtest.Start(t)
	ctx := testCtx(t)
	conn, err := ratlspgx.Connect(ctx, env.DSN(pgtest.ReadWriteUser), env.Client, nil)
	require.NoError(t, err)
	defer conn.Close(ctx)

	id := time.Now().UnixNano()
	_, err = conn.Exec(ctx, "INSERT INTO "+pgtest.ScratchTable+" (id, note) VALUES ($1, 'pgx')", id)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Exec(context.Background(), "DELETE FROM "+pgtest.ScratchTable+" WHERE id = $1", id) })
	var note string
	require.NoError(t, conn.QueryRow(ctx, "SELECT note FROM "+pgtest.ScratchTable+" WHERE id = $1", id).Scan(&note))
	assert.Equal(t, "pgx", note)
}

func TestPoolConcurrentQueries(t *testing.T) {
	t.Parallel()
	env := pgtest.Start(t)
	ctx := testCtx(t)

	pool, err := ratlspgx.NewPool(ctx, env.DSN(pgtest.ReadUser, "pool_max_conns=8"), env.Client, nil)
	require.NoError(t, err)
	defer pool.Close()

	const n = 20
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			id := pgtest.Rows[i%len(pgtest.Rows)].ID
			var name string
			if err := pool.QueryRow(ctx, "SELECT name FROM "+pgtest.Table+" WHERE id = $1", id).Scan(&name); err != nil {
				errs[i] = err
				return
			}
			if want := pgtest.Rows[i%len(pgtest.Rows)].Name; name != want {
				errs[i] = fmt.Errorf("query %d: got %q, want %q", i, name, want)
			}
		})
	}
	wg.Wait()
	require.NoError(t, errors.Join(errs...))

	st := pool.Stat()
	assert.LessOrEqual(t, st.TotalConns(), int32(8))
	assert.Positive(t, st.TotalConns())
	// Every pooled connection was attested through the sidecar.
	assert.GreaterOrEqual(t, env.Sidecar.Stats().Relayed, int64(st.TotalConns()))

	c, err := pool.Acquire(ctx)
	require.NoError(t, err)
	defer c.Release()
	_, ok := ratlspgx.Report(c.Conn().PgConn())
	assert.True(t, ok)
}
