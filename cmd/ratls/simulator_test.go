package main

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/teesql/ratls/ratlstest"
)

// parseEnv reads NAME=value lines.
func parseEnv(t *testing.T, s string) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		k, v, ok := strings.Cut(line, "=")
		require.True(t, ok, "not NAME=value: %q", line)
		env[k] = v
	}
	return env
}

// The simulator prints the environment, and clients and servers using only
// that environment verify each other.
func TestSimulator(t *testing.T) {
	t.Parallel()
	envFile := filepath.Join(t.TempDir(), "sim.env")
	sim := startCmd(t, nil, "simulator", "--env-file", envFile)
	require.Eventually(t, func() bool { return strings.Count(sim.stdout.String(), "\n") == 3 },
		20*time.Second, 10*time.Millisecond, sim.stderr.String())
	env := parseEnv(t, sim.stdout.String())
	assert.ElementsMatch(t, []string{envAgent, envTrustedRoot, envPCCS}, mapKeys(env))
	assert.True(t, strings.HasPrefix(env[envAgent], "http://127.0.0.1:"), env[envAgent])
	assert.True(t, strings.HasPrefix(env[envPCCS], "http://127.0.0.1:"), env[envPCCS])
	assert.FileExists(t, env[envTrustedRoot])
	assert.Equal(t, sim.stdout.String(), readFile(t, envFile))
	td := ratlstest.DefaultTD()
	assert.Contains(t, sim.stderr.String(), "SIMULATED TEE")
	assert.Contains(t, sim.stderr.String(), "--mrtd "+td.MRTDHex())

	// sidecar and proxy, configured by the environment plus the test root,
	// which only --trusted-root makes trusted.
	up := startCountingUpstream(t)
	pins := []string{"--trusted-root", env[envTrustedRoot], "--mrtd", td.MRTDHex(), "--compose-hash", td.ComposeHashHex()}
	sc := startCmd(t, env, append([]string{"sidecar", "--listen", "127.0.0.1:0", "--upstream", up.addr()}, pins...)...)
	scAddr := sc.addr(t)
	px := startCmd(t, env, append([]string{"proxy", "--listen", "127.0.0.1:0", "--upstream", scAddr}, pins...)...)
	c, err := net.Dial("tcp", px.addr(t))
	require.NoError(t, err)
	echo(t, c, "through both")
	c.Close()
	assert.Contains(t, px.stderr.String(), "mrtd="+td.MRTDHex())
	assertRootBanner(t, px.stderr.String(), "", env[envTrustedRoot])
	assertRootBanner(t, sc.stderr.String(), "", env[envTrustedRoot])

	// The environment alone, as left in a shell by `. sim.env`, does not
	// make a proxy trust the test root: it refuses the sidecar.
	strict := startCmd(t, env, "proxy", "--listen", "127.0.0.1:0", "--upstream", scAddr, "--mrtd", td.MRTDHex())
	c, err = net.Dial("tcp", strict.addr(t))
	require.NoError(t, err)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(20*time.Second)))
	_, err = c.Read(make([]byte, 1))
	assert.Error(t, err)
	c.Close()
	require.Eventually(t, func() bool { return strings.Contains(strict.stderr.String(), "quote verification failed") },
		10*time.Second, 10*time.Millisecond, strict.stderr.String())
	assert.NotContains(t, strict.stderr.String(), "NOT INTEL'S ROOT")
	assert.NotContains(t, strict.stderr.String(), "upstream attested")
	assert.Equal(t, exitOK, strict.stop(t))

	r := runCmd(t, env, append([]string{"inspect", "--verify", "--json", scAddr}, pins...)...)
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Equal(t, true, decodeJSON(t, r.stdout)["verification"].(map[string]any)["accepted"])

	assert.Equal(t, exitOK, px.stop(t))
	assert.Equal(t, exitOK, sc.stop(t))
	assert.Equal(t, exitOK, sim.stop(t))
	assert.NoFileExists(t, env[envTrustedRoot])
	assert.NoFileExists(t, envFile)
}

func TestSimulatorDebugTD(t *testing.T) {
	t.Parallel()
	sim := startCmd(t, nil, "simulator", "--debug-td", "--format", "legacy")
	require.Eventually(t, func() bool { return strings.Count(sim.stdout.String(), "\n") == 3 },
		20*time.Second, 10*time.Millisecond, sim.stderr.String())
	env := parseEnv(t, sim.stdout.String())
	up := startCountingUpstream(t)
	// The sidecar skips client attestation, so that only the proxy's
	// verdict on the debug TD matters.
	sc := startCmd(t, env, "sidecar", "--listen", "127.0.0.1:0", "--upstream", up.addr(), "--insecure-skip-client-attestation")
	scAddr := sc.addr(t)
	for _, tc := range []struct {
		flags []string
		ok    bool
	}{{nil, false}, {[]string{"--allow-debug"}, true}} {
		px := startCmd(t, env, append([]string{"proxy", "--listen", "127.0.0.1:0", "--upstream", scAddr, "--trusted-root", env[envTrustedRoot]}, tc.flags...)...)
		c, err := net.Dial("tcp", px.addr(t))
		require.NoError(t, err)
		if tc.ok {
			echo(t, c, "debug allowed")
		} else {
			c.Write([]byte("x"))
			_, err := c.Read(make([]byte, 1))
			assert.Error(t, err)
			require.Eventually(t, func() bool { return strings.Contains(px.stderr.String(), "debug TD") },
				10*time.Second, 10*time.Millisecond, px.stderr.String())
		}
		c.Close()
	}
	assert.Equal(t, exitUsage, runCmd(t, nil, "simulator", "--format", "v9").code)
}

// The built binary: exit codes reach the shell, and SIGTERM stops a
// long-running command cleanly.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "ratls")
	build := exec.Command("go", "build", "-o", bin, ".")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)

	for _, tc := range []struct {
		args []string
		code int
	}{
		{nil, exitUsage},
		{[]string{"help"}, exitOK},
		{verifyArgs("2025-06-25T00:00:00Z"), exitOK},
		{verifyArgs("2025-08-01T00:00:00Z"), exitFail},
	} {
		cmd := exec.Command(bin, tc.args...)
		cmd.Env = []string{}
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else {
			require.NoError(t, err)
		}
		assert.Equal(t, tc.code, code, tc.args)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "simulator")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	lines := bufio.NewScanner(stdout)
	var got []string
	for len(got) < 3 && lines.Scan() {
		got = append(got, lines.Text())
	}
	require.Len(t, got, 3, stderr.String())
	env := parseEnv(t, strings.Join(got, "\n"))
	assert.FileExists(t, env[envTrustedRoot])
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, cmd.Wait(), stderr.String())
	assert.NoFileExists(t, env[envTrustedRoot])
	assert.NotContains(t, stderr.String(), "goroutine")
}

func mapKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}
