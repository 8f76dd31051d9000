package ratlspgx_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	ratlspgx "github.com/teesql/ratls/adapters/pgx"
	"github.com/teesql/ratls/internal/pgtest"
)

const secret = pgtest.Secret

func TestBadDSNRefusedBeforeAnyConnection(t *testing.T) {
	t.Parallel()
	_, client := pgtest.Stack(t)
	rec := pgtest.NewRecorder(t)
	host := rec.Addr()

	tests := []struct {
		name, dsn string
		want      error
		opts      *ratlspgx.Options
	}{
		{"unparsable", "postgres://teesql_read:" + secret + "@" + host + ":notaport/test", ratlspgx.ErrBadDSN, nil},
		{"bad keyword syntax", "host=127.0.0.1 password='" + secret, ratlspgx.ErrBadDSN, nil},
		{"unix socket", "host=/var/run/postgresql user=teesql_read password=" + secret, ratlspgx.ErrBadDSN, nil},
		{"channel binding required", "postgres://teesql_read:" + secret + "@" + host + "/test?channel_binding=require", ratlspgx.ErrBadDSN, nil},
		{"other user", "postgres://postgres:" + secret + "@" + host + "/test", ratlspgx.ErrBadCredentials, nil},
		{"no password", "postgres://teesql_read@" + host + "/test", ratlspgx.ErrBadCredentials, nil},
		{"short password", "postgres://teesql_read:" + secret[:63] + "@" + host + "/test", ratlspgx.ErrBadCredentials, nil},
		{"upper-case password", "postgres://teesql_readwrite:" + strings.ToUpper(secret) + "@" + host + "/test", ratlspgx.ErrBadCredentials, nil},
		{"non-hex password", "postgres://teesql_read:" + secret[:63] + "x@" + host + "/test", ratlspgx.ErrBadCredentials, nil},
		{"second host is a socket", "host=" + strings.Replace(host, ":", " port=", 1) + ",/tmp user=teesql_read password=" + secret, ratlspgx.ErrBadDSN, nil},
		{"unix socket even with any credentials", "host=/tmp user=postgres", ratlspgx.ErrBadDSN, &ratlspgx.Options{AllowAnyCredentials: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			_, err := ratlspgx.ParseConfig(tt.dsn, client, tt.opts)
			require.ErrorIs(t, err, tt.want)
			assert.True(t, strings.HasPrefix(err.Error(), "ratls"), err.Error())
			assert.NotContains(t, err.Error(), secret[:16])
			assert.NotContains(t, strings.ToLower(err.Error()), secret[:16])

			_, err = ratlspgx.ParsePoolConfig(tt.dsn, client, tt.opts)
			require.ErrorIs(t, err, tt.want)

			conn, err := ratlspgx.Connect(ctx, tt.dsn, client, tt.opts)
			require.ErrorIs(t, err, tt.want)
			require.Nil(t, conn)

			pool, err := ratlspgx.NewPool(ctx, tt.dsn, client, tt.opts)
			require.ErrorIs(t, err, tt.want)
			require.Nil(t, pool)
		})
	}
	assert.Empty(t, rec.Settle(t), "a refused DSN must not cause any connection")
}

func TestAllowAnyCredentials(t *testing.T) {
	t.Parallel()
	_, client := pgtest.Stack(t)
	dsn := "postgres://app:not-a-teesql-secret@db.example:5433/app"
	_, err := ratlspgx.ParseConfig(dsn, client, nil)
	require.ErrorIs(t, err, ratlspgx.ErrBadCredentials)
	assert.NotContains(t, err.Error(), "not-a-teesql-secret")

	cc, err := ratlspgx.ParseConfig(dsn, client, &ratlspgx.Options{AllowAnyCredentials: true})
	require.NoError(t, err)
	assert.Equal(t, "app", cc.User)
}

func TestNilClient(t *testing.T) {
	t.Parallel()
	_, err := ratlspgx.ParseConfig("postgres://teesql_read:"+secret+"@db.example/app", nil, nil)
	require.Error(t, err)
}

