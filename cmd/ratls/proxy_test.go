package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/teesql/ratls/internal/pgtest"
	"github.com/teesql/ratls/ratlstest"
)

// A plain pgx client (no TLS, no ratls) reaches the real PostgreSQL through
// the proxy and an RA-TLS sidecar; the proxy verifies the sidecar and logs
// its MRTD.
func TestProxyPostgres(t *testing.T) {
	t.Parallel()
	pgtest.Require(t)
	pg := pgtest.Addr
	s := startStack(t)
	sc, err := s.NewSidecar(context.Background(), pg)
	require.NoError(t, err)

	px := startCmd(t, s.env, append([]string{"proxy", "--listen", "127.0.0.1:0", "--upstream", sc.Addr()}, s.pins()...)...)
	addr := px.addr(t)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	host, port, _ := net.SplitHostPort(addr)
	conn, err := pgx.Connect(ctx, fmt.Sprintf("postgres://postgres@%s:%s/postgres?sslmode=disable", host, port))
	require.NoError(t, err, px.stderr.String())
	var sum int
	require.NoError(t, conn.QueryRow(ctx, "SELECT $1::int + 1", 41).Scan(&sum))
	assert.Equal(t, 42, sum)
	require.NoError(t, conn.Close(ctx))

	logs := px.stderr.String()
	assert.Contains(t, logs, "upstream attested")
	assert.Contains(t, logs, "mrtd="+s.td.MRTDHex())
	assert.Contains(t, logs, "compose_hash="+s.td.ComposeHashHex())
	assert.Positive(t, sc.Stats().Relayed)
	assert.Equal(t, exitOK, px.stop(t))
}

// Every connection gets its own attested upstream connection, with a client
// certificate from files instead of the agent.
func TestProxyEchoClientCertFiles(t *testing.T) {
	t.Parallel()
	s := startStack(t)
	up := startCountingUpstream(t)
	sc, err := s.NewSidecar(context.Background(), up.addr())
	require.NoError(t, err)

	cert, err := s.Agent.Certificate(ratlstest.TLSKeyRequest{Subject: "proxy.test", UsageRATLS: true, UsageClientAuth: true})
	require.NoError(t, err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	require.NoError(t, err)
	certFile := writeChainPEM(t, cert.Certificate)
	keyFile := writePEMFile(t, "PRIVATE KEY", keyDER)

	// No agent in the environment: the files are the only certificate.
	env := map[string]string{envPCCS: s.PCCS.URL()}
	px := startCmd(t, env, append([]string{"proxy", "--listen", "127.0.0.1:0", "--upstream", sc.Addr(),
		"--client-cert", certFile, "--client-key", keyFile}, s.pins()...)...)
	addr := px.addr(t)

	for i := range 3 {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		echo(t, c, fmt.Sprintf("hello %d", i))
		c.Close()
	}
	require.Eventually(t, func() bool { return sc.Stats().Relayed == 3 }, 10*time.Second, 10*time.Millisecond)
	assert.EqualValues(t, 3, up.conns.Load())
	assert.Equal(t, 3, strings.Count(px.stderr.String(), "upstream attested"))
}

// An upstream that fails attestation gets no byte of the local connection,
// which is closed.
func TestProxyRefusesAdversary(t *testing.T) {
	t.Parallel()
	s := startStack(t)
	for _, tc := range []struct {
		kind ratlstest.AdversaryKind
		err  string
	}{
		{ratlstest.SwappedKey, "quote does not bind the certificate key"},
		{ratlstest.DebugTD, "debug TD"},
		{ratlstest.WrongMRTD, "MRTD not allowed"},
		{ratlstest.NoAttestation, "no TDX quote"},
		{ratlstest.MismatchedQuotes, "malformed attestation extension"},
	} {
		t.Run(tc.kind.String(), func(t *testing.T) {
			adv, err := s.NewAdversary(tc.kind)
			require.NoError(t, err)
			px := startCmd(t, s.env, append([]string{"proxy", "--listen", "127.0.0.1:0", "--upstream", adv.Addr()}, s.pins()...)...)
			addr := px.addr(t)

			c, err := net.Dial("tcp", addr)
			require.NoError(t, err)
			defer c.Close()
			_, err = c.Write([]byte("SELECT secret FROM vault"))
			require.NoError(t, err)
			require.NoError(t, c.SetReadDeadline(time.Now().Add(20*time.Second)))
			got, _ := io.ReadAll(c) // EOF or reset: closed either way
			assert.Empty(t, got)

			require.Eventually(t, func() bool { return strings.Contains(px.stderr.String(), tc.err) },
				10*time.Second, 10*time.Millisecond, px.stderr.String())
			assert.Zero(t, adv.BytesReceived(), "bytes forwarded to a refused upstream")
			assert.NotContains(t, px.stderr.String(), "upstream attested")
		})
	}
}

func TestProxyUsage(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"proxy"},
		{"proxy", "--listen", "127.0.0.1:0"},
		{"proxy", "--listen", "127.0.0.1:0", "--upstream", "nohostport"},
		{"proxy", "--listen", "127.0.0.1:0", "--upstream", "h:1", "--client-cert", "c.pem"},
		{"proxy", "--listen", "127.0.0.1:0", "--upstream", "h:1", "--accept-tcb", "Shiny"},
	} {
		r := runCmd(t, nil, args...)
		assert.Equal(t, exitUsage, r.code, "%v: %s", args, r.stderr)
	}
	// No guest agent and no certificate files.
	r := runCmd(t, map[string]string{envAgent: filepath.Join(t.TempDir(), "none.sock")},
		"proxy", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1")
	assert.Equal(t, exitFail, r.code)
	assert.Equal(t, 1, strings.Count(r.stderr, "\n"), r.stderr)
	// A bad trusted root file.
	bad := filepath.Join(t.TempDir(), "root.pem")
	require.NoError(t, os.WriteFile(bad, []byte("not a certificate"), 0o600))
	r = runCmd(t, nil, "proxy", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1", "--trusted-root", bad)
	assert.Equal(t, exitFail, r.code)
	assert.Contains(t, r.stderr, "--trusted-root")
}

// --allow-simulator lets a server without a quote through, unverified, and
// says so in the log.
func TestProxyAllowSimulator(t *testing.T) {
	t.Parallel()
	s := startStack(t)
	adv, err := s.NewAdversary(ratlstest.NoAttestation)
	require.NoError(t, err)
	px := startCmd(t, s.env, "proxy", "--listen", "127.0.0.1:0", "--upstream", adv.Addr(), "--allow-simulator")
	c, err := net.Dial("tcp", px.addr(t))
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Write([]byte("hi"))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return adv.BytesReceived() == 2 }, 10*time.Second, 10*time.Millisecond)
	assert.Contains(t, px.stderr.String(), "WITHOUT verification")
	assert.Contains(t, px.stderr.String(), "AllowSimulator")
}
