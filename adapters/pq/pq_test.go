package ratlspq_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	ratlspgx "github.com/teesql/ratls/adapters/pgx"
	ratlspq "github.com/teesql/ratls/adapters/pq"
	"github.com/teesql/ratls/internal/pgtest"
)

const secret = pgtest.Secret

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func openDB(t *testing.T, env *pgtest.Env, user string, params ...string) *sql.DB {
	t.Helper()
	c, err := ratlspq.NewConnector(env.DSN(user, params...), env.Client, nil)
	require.NoError(t, err)
	db := sql.OpenDB(c)
	t.Cleanup(func() { db.Close() })
	return db
}

func TestBadDSNRefusedBeforeAnyConnection(t *testing.T) {
	t.Parallel()
	_, client := pgtest.Stack(t)
	rec := pgtest.NewRecorder(t)
	host, port, _ := strings.Cut(rec.Addr(), ":")

	tests := []struct {
		name, dsn string
		want      error
		opts      *ratlspq.Options
	}{
		{"unparsable URL", "postgres://teesql_read:" + secret + "@" + rec.Addr() + ":x:y/test", ratlspq.ErrBadDSN, nil},
		{"unterminated quote", "host=" + host + " port=" + port + " user=teesql_read password='" + secret, ratlspq.ErrBadDSN, nil},
		{"unix socket", "host=/var/run/postgresql user=teesql_read password=" + secret, ratlspq.ErrBadDSN, nil},
		{"abstract socket", "host=@pg user=teesql_read password=" + secret, ratlspq.ErrBadDSN, nil},
		{"hostaddr", "host=db.example hostaddr=" + host + " port=" + port + " user=teesql_read password=" + secret, ratlspq.ErrBadDSN, nil},
		{"other user", "host=" + host + " port=" + port + " user=postgres password=" + secret, ratlspq.ErrBadCredentials, nil},
		{"no password", "host=" + host + " port=" + port + " user=teesql_read", ratlspq.ErrBadCredentials, nil},
		{"upper-case password", "host=" + host + " port=" + port + " user=teesql_read password=" + strings.ToUpper(secret), ratlspq.ErrBadCredentials, nil},
		{"long password", "postgres://teesql_readwrite:" + secret + "0@" + rec.Addr() + "/test", ratlspq.ErrBadCredentials, nil},
		{"second host a socket", "host=" + host + ",/tmp port=" + port + " user=teesql_read password=" + secret, ratlspq.ErrBadDSN, nil},
		{"socket with any credentials", "host=/tmp user=postgres", ratlspq.ErrBadDSN, &ratlspq.Options{AllowAnyCredentials: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ratlspq.NewConnector(tt.dsn, client, tt.opts)
			require.ErrorIs(t, err, tt.want)
			require.Nil(t, c)
			assert.True(t, strings.HasPrefix(err.Error(), "ratls"), err.Error())
			assert.NotContains(t, strings.ToLower(err.Error()), secret[:16])
		})
	}
	assert.Empty(t, rec.Settle(t), "a refused DSN must not cause any connection")
	// The same sentinels as the pgx adapter's.
	assert.Equal(t, ratlspgx.ErrBadDSN, ratlspq.ErrBadDSN)
	assert.Equal(t, ratlspgx.ErrBadCredentials, ratlspq.ErrBadCredentials)
}

func TestAllowAnyCredentials(t *testing.T) {
	t.Parallel()
	_, client := pgtest.Stack(t)
	dsn := "postgres://app:hunter2hunter2@db.example:5433/app"
	_, err := ratlspq.NewConnector(dsn, client, nil)
	require.ErrorIs(t, err, ratlspq.ErrBadCredentials)
	assert.NotContains(t, err.Error(), "hunter2")
	c, err := ratlspq.NewConnector(dsn, client, &ratlspq.Options{AllowAnyCredentials: true})
	require.NoError(t, err)
	require.NotNil(t, c.Driver())
	_, err = ratlspq.NewConnector(dsn, nil, nil)
	require.Error(t, err)
}

