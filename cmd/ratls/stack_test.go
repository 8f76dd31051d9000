package main

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/teesql/ratls/ratlstest"
)

// testStack is a simulated TEE stack plus what the CLI needs to use it:
// the environment `ratls simulator` would print, and its test root, which
// only --trusted-root (trust()) makes the CLI trust.
type testStack struct {
	*ratlstest.Stack
	root string            // the test root's PEM file
	env  map[string]string // DSTACK_SIMULATOR_ENDPOINT, RATLS_PCCS_URL, RATLS_TRUSTED_ROOT
	td   ratlstest.TD
}

func startStack(t *testing.T) *testStack {
	t.Helper()
	s := ratlstest.StartStack(t, ratlstest.StackOptions{Logger: quietLogger})
	root := filepath.Join(t.TempDir(), "root.pem")
	require.NoError(t, os.WriteFile(root, s.Authority.RootPEM(), 0o600))
	return &testStack{
		Stack: s,
		root:  root,
		env: map[string]string{
			envAgent:       s.Agent.URL(),
			envPCCS:        s.PCCS.URL(),
			envTrustedRoot: root,
		},
		td: s.Agent.TD(),
	}
}

// trust is the flag that makes a command trust the stack's test root.
func (s *testStack) trust() []string { return []string{"--trusted-root", s.root} }

// pins are the flags that accept exactly the stack's TD: its root, MRTD,
// compose hash and app id.
func (s *testStack) pins() []string {
	return append(s.trust(), "--mrtd", s.td.MRTDHex(), "--compose-hash", s.td.ComposeHashHex(), "--app-id", s.td.AppIDHex())
}

// countingUpstream is a TCP echo upstream that counts connections and bytes,
// to prove that nothing reached it.
type countingUpstream struct {
	ln           net.Listener
	conns, bytes atomic.Int64
	wg           sync.WaitGroup
}

func startCountingUpstream(t *testing.T) *countingUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	u := &countingUpstream{ln: ln}
	var mu sync.Mutex
	open := map[net.Conn]struct{}{}
	u.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.conns.Add(1)
			mu.Lock()
			open[c] = struct{}{}
			mu.Unlock()
			u.wg.Go(func() {
				defer c.Close()
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					u.bytes.Add(int64(n))
					if n > 0 {
						c.Write(buf[:n])
					}
					if err != nil {
						c.(*net.TCPConn).CloseWrite()
						return
					}
				}
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range open {
			c.Close()
		}
		mu.Unlock()
		u.wg.Wait()
	})
	return u
}

func (u *countingUpstream) addr() string { return u.ln.Addr().String() }

func TestInspectVerify(t *testing.T) {
	t.Parallel()
	s := startStack(t)
	cert, err := s.Agent.Certificate(ratlstest.TLSKeyRequest{Subject: "verify.test", UsageRATLS: true, UsageServerAuth: true})
	require.NoError(t, err)
	path := writeChainPEM(t, cert.Certificate)

	r := runCmd(t, s.env, append([]string{"inspect", "--json", "--verify", "--cert", path}, s.pins()...)...)
	require.Equal(t, exitOK, r.code, r.stderr)
	m := decodeJSON(t, r.stdout)
	v := m["verification"].(map[string]any)
	assert.Equal(t, true, v["accepted"])
	assert.Equal(t, "", v["error"])
	assert.Equal(t, "UpToDate", v["tcb_status"])
	assert.Equal(t, s.Authority.FMSPC(), v["fmspc"])
	assert.ElementsMatch(t, append(append([]string{}, inspectionKeys...), "verification"), keys(m))
	// The test root is announced, once, with where it came from.
	assertRootBanner(t, r.stderr, s.Authority.Root().Subject.CommonName, s.root)

	// A policy the TD does not meet.
	r = runCmd(t, s.env, append([]string{"inspect", "--verify", "--cert", path, "--mrtd", hexs(make([]byte, 48))}, s.trust()...)...)
	assert.Equal(t, exitFail, r.code)
	assert.Contains(t, r.stdout, "REJECTED")
	assert.Contains(t, r.stderr, "MRTD not allowed")

	// Without --trusted-root, Intel's root is used even though
	// RATLS_TRUSTED_ROOT names the test root: the simulated quote fails,
	// and no banner claims otherwise.
	require.Equal(t, s.root, s.env[envTrustedRoot])
	r = runCmd(t, s.env, "inspect", "--json", "--verify", "--cert", path)
	assert.Equal(t, exitFail, r.code)
	assert.Contains(t, r.stderr, "quote verification failed")
	assert.NotContains(t, r.stderr, "NOT INTEL'S ROOT")
	// Without --verify, the policy flags are not applied.
	r = runCmd(t, s.env, "inspect", "--cert", path, "--mrtd", hexs(make([]byte, 48)))
	assert.Equal(t, exitOK, r.code, r.stderr)
	assert.NotContains(t, r.stderr, "NOT INTEL'S ROOT")
}

