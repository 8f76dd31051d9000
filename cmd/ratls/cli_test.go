package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// syncBuffer is a bytes.Buffer safe to read while a command writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// result is one finished in-process run.
type result struct {
	code           int
	stdout, stderr string
}

// newCLI returns a cli whose environment is env only, so that tests never
// depend on (or race over) the process environment.
func newCLI(env map[string]string, stdout, stderr *syncBuffer) *cli {
	return &cli{
		stdout: stdout,
		stderr: stderr,
		getenv: func(k string) string { return env[k] },
	}
}

// runCmd runs one command to completion.
func runCmd(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stdout, stderr syncBuffer
	code := newCLI(env, &stdout, &stderr).main(ctx, args)
	return result{code, stdout.String(), stderr.String()}
}

// background is a long-running command started in process.
type background struct {
	stdout, stderr *syncBuffer
	addrs          chan net.Addr
	cancel         context.CancelFunc
	done           chan int
}

// startCmd starts a long-running command and waits for its first listener
// (if wantListener). The command is stopped (as by SIGTERM) at cleanup.
func startCmd(t *testing.T, env map[string]string, args ...string) *background {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	b := &background{
		stdout: &syncBuffer{}, stderr: &syncBuffer{},
		addrs: make(chan net.Addr, 4), cancel: cancel, done: make(chan int, 1),
	}
	c := newCLI(env, b.stdout, b.stderr)
	c.listening = func(_ string, a net.Addr) { b.addrs <- a }
	go func() { b.done <- c.main(ctx, args) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-b.done:
		case <-time.After(30 * time.Second):
			t.Errorf("%v did not stop", args)
		}
	})
	return b
}

// addr waits for the command to listen.
func (b *background) addr(t *testing.T) string {
	t.Helper()
	select {
	case a := <-b.addrs:
		return a.String()
	case code := <-b.done:
		b.done <- code
		t.Fatalf("command exited with %d before listening; stderr:\n%s", code, b.stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("command did not listen; stderr:\n%s", b.stderr.String())
	}
	return ""
}

// stop stops the command as SIGTERM would and returns its exit code.
func (b *background) stop(t *testing.T) int {
	t.Helper()
	b.cancel()
	select {
	case code := <-b.done:
		b.done <- code
		return code
	case <-time.After(30 * time.Second):
		t.Fatalf("command did not stop; stderr:\n%s", b.stderr.String())
	}
	return -1
}

func decodeJSON(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(s), &m), "output: %s", s)
	return m
}

func keys(m map[string]any) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func testdata(parts ...string) string {
	return filepath.Join(append([]string{"..", "..", "testdata"}, parts...)...)
}

func TestUsage(t *testing.T) {
	t.Parallel()
	r := runCmd(t, nil)
	assert.Equal(t, exitUsage, r.code)
	assert.Contains(t, r.stderr, "Usage: ratls COMMAND")

	r = runCmd(t, nil, "help")
	assert.Equal(t, exitOK, r.code)
	for _, cmd := range commands() {
		assert.Contains(t, r.stdout, cmd.name)
	}

	r = runCmd(t, nil, "frobnicate")
	assert.Equal(t, exitUsage, r.code)
	assert.Contains(t, r.stderr, `unknown command "frobnicate"`)
}

// Every command documents itself on --help, and its exit codes.
func TestHelp(t *testing.T) {
	t.Parallel()
	for _, cmd := range commands() {
		t.Run(cmd.name, func(t *testing.T) {
			t.Parallel()
			for _, args := range [][]string{{cmd.name, "--help"}, {cmd.name, "-h"}, {"help", cmd.name}} {
				r := runCmd(t, nil, args...)
				require.Equal(t, exitOK, r.code, "%v: %s", args, r.stderr)
				assert.Equal(t, 1, strings.Count(r.stdout, "Usage: ratls "+cmd.name), r.stdout)
				assert.Contains(t, r.stdout, "Exit status")
				assert.Empty(t, r.stderr)
			}
		})
	}
}

