package ratlspgx_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	ratlspgx "github.com/teesql/ratls/adapters/pgx"
	"github.com/teesql/ratls/internal/pgtest"
)

// A query whose context ends is cancelled on the server by a cancel request
// sent over a new attested connection to the sidecar: the server stops the
// query, and the connection stays usable (cutting it instead would leave the
// query running on the server).
func TestCancelQuery(t *testing.T) {
	t.Parallel()
	env := pgtest.Start(t)
	ctx := testCtx(t)
	admin := pgtest.Admin(t)

	conn, err := ratlspgx.Connect(ctx, env.DSN(pgtest.ReadUser), env.Client, nil)
	require.NoError(t, err)
	defer conn.Close(ctx)
	before := env.Sidecar.Stats()

	marker := fmt.Sprintf("ratlspgx-cancel-%d", time.Now().UnixNano())
	qctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	_, err = conn.Exec(qctx, "SELECT pg_sleep(10) /* "+marker+" */")
	// The server's answer to the cancel request, not a client-side
	// timeout: a cut connection would report the deadline instead.
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	assert.Equal(t, "57014", pgErr.Code, "query_canceled")

	// The server stopped the query.
	require.Eventually(t, func() bool {
		n, err := pgtest.ActiveQueries(ctx, admin, marker)
		return err == nil && n == 0
	}, 5*time.Second, 20*time.Millisecond)

	// The cancel request went through the sidecar, attested.
	after := env.Sidecar.Stats()
	assert.Equal(t, before.Relayed+1, after.Relayed, "one more attested connection: the cancel request")
	assert.Equal(t, before.Rejected, after.Rejected)

	// The connection survived: the server answered the cancel with an
	// error, not a hang-up.
	require.False(t, conn.IsClosed())
	var one int
	require.NoError(t, conn.QueryRow(ctx, "SELECT 1").Scan(&one))
	assert.Equal(t, 1, one)
}