// Whatever sslmode says, pq's first bytes are a TLS ClientHello, and a
// failed attempt is not retried without TLS.
func TestNoPlaintextWhateverSSLMode(t *testing.T) {
	t.Parallel()
	_, client := pgtest.Stack(t)
	for _, mode := range []string{"disable", "allow", "prefer", "require", "verify-full", ""} {
		t.Run("sslmode="+mode, func(t *testing.T) {
			t.Parallel()
			rec := pgtest.NewRecorder(t)
			var params []string
			if mode != "" {
				params = append(params, "sslmode="+mode)
			}
			c, err := ratlspq.NewConnector(pgtest.DSN(pgtest.ReadUser, rec.Addr(), params...), client, nil)
			require.NoError(t, err)
			_, err = c.Connect(testCtx(t))
			require.Error(t, err)

			conns := rec.Settle(t)
			require.Len(t, conns, 1, "exactly one attempt: no fallback")
			assert.True(t, pgtest.IsClientHello(conns[0]), "first bytes % x are not a TLS ClientHello", conns[0])
			assert.NotEqual(t, pgtest.SSLRequest, conns[0])
			assert.False(t, pgtest.IsStartupMessage(conns[0]))
		})
	}
}

func TestQueryThroughSidecar(t *testing.T) {
	t.Parallel()
	env := pgtest.Start(t)
	ctx := testCtx(t)
	db := openDB(t, env, pgtest.ReadUser, "sslmode=prefer")

	rows, err := db.QueryContext(ctx, "SELECT id, name FROM "+pgtest.Table+" ORDER BY id")
	require.NoError(t, err)
	var got []pgtest.Row
	for rows.Next() {
		var r pgtest.Row
		require.NoError(t, rows.Scan(&r.ID, &r.Name))
		got = append(got, r)
	}
	require.NoError(t, rows.Err())
	require.NoError(t, rows.Close())
	assert.Equal(t, pgtest.Rows, got)

	var user string
	require.NoError(t, db.QueryRowContext(ctx, "SELECT current_user").Scan(&user))
	assert.Equal(t, pgtest.ReadUser, user)

	// pq negotiated no TLS of its own inside the attested channel (no
	// SSLRequest through the sidecar): PostgreSQL sees a plain session.
	var pgSSL bool
	require.NoError(t, db.QueryRowContext(ctx, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&pgSSL))
	assert.False(t, pgSSL)

	_, err = db.ExecContext(ctx, "INSERT INTO "+pgtest.Table+" (id, name) VALUES (99, 'intruder')")
	var pqErr *pq.Error
	require.ErrorAs(t, err, &pqErr)
	assert.EqualValues(t, "42501", pqErr.Code, "insufficient_privilege")
}

func TestConcurrentQueriesAndWrites(t *testing.T) {
	t.Parallel()
	env := pgtest.Start(t)
	ctx := testCtx(t)
	db := openDB(t, env, pgtest.ReadWriteUser)
	db.SetMaxOpenConns(8)

	base := time.Now().UnixNano()
	t.Cleanup(func() {
		db.Exec("DELETE FROM "+pgtest.ScratchTable+" WHERE id >= $1 AND id < $2", base, base+20)
	})
	var wg sync.WaitGroup
	errs := make([]error, 20)
	for i := range 20 {
		wg.Go(func() {
			id := base + int64(i)
			if _, err := db.ExecContext(ctx, "INSERT INTO "+pgtest.ScratchTable+" (id, note) VALUES ($1, $2)", id, fmt.Sprint("pq ", i)); err != nil {
				errs[i] = err
				return
			}
			var note string
			if err := db.QueryRowContext(ctx, "SELECT note FROM "+pgtest.ScratchTable+" WHERE id = $1", id).Scan(&note); err != nil {
				errs[i] = err
			} else if note != fmt.Sprint("pq ", i) {
				errs[i] = fmt.Errorf("row %d: got %q", i, note)
			}
		})
	}
	wg.Wait()
	require.NoError(t, errors.Join(errs...))
	assert.LessOrEqual(t, db.Stats().OpenConnections, 8)
	assert.GreaterOrEqual(t, env.Sidecar.Stats().Relayed, int64(db.Stats().OpenConnections))
}