func TestInspectLiveAdversaries(t *testing.T) {
	t.Parallel()
	s := startStack(t)
	for _, tc := range []struct {
		kind       ratlstest.AdversaryKind
		keyBinding bool
		verifyErr  string
	}{
		{ratlstest.SwappedKey, false, "does not bind"},
		{ratlstest.DebugTD, true, "debug TD"},
		{ratlstest.WrongMRTD, true, "MRTD not allowed"},
	} {
		t.Run(tc.kind.String(), func(t *testing.T) {
			adv, err := s.NewAdversary(tc.kind)
			require.NoError(t, err)
			r := runCmd(t, s.env, "inspect", "--json", adv.Addr())
			m := decodeJSON(t, r.stdout)
			assert.Equal(t, tc.keyBinding, m["key_binding"])
			if tc.keyBinding {
				assert.Equal(t, exitOK, r.code, r.stderr)
			} else {
				assert.Equal(t, exitFail, r.code)
			}
			r = runCmd(t, s.env, append([]string{"inspect", "--verify", adv.Addr()}, s.pins()...)...)
			assert.Equal(t, exitFail, r.code)
			assert.Contains(t, r.stderr, tc.verifyErr)
			assert.Zero(t, adv.BytesReceived())
		})
	}
}

func TestFetchCollateral(t *testing.T) {
	t.Parallel()
	s := startStack(t)
	dir := t.TempDir()
	quote, err := s.Authority.Quote(s.td, [64]byte{1, 2, 3})
	require.NoError(t, err)
	quotePath := filepath.Join(dir, "quote.bin")
	require.NoError(t, os.WriteFile(quotePath, quote, 0o600))
	out := filepath.Join(dir, "collateral.json")

	before := s.PCCS.TotalRequests()
	r := runCmd(t, nil, "fetch-collateral", "--quote", quotePath, "--pccs", s.PCCS.URL(), "-o", out)
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Greater(t, s.PCCS.TotalRequests(), before)
	assert.Contains(t, r.stdout, "FMSPC "+s.Authority.FMSPC())
	m := decodeJSON(t, readFile(t, out))
	assert.ElementsMatch(t, []string{
		"pck_crl_issuer_chain", "root_ca_crl", "pck_crl", "tcb_info_issuer_chain", "tcb_info",
		"tcb_info_signature", "qe_identity_issuer_chain", "qe_identity", "qe_identity_signature",
	}, keys(m))

	// Air-gapped: the fetched collateral verifies the quote with no PCCS.
	r = runCmd(t, nil, "verify-quote", "--json", "--quote", quotePath, "--collateral", out, "--trusted-root", s.root, "--mrtd", s.td.MRTDHex())
	require.Equal(t, exitOK, r.code, r.stderr+r.stdout)
	assert.Equal(t, true, decodeJSON(t, r.stdout)["accepted"])

	// The same through the environment the simulator prints (no
	// --collateral: fetched from the PCCS double), and the test root
	// passed explicitly.
	r = runCmd(t, s.env, append([]string{"verify-quote", "--json", "--quote", quotePath}, s.trust()...)...)
	require.Equal(t, exitOK, r.code, r.stderr+r.stdout)
	assertRootBanner(t, r.stderr, s.Authority.Root().Subject.CommonName, s.root)
	// The environment alone does not make the test root trusted.
	r = runCmd(t, s.env, "verify-quote", "--json", "--quote", quotePath)
	require.Equal(t, exitFail, r.code, r.stderr+r.stdout)
	assert.Equal(t, false, decodeJSON(t, r.stdout)["accepted"])
	assert.NotContains(t, r.stderr, "NOT INTEL'S ROOT")

	// To stdout.
	r = runCmd(t, s.env, "fetch-collateral", "--quote", quotePath, "-o", "-")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, decodeJSON(t, r.stdout), "tcb_info")
}