// RATLS_TRUSTED_ROOT, which `. sim.env` leaves in a shell, is never a
// default of --trusted-root; the help says how to pass it. The harmless
// defaults from the environment remain.
func TestTrustedRootNotFromEnvironment(t *testing.T) {
	t.Parallel()
	env := map[string]string{envTrustedRoot: "/tmp/sim/root.pem", envPCCS: "http://127.0.0.1:9/pccs"}
	for _, name := range []string{"inspect", "verify-quote", "proxy", "sidecar"} {
		r := runCmd(t, env, name, "--help")
		require.Equal(t, exitOK, r.code, r.stderr)
		assert.NotContains(t, r.stdout, env[envTrustedRoot], name)
		assert.Contains(t, r.stdout, `--trusted-root "$RATLS_TRUSTED_ROOT"`, name)
		assert.Contains(t, r.stdout, `(default "`+env[envPCCS]+`")`, name)
	}
}

func TestBadFlag(t *testing.T) {
	t.Parallel()
	for _, cmd := range commands() {
		r := runCmd(t, nil, cmd.name, "--no-such-flag")
		assert.Equal(t, exitUsage, r.code, cmd.name)
		assert.Empty(t, r.stdout)
		assert.Contains(t, r.stderr, "ratls "+cmd.name+": flag provided but not defined")
		assert.Equal(t, 2, strings.Count(r.stderr, "\n"), "one error line and one hint: %q", r.stderr)
	}
}

// A bug (here: a nil stdout) ends in a one-line error, not a stack trace.
func TestPanicIsOneLine(t *testing.T) {
	t.Parallel()
	var stderr syncBuffer
	c := &cli{stdout: nil, stderr: &stderr, getenv: func(string) string { return "" }}
	code := c.main(context.Background(), []string{"help"})
	assert.Equal(t, exitFail, code)
	assert.Contains(t, stderr.String(), "ratls: internal error:")
	assert.Equal(t, 1, strings.Count(stderr.String(), "\n"))
	assert.NotContains(t, stderr.String(), "goroutine")
}

func TestReadQuoteHex(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(testdata("dcap-qvl", "tdx_quote"))
	require.NoError(t, err)
	dir := t.TempDir()
	for name, content := range map[string]string{
		"plain": hexs(raw),
		"0x":    "0x" + hexs(raw) + "\n",
		"lines": hexs(raw[:100]) + "\n" + strings.ToUpper(hexs(raw[100:])) + "\n",
	} {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
		got, err := readQuote(p)
		require.NoError(t, err)
		assert.Equal(t, raw, got, name)
	}
	got, err := readQuote(testdata("dcap-qvl", "tdx_quote"))
	require.NoError(t, err)
	assert.Equal(t, raw, got)
}

func TestPolicyFlags(t *testing.T) {
	t.Parallel()
	mrtd := strings.Repeat("AB", 48)
	var pf policyFlags
	require.NoError(t, pf.mrtds.Set("0x"+mrtd+","+strings.Repeat("cd", 48)))
	require.NoError(t, pf.acceptTCB.Set("uptodate, OutOfDate"))
	pol, err := pf.policy()
	require.NoError(t, err)
	assert.Equal(t, []string{strings.ToLower(mrtd), strings.Repeat("cd", 48)}, pol.MRTDs)
	assert.Equal(t, "UpToDate", string(pol.AcceptTCBStatuses[0]))
	assert.Equal(t, "OutOfDate", string(pol.AcceptTCBStatuses[1]))

	for _, bad := range []func(*policyFlags){
		func(p *policyFlags) { p.mrtds = listFlag{"abcd"} },
		func(p *policyFlags) { p.composeHashes = listFlag{strings.Repeat("zz", 32)} },
		func(p *policyFlags) { p.appIDs = listFlag{strings.Repeat("ab", 21)} },
		func(p *policyFlags) { p.acceptTCB = listFlag{"Fine"} },
	} {
		var p policyFlags
		bad(&p)
		_, err := p.policy()
		assert.ErrorAs(t, err, new(usageError))
	}
}
