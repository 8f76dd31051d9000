package main

import (
	"context"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/teesql/ratls/ratlstest"
)

const simulatorHelp = `
Runs, until interrupted, a simulated TEE environment for local development:
a dstack guest agent double issuing RA-TLS certificates for a simulated TD,
and a PCCS double serving the collateral of a test DCAP authority created
for this run. NOTHING IT ISSUES PROVES ANYTHING: its quotes chain to a test
root that only a client told to trust it (--trusted-root) believes.

It prints, one per line as NAME=value, the environment variables that point
ratls at it:

  DSTACK_SIMULATOR_ENDPOINT  the agent double's URL (certificates for
                             'ratls proxy', 'ratls sidecar' and any ratls
                             client or server)
  RATLS_PCCS_URL             the PCCS double's URL (default of --pccs)
  RATLS_TRUSTED_ROOT         the test root CA's PEM file, removed on exit.
                             No command reads it by itself: trusting it
                             takes --trusted-root "$RATLS_TRUSTED_ROOT"

Export them in another shell (with --env-file FILE: set -a; . FILE; set +a),
then for example:
  ratls sidecar --listen 127.0.0.1:5433 --upstream 127.0.0.1:5432 \
      --trusted-root "$RATLS_TRUSTED_ROOT" &
  ratls proxy --listen 127.0.0.1:15432 --upstream 127.0.0.1:5433 \
      --trusted-root "$RATLS_TRUSTED_ROOT" &
  psql "host=127.0.0.1 port=15432 user=postgres sslmode=disable"

The simulated TD's MRTD and compose hash are printed on stderr, to pin them
with --mrtd and --compose-hash.

Exit status: 0 after an interrupt; 1 on error; 2 on bad usage.
`

func (c *cli) simulator(ctx context.Context, args []string) error {
	fs := c.flagSet("simulator", "[flags]", simulatorHelp)
	var (
		envFile = fs.String("env-file", "", "also write the NAME=value lines to `FILE` (removed on exit)")
		format  = fs.String("format", "v0", "how certificates carry the attestation: v0, v1, legacy (dstack <= 0.5.8) or both")
		debug   = fs.Bool("debug-td", false, "simulate a debug TD (clients must refuse it without --allow-debug)")
	)
	args, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(args) > 0 {
		return usagef("unexpected argument %q", args[0])
	}
	f, ok := map[string]ratlstest.Format{
		"v0": ratlstest.FormatV0, "v1": ratlstest.FormatV1,
		"legacy": ratlstest.FormatLegacy, "both": ratlstest.FormatBoth,
	}[strings.ToLower(*format)]
	if !ok {
		return usagef("--format %q: want v0, v1, legacy or both", *format)
	}

	// The components, not a Stack: a Stack also builds a verifier, which
	// the simulator has no use for.
	logger := c.warnLogger()
	auth, err := ratlstest.NewAuthority(ratlstest.AuthorityOptions{Logger: logger})
	if err != nil {
		return err
	}
	pccs, err := ratlstest.NewPCCS(auth)
	if err != nil {
		return err
	}
	defer pccs.Close()
	agent, err := ratlstest.NewAgent(auth, ratlstest.AgentOptions{TD: ratlstest.TD{Debug: *debug}, Format: f, Logger: logger})
	if err != nil {
		return err
	}
	defer agent.Close()

	dir, err := os.MkdirTemp("", "ratls-simulator-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	rootPath := filepath.Join(dir, "root.pem")
	rootPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: auth.Root().Raw})
	if err := os.WriteFile(rootPath, rootPEM, 0o644); err != nil {
		return err
	}

	env := fmt.Sprintf("%s=%s\n%s=%s\n%s=%s\n",
		envAgent, agent.URL(),
		envPCCS, pccs.URL(),
		envTrustedRoot, rootPath)
	if *envFile != "" {
		if err := writeFileAtomic(*envFile, []byte(env)); err != nil {
			return err
		}
		defer os.Remove(*envFile)
	}
	td := agent.TD()
	fmt.Fprintf(c.stderr, `ratls simulator: SIMULATED TEE (no TDX hardware; quotes chain to a test root made for this run)
  simulated TD: MRTD %s
                compose hash %s, app id %s, debug %v
  trust it: --trusted-root "$%s" (never implied by the environment)
  pin it: --mrtd %s --compose-hash %s
  agent socket: %s
Interrupt (Ctrl-C) to stop.
`, td.MRTDHex(), td.ComposeHashHex(), td.AppIDHex(), td.Debug,
		envTrustedRoot, td.MRTDHex(), td.ComposeHashHex(), agent.SocketPath())
	if _, err := fmt.Fprint(c.stdout, env); err != nil {
		return err
	}
	<-ctx.Done()
	fmt.Fprintln(c.stderr, "ratls simulator: stopped")
	return nil
}