// An adversarial server is refused inside the handshake; the error matches
// the ratls sentinel through database/sql and pq, and the server receives
// no application byte.
func TestAdversariesRefused(t *testing.T) {
	t.Parallel()
	st, client := pgtest.Stack(t)
	for _, tc := range pgtest.Refusals {
		t.Run(tc.Kind.String(), func(t *testing.T) {
			t.Parallel()
			adv := pgtest.Adversary(t, st, tc.Kind)
			c, err := ratlspq.NewConnector(pgtest.DSN(pgtest.ReadUser, adv.Addr()), client, nil)
			require.NoError(t, err)
			db := sql.OpenDB(c)
			defer db.Close()

			err = db.PingContext(testCtx(t))
			require.ErrorIs(t, err, tc.Err)

			require.NoError(t, adv.Close())
			assert.Zero(t, adv.BytesReceived(), "application bytes reached an unverified server")
			assert.Zero(t, adv.Handshakes())
		})
	}
}

// Each host of a multi-host DSN is attested on its own.
func TestMultiHost(t *testing.T) {
	t.Parallel()
	env := pgtest.Start(t)
	adv := env.Adversary(t, pgtest.Refusals[0].Kind)
	advHost, advPort, _ := strings.Cut(adv.Addr(), ":")
	scHost, scPort, _ := strings.Cut(env.Sidecar.Addr(), ":")
	dsn := fmt.Sprintf("host=%s,%s port=%s,%s user=%s password=%s dbname=%s sslmode=prefer",
		advHost, scHost, advPort, scPort, pgtest.ReadUser, pgtest.Secret, pgtest.Database)
	c, err := ratlspq.NewConnector(dsn, env.Client, nil)
	require.NoError(t, err)
	db := sql.OpenDB(c)
	defer db.Close()
	var one int
	require.NoError(t, db.QueryRowContext(testCtx(t), "SELECT 1").Scan(&one))
	require.NoError(t, adv.Close())
	assert.Zero(t, adv.BytesReceived())
}

// pq sends cancel requests with the connector's dialer: attested, through
// the sidecar, and the server stops the query.
func TestCancelQuery(t *testing.T) {
	t.Parallel()
	env := pgtest.Start(t)
	ctx := testCtx(t)
	admin := pgtest.Admin(t)
	db := openDB(t, env, pgtest.ReadUser)
	conn, err := db.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	before := env.Sidecar.Stats()

	marker := fmt.Sprintf("ratlspq-cancel-%d", time.Now().UnixNano())
	qctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	_, err = conn.ExecContext(qctx, "SELECT pg_sleep(10) /* "+marker+" */")
	require.Error(t, err)

	require.Eventually(t, func() bool {
		n, err := pgtest.ActiveQueries(ctx, admin, marker)
		return err == nil && n == 0
	}, 5*time.Second, 20*time.Millisecond, "the server must stop the query")
	require.Eventually(t, func() bool {
		return env.Sidecar.Stats().Relayed == before.Relayed+1
	}, 5*time.Second, 10*time.Millisecond, "the cancel request goes through the sidecar")
	assert.Equal(t, before.Rejected, env.Sidecar.Stats().Rejected)
}

// Passwords other than TeeSQL secrets (AllowAnyCredentials) may hold
// characters that break the DSN. The driver then quotes the fragment it
// stumbled on, which can be a piece of the password: the error must show
// none of it.
func TestMalformedDSNNeverQuotesPassword(t *testing.T) {
	t.Parallel()
	_, client := pgtest.Stack(t)
	tests := []struct {
		dsn    string
		secret []string
	}{
		{"postgres://app:p@ss:w0rd/x@db.example:5433/app", []string{"p@ss", "w0rd"}},
		{"postgres://app:S3cr%zzpw@db.example:5433/app", []string{"S3cr", "%zz", "zzpw"}},
		{`postgres://app:Secr\et@db.example:5433/app`, []string{"Secr", `\et`}},
		{"postgres://app:hunter2hunter2@db.example:notaport/app", []string{"hunter2"}},
		{"host=db.example password='hunter2hunter2 port=5433", []string{"hunter2"}},
	}
	for _, tt := range tests {
		_, err := ratlspq.NewConnector(tt.dsn, client, &ratlspq.Options{AllowAnyCredentials: true})
		require.ErrorIs(t, err, ratlspq.ErrBadDSN, tt.dsn)
		for _, frag := range tt.secret {
			assert.NotContains(t, err.Error(), frag, tt.dsn)
		}
	}
}
