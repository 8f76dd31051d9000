package ratlspgx_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/teesql/ratls"
	ratlspgx "github.com/teesql/ratls/adapters/pgx"
	"github.com/teesql/ratls/internal/pgtest"
	"github.com/teesql/ratls/ratlstest"
)

// An adversarial server is refused inside the handshake: the error matches
// the ratls sentinel through pgx's wrapping, and the server receives no
// application byte (no StartupMessage, no credentials).
func TestAdversariesRefused(t *testing.T) {
	t.Parallel()
	st, client := pgtest.Stack(t)
	for _, tc := range pgtest.Refusals {
		t.Run(tc.Kind.String(), func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			adv := pgtest.Adversary(t, st, tc.Kind)
			dsn := pgtest.DSN(pgtest.ReadUser, adv.Addr())

			conn, err := ratlspgx.Connect(ctx, dsn, client, nil)
			require.ErrorIs(t, err, tc.Err)
			require.Nil(t, conn)
			var connectErr *pgconn.ConnectError
			require.ErrorAs(t, err, &connectErr, "pgx's own wrapping")

			pool, err := ratlspgx.NewPool(ctx, dsn, client, nil)
			require.NoError(t, err, "pools connect lazily")
			err = pool.Ping(ctx)
			pool.Close()
			require.ErrorIs(t, err, tc.Err, "through pgxpool too")

			require.NoError(t, adv.Close())
			assert.Zero(t, adv.BytesReceived(), "application bytes reached an unverified server")
			assert.Zero(t, adv.Handshakes(), "the client must abort before finishing the handshake")
		})
	}
}

// Whatever sslmode says, the first bytes on the wire are a TLS ClientHello:
// never an SSLRequest or a StartupMessage, and there is no second,
// plaintext attempt after the first fails.
func TestNoPlaintextWhateverSSLMode(t *testing.T) {
	t.Parallel()
	_, client := pgtest.Stack(t)
	for _, mode := range []string{"disable", "allow", "prefer", "require", ""} {
		t.Run("sslmode="+mode, func(t *testing.T) {
			t.Parallel()
			rec := pgtest.NewRecorder(t)
			var params []string
			if mode != "" {
				params = append(params, "sslmode="+mode)
			}
			dsn := pgtest.DSN(pgtest.ReadUser, rec.Addr(), params...)

			_, err := ratlspgx.Connect(testCtx(t), dsn, client, nil)
			require.Error(t, err, "the recorder hangs up after the first bytes")

			conns := rec.Settle(t)
			require.Len(t, conns, 1, "exactly one attempt: no fallback")
			first := conns[0]
			assert.True(t, pgtest.IsClientHello(first), "first bytes % x are not a TLS ClientHello", first)
			assert.NotEqual(t, pgtest.SSLRequest, first)
			assert.False(t, pgtest.IsStartupMessage(first))
		})
	}
}

// Each host of a multi-host DSN is dialed by its own name (its SNI) and
// attested on its own: an adversary first in the list is refused, and pgx
// moves on to the genuine sidecar.
func TestMultiHostEachAttested(t *testing.T) {
	t.Parallel()
	env := pgtest.Start(t)
	ctx := testCtx(t)
	adv := env.Adversary(t, ratlstest.SwappedKey)
	sni := newSNIRecorder(t)

	_, advPort, _ := net.SplitHostPort(adv.Addr())
	_, sniPort, _ := net.SplitHostPort(sni.addr())
	scHost, scPort, _ := net.SplitHostPort(env.Sidecar.Addr())
	dsn := "postgres://" + pgtest.ReadUser + ":" + pgtest.Secret + "@localhost:" + sniPort +
		",127.0.0.1:" + advPort + "," + scHost + ":" + scPort + "/" + pgtest.Database + "?sslmode=prefer"

	conn, err := ratlspgx.Connect(ctx, dsn, env.Client, nil)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var one int
	require.NoError(t, conn.QueryRow(ctx, "SELECT 1").Scan(&one))
	assert.Equal(t, env.Sidecar.Addr(), conn.PgConn().Conn().RemoteAddr().String())

	assert.Equal(t, []string{"localhost"}, sni.names(), "the host name, not a resolved address, is the SNI")
	require.NoError(t, adv.Close())
	assert.Zero(t, adv.BytesReceived())

	// All hosts refused: the error still matches the sentinel of the
	// adversary, joined by pgx with the others.
	adv2 := env.Adversary(t, ratlstest.SwappedKey)
	_, adv2Port, _ := net.SplitHostPort(adv2.Addr())
	dsn = "postgres://" + pgtest.ReadUser + ":" + pgtest.Secret + "@localhost:" + sniPort +
		",127.0.0.1:" + adv2Port + "/" + pgtest.Database
	_, err = ratlspgx.Connect(ctx, dsn, env.Client, nil)
	require.ErrorIs(t, err, ratls.ErrKeyBinding)
}

// sniRecorder is a TLS listener that records the SNI of each ClientHello
// and aborts the handshake.
type sniRecorder struct {
	ln  net.Listener
	mu  sync.Mutex
	got []string
	wg  sync.WaitGroup
}

func newSNIRecorder(t *testing.T) *sniRecorder {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	r := &sniRecorder{ln: ln}
	cfg := &tls.Config{GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		r.mu.Lock()
		r.got = append(r.got, hello.ServerName)
		r.mu.Unlock()
		return nil, errors.New("sni recorded")
	}}
	r.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.wg.Go(func() {
				defer c.Close()
				tls.Server(c, cfg).HandshakeContext(context.Background())
			})
		}
	})
	t.Cleanup(func() { ln.Close(); r.wg.Wait() })
	return r
}

func (r *sniRecorder) addr() string { return r.ln.Addr().String() }

func (r *sniRecorder) names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got...)
}

// A DSN parsed by pgx directly and then configured also never falls back.
func TestConfigureExistingConfig(t *testing.T) {
	t.Parallel()
	_, client := pgtest.Stack(t)
	rec := pgtest.NewRecorder(t)
	cc, err := pgx.ParseConfig(pgtest.DSN(pgtest.ReadUser, rec.Addr(), "sslmode=prefer"))
	require.NoError(t, err)
	require.NotNil(t, cc.TLSConfig, "pgx's own TLS, before Configure")
	require.NoError(t, ratlspgx.Configure(&cc.Config, client, nil))
	_, err = pgx.ConnectConfig(testCtx(t), cc)
	require.Error(t, err)
	conns := rec.Settle(t)
	require.Len(t, conns, 1)
	assert.True(t, pgtest.IsClientHello(conns[0]))
}