func TestFetchCollateralFailure(t *testing.T) {
	t.Parallel()
	s := startStack(t)
	s.PCCS.SetFault(ratlstest.Fault{Status: 503})
	quote, err := s.Authority.Quote(s.td, [64]byte{})
	require.NoError(t, err)
	dir := t.TempDir()
	quotePath := filepath.Join(dir, "quote.bin")
	require.NoError(t, os.WriteFile(quotePath, quote, 0o600))
	out := filepath.Join(dir, "collateral.json")
	r := runCmd(t, s.env, "fetch-collateral", "--quote", quotePath, "-o", out)
	assert.Equal(t, exitFail, r.code)
	assert.Equal(t, 1, strings.Count(r.stderr, "\n"), r.stderr)
	assert.NoFileExists(t, out)

	for _, args := range [][]string{
		{"fetch-collateral", "--quote", quotePath},
		{"fetch-collateral", "-o", out},
		{"fetch-collateral", "--quote", quotePath, "-o", out, "extra"},
	} {
		assert.Equal(t, exitUsage, runCmd(t, nil, args...).code, args)
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	return string(b)
}

func TestSidecarCommand(t *testing.T) {
	t.Parallel()
	s := startStack(t)
	up := startCountingUpstream(t)
	sc := startCmd(t, s.env, append([]string{"sidecar", "--listen", "127.0.0.1:0", "--upstream", up.addr(), "--shutdown-timeout", "30s"}, s.pins()...)...)
	addr := sc.addr(t)

	// A client that is not attested (no quote in its certificate) is
	// refused, and nothing reaches the upstream.
	plain, err := throwawayCertificate()
	require.NoError(t, err)
	tc, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{*plain}})
	if err == nil {
		tc.Write([]byte("let me in"))
		_, err = io.ReadAll(tc)
		tc.Close()
	}
	assert.Zero(t, up.conns.Load())
	assert.Zero(t, up.bytes.Load())

	// An attested client gets through, and sees the sidecar's attestation.
	client, err := s.NewClient(context.Background())
	require.NoError(t, err)
	conn, err := client.DialContext(context.Background(), "tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	rep, ok := client.Report(conn)
	require.True(t, ok)
	assert.Equal(t, s.td.MRTDHex(), hexs(rep.MRTD[:]))
	echo(t, conn, "ping")

	// SIGTERM: no new connections, but the open one still works...
	stopped := make(chan int, 1)
	go func() { stopped <- sc.stop(t) }()
	require.Eventually(t, func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	}, 10*time.Second, 20*time.Millisecond)
	echo(t, conn, "still there")
	select {
	case <-stopped:
		t.Fatal("the sidecar stopped with a connection open")
	default:
	}
	// ...until it ends; then the sidecar exits cleanly.
	require.NoError(t, conn.CloseWrite())
	_, _ = io.ReadAll(conn)
	assert.Equal(t, exitOK, <-stopped, sc.stderr.String())
	assert.Contains(t, sc.stderr.String(), "stopped")
	// Where it listens is logged once; each attested client, with its MRTD.
	assert.Equal(t, 1, strings.Count(sc.stderr.String(), "listening"), sc.stderr.String())
	assert.Contains(t, sc.stderr.String(), "mrtd="+s.td.MRTDHex())
}

// echo writes msg on conn and expects it back.
func echo(t *testing.T, conn net.Conn, msg string) {
	t.Helper()
	require.NoError(t, conn.SetDeadline(time.Now().Add(10*time.Second)))
	_, err := conn.Write([]byte(msg))
	require.NoError(t, err)
	buf := make([]byte, len(msg))
	_, err = io.ReadFull(conn, buf)
	require.NoError(t, err)
	assert.Equal(t, msg, string(buf))
	require.NoError(t, conn.SetDeadline(time.Time{}))
}

func TestSidecarUsage(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"sidecar"},
		{"sidecar", "--listen", ":0"},
		{"sidecar", "--listen", ":0", "--upstream", "x:1", "--mrtd", "zz"},
		{"sidecar", "--listen", ":0", "--upstream", "x:1", "--log-level", "loud"},
	} {
		assert.Equal(t, exitUsage, runCmd(t, nil, args...).code, args)
	}
	// No guest agent: a one-line error, not a hang.
	r := runCmd(t, map[string]string{envAgent: filepath.Join(t.TempDir(), "missing.sock")},
		"sidecar", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1")
	assert.Equal(t, exitFail, r.code)
	assert.Contains(t, r.stderr, "ratls sidecar:")
}

func writePEMFile(t *testing.T, typ string, der []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), typ+".pem")
	require.NoError(t, os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
	return p
}

// assertRootBanner checks that stderr announces, on exactly one line, that
// quotes are verified against the root named cn from the file from.
func assertRootBanner(t *testing.T, stderr, cn, from string) {
	t.Helper()
	var banners []string
	for _, line := range strings.Split(stderr, "\n") {
		if strings.Contains(line, "NOT INTEL'S ROOT") {
			banners = append(banners, line)
		}
	}
	require.Len(t, banners, 1, stderr)
	assert.Contains(t, banners[0], cn)
	assert.Contains(t, banners[0], from)
	assert.True(t, strings.HasPrefix(banners[0], "ratls "), banners[0])
}
