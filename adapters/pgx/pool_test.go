package ratlspgx_test

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/teesql/ratls"
	ratlspgx "github.com/teesql/ratls/adapters/pgx"
	"github.com/teesql/ratls/internal/pgtest"
)

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// clockedClient is a client of env's stack whose clock (and so its reports'
// VerifiedAt and ValidUntil) is clk.
func clockedClient(t *testing.T, env *pgtest.Env, clk *clock, ttl time.Duration) *ratls.Client {
	cfg := env.Stack.Config
	cfg.Now = clk.Now
	cfg.CacheTTL = ttl
	client, err := ratls.NewClient(testCtx(t), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { client.Close() })
	return client
}

type pooled struct {
	pid    uint32
	report *ratls.Report
}

func acquire(t *testing.T, pool *pgxpool.Pool) pooled {
	t.Helper()
	c, err := pool.Acquire(testCtx(t))
	require.NoError(t, err)
	defer c.Release()
	r, ok := ratlspgx.Report(c.Conn().PgConn())
	require.True(t, ok)
	return pooled{c.Conn().PgConn().PID(), r}
}

// A pooled connection whose report has expired is replaced by a freshly
// attested one before it is handed out again.
func TestPoolReplacesExpiredReports(t *testing.T) {
	t.Parallel()
	env := pgtest.Start(t)
	clk := &clock{now: time.Now()}
	client := clockedClient(t, env, clk, time.Minute)

	pool, err := ratlspgx.NewPool(testCtx(t), env.DSN(pgtest.ReadUser, "pool_max_conns=1"), client, &ratlspgx.Options{Now: clk.Now})
	require.NoError(t, err)
	defer pool.Close()

	first := acquire(t, pool)
	assert.Equal(t, first.pid, acquire(t, pool).pid, "a valid connection is reused")
	relayed := env.Sidecar.Stats().Relayed

	clk.Advance(time.Until(first.report.ValidUntil) + time.Second)
	second := acquire(t, pool)
	assert.NotEqual(t, first.pid, second.pid, "the expired connection must be replaced")
	assert.True(t, second.report.VerifiedAt.After(first.report.VerifiedAt), "the server was verified again")
	assert.True(t, second.report.ValidUntil.After(clk.Now()))
	assert.Equal(t, relayed+1, env.Sidecar.Stats().Relayed)
}

// MaxConnAge replaces connections by age, even with a valid report.
func TestPoolMaxConnAge(t *testing.T) {
	t.Parallel()
	env := pgtest.Start(t)
	clk := &clock{now: time.Now()}
	client := clockedClient(t, env, clk, time.Hour)
	opts := &ratlspgx.Options{Now: clk.Now, MaxConnAge: 10 * time.Minute}

	pool, err := ratlspgx.NewPool(testCtx(t), env.DSN(pgtest.ReadUser, "pool_max_conns=1"), client, opts)
	require.NoError(t, err)
	defer pool.Close()

	first := acquire(t, pool)
	clk.Advance(9 * time.Minute)
	assert.Equal(t, first.pid, acquire(t, pool).pid)

	c, err := pool.Acquire(testCtx(t))
	require.NoError(t, err)
	assert.False(t, ratlspgx.Stale(c.Conn(), opts))
	clk.Advance(time.Minute)
	assert.True(t, ratlspgx.Stale(c.Conn(), opts))
	c.Release()

	assert.NotEqual(t, first.pid, acquire(t, pool).pid)
}

// A report already expired when the connection is made is refused, rather
// than handed to a pool that would discard it again and again.
func TestDialRefusesExpiredReport(t *testing.T) {
	t.Parallel()
	env := pgtest.Start(t)
	ahead := func() time.Time { return time.Now().Add(24 * time.Hour) }
	_, err := ratlspgx.Connect(testCtx(t), env.DSN(pgtest.ReadUser), env.Client, &ratlspgx.Options{Now: ahead})
	require.ErrorIs(t, err, ratlspgx.ErrReportExpired)
}

func TestStaleForeignConnection(t *testing.T) {
	t.Parallel()
	assert.True(t, ratlspgx.Stale(nil, nil))
	_, ok := ratlspgx.Report(nil)
	assert.False(t, ok)
}

type hidingConn struct{ net.Conn }

type unwrappableConn struct{ net.Conn }

func (c unwrappableConn) NetConn() net.Conn { return c.Conn }

// An AfterNetConnect hook may wrap the attested connection; the report is
// still found through NetConn, and a pool refuses a connection whose report
// cannot be found rather than retrying forever.
func TestAfterNetConnectWrappers(t *testing.T) {
	t.Parallel()
	env := pgtest.Start(t)
	ctx := testCtx(t)
	for _, tc := range []struct {
		name   string
		wrap   func(net.Conn) net.Conn
		report bool
	}{
		{"unwrappable", func(c net.Conn) net.Conn { return unwrappableConn{c} }, true},
		{"hiding", func(c net.Conn) net.Conn { return hidingConn{c} }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pc, err := ratlspgx.ParsePoolConfig(env.DSN(pgtest.ReadUser), env.Client, nil)
			require.NoError(t, err)
			pc.ConnConfig.AfterNetConnect = func(_ context.Context, _ *pgconn.Config, c net.Conn) (net.Conn, error) {
				return tc.wrap(c), nil
			}
			pool, err := pgxpool.NewWithConfig(ctx, pc)
			require.NoError(t, err)
			defer pool.Close()
			c, err := pool.Acquire(ctx)
			if !tc.report {
				require.ErrorContains(t, err, "no attestation report")
				return
			}
			require.NoError(t, err)
			defer c.Release()
			_, ok := ratlspgx.Report(c.Conn().PgConn())
			assert.True(t, ok)
		})
	}
}