// Every sslmode collapses to attested TLS: no pgx TLS (so no SSLRequest),
// one attempt per distinct host, each dialed by name.
func TestConfigShape(t *testing.T) {
	t.Parallel()
	_, client := pgtest.Stack(t)
	for _, mode := range []string{"", "disable", "allow", "prefer", "require", "verify-ca", "verify-full"} {
		t.Run("sslmode="+mode, func(t *testing.T) {
			dsn := "postgres://teesql_read:" + secret + "@db-a.example:5433,db-b.example:5434,db-a.example:5433/app"
			if mode != "" {
				dsn += "?sslmode=" + mode
			}
			cc, err := ratlspgx.ParseConfig(dsn, client, nil)
			require.NoError(t, err)
			assert.Nil(t, cc.TLSConfig)
			assert.Equal(t, "db-a.example", cc.Host)
			assert.EqualValues(t, 5433, cc.Port)
			require.Len(t, cc.Fallbacks, 1, "repeats of a host for sslmode fallbacks must go")
			assert.Equal(t, "db-b.example", cc.Fallbacks[0].Host)
			assert.EqualValues(t, 5434, cc.Fallbacks[0].Port)
			assert.Nil(t, cc.Fallbacks[0].TLSConfig)

			addrs, err := cc.LookupFunc(context.Background(), "db-b.example")
			require.NoError(t, err)
			assert.Equal(t, []string{"db-b.example"}, addrs, "host names reach the dialer unresolved, for SNI")
			require.NotNil(t, cc.DialFunc)
			require.NotNil(t, cc.BuildContextWatcherHandler)
		})
	}
}

func TestPoolConfigCapsLifetime(t *testing.T) {
	t.Parallel()
	_, client := pgtest.Stack(t)
	dsn := "postgres://teesql_read:" + secret + "@db.example:5433/app"
	pc, err := ratlspgx.ParsePoolConfig(dsn, client, &ratlspgx.Options{MaxConnAge: 5 * time.Minute})
	require.NoError(t, err)
	assert.Equal(t, 5*time.Minute, pc.MaxConnLifetime)
	assert.NotNil(t, pc.PrepareConn)
	assert.NotNil(t, pc.AfterRelease)

	pc, err = ratlspgx.ParsePoolConfig(dsn+"?pool_max_conn_lifetime=1m", client, &ratlspgx.Options{MaxConnAge: 5 * time.Minute})
	require.NoError(t, err)
	assert.Equal(t, time.Minute, pc.MaxConnLifetime, "a shorter lifetime from the DSN is kept")

	// ConfigurePool on a config the caller parsed keeps the caller's hooks.
	pc, err = pgxpool.ParseConfig(dsn)
	require.NoError(t, err)
	released := 0
	pc.AfterRelease = func(*pgx.Conn) bool { released++; return true }
	require.NoError(t, ratlspgx.ConfigurePool(pc, client, nil))
	require.Nil(t, pc.ConnConfig.TLSConfig)
	// A connection this package did not make counts as stale: the caller's
	// hook is not reached, the connection is dropped.
	assert.False(t, pc.AfterRelease(nil))
	assert.Zero(t, released)
}

func TestConfigureRefusesBadCredentials(t *testing.T) {
	t.Parallel()
	_, client := pgtest.Stack(t)
	pc, err := pgxpool.ParseConfig("postgres://someone:pw@db.example/app")
	require.NoError(t, err)
	err = ratlspgx.ConfigurePool(pc, client, nil)
	require.ErrorIs(t, err, ratlspgx.ErrBadCredentials)
	assert.NotContains(t, err.Error(), "pw")
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
		opts := &ratlspgx.Options{AllowAnyCredentials: true}
		_, err := ratlspgx.ParseConfig(tt.dsn, client, opts)
		if err == nil {
			continue // pgx's own URL parser takes a backslash in a password
		}
		require.ErrorIs(t, err, ratlspgx.ErrBadDSN, tt.dsn)
		_, perr := ratlspgx.ParsePoolConfig(tt.dsn, client, opts)
		require.ErrorIs(t, perr, ratlspgx.ErrBadDSN, tt.dsn)
		for _, frag := range tt.secret {
			assert.NotContains(t, err.Error(), frag, tt.dsn)
			assert.NotContains(t, perr.Error(), frag, tt.dsn)
		}
	}
}
