package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
)

// Exit codes, the same for every subcommand.
const (
	exitOK    = 0 // success: the check held, the server ran and stopped cleanly
	exitFail  = 1 // a check failed (not attested, not accepted) or a runtime error
	exitUsage = 2 // bad flags or arguments
)

// cli is one invocation of the command. Tests build their own to run
// subcommands in process with a private environment.
type cli struct {
	stdout, stderr io.Writer
	// name prefixes messages: "ratls" or "ratls SUBCOMMAND".
	name string
	// getenv reads the environment (os.Getenv outside tests).
	getenv func(string) string
	// listening, if set, is told the address each listener of a
	// long-running subcommand bound (tests use it with --listen :0).
	listening func(name string, addr net.Addr)
}

// command is a subcommand: run parses its own flags from args.
type command struct {
	name    string
	summary string
	run     func(c *cli, ctx context.Context, args []string) error
}

func commands() []command {
	return []command{
		{"inspect", "show the attestation in a certificate or presented by a server", (*cli).inspect},
		{"verify-quote", "verify a TDX quote with Intel DCAP under a policy", (*cli).verifyQuote},
		{"fetch-collateral", "fetch a quote's collateral for air-gapped verification", (*cli).fetchCollateral},
		{"proxy", "forward local plain TCP to an attested RA-TLS server", (*cli).proxy},
		{"sidecar", "serve RA-TLS in a CVM and forward to a local upstream", (*cli).sidecar},
		{"simulator", "run a simulated guest agent and PCCS for development", (*cli).simulator},
		{"demo", "show attested PostgreSQL end to end on a simulated TEE", (*cli).demo},
	}
}

// run is the whole program minus the process: it parses args, runs a
// subcommand and returns the exit code. It never panics.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := &cli{stdout: stdout, stderr: stderr, getenv: os.Getenv}
	return c.main(ctx, args)
}

func (c *cli) main(ctx context.Context, args []string) (code int) {
	c.name = "ratls"
	defer func() {
		// A bug must still end in a one-line error, never a stack trace.
		if r := recover(); r != nil {
			fmt.Fprintf(c.stderr, "%s: internal error: %v\n", c.name, r)
			code = exitFail
		}
	}()
	if len(args) == 0 {
		c.usage(c.stderr)
		return exitUsage
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		if len(args) > 1 {
			return c.main(ctx, []string{args[1], "--help"})
		}
		c.usage(c.stdout)
		return exitOK
	}
	for _, cmd := range commands() {
		if cmd.name != args[0] {
			continue
		}
		c.name = "ratls " + cmd.name
		err := cmd.run(c, ctx, args[1:])
		switch {
		case err == nil:
			return exitOK
		case errors.Is(err, flag.ErrHelp):
			return exitOK
		case errors.As(err, new(usageError)):
			fmt.Fprintf(c.stderr, "%s: %v\nRun 'ratls %s --help' for usage.\n", c.name, err, cmd.name)
			return exitUsage
		case errors.Is(err, errReported):
			return exitFail
		default:
			fmt.Fprintf(c.stderr, "%s: %s\n", c.name, oneLine(err.Error()))
			return exitFail
		}
	}
	fmt.Fprintf(c.stderr, "ratls: unknown command %q\n", args[0])
	c.usage(c.stderr)
	return exitUsage
}

func (c *cli) usage(w io.Writer) {
	fmt.Fprint(w, `ratls: attested TLS (RA-TLS) to Intel TDX confidential VMs (dstack CVMs).

Usage: ratls COMMAND [flags]

Commands:
`)
	for _, cmd := range commands() {
		fmt.Fprintf(w, "  %-17s %s\n", cmd.name, cmd.summary)
	}
	fmt.Fprint(w, `
Run 'ratls COMMAND --help' for a command's flags, output and exit codes.
Exit codes: 0 success, 1 check failed or error, 2 bad usage.
`)
}

// usageError is a mistake in the command line (exit code 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

// errReported says the command already printed its failure (for example in
// its JSON output) and only the exit code remains to be set.
var errReported = errors.New("failure already reported")

// oneLine keeps error messages (some quote a server's reply) on one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// flagSet is a subcommand's flags and its help text.
type flagSet struct {
	*flag.FlagSet
	help func()
}

// flagSet returns a FlagSet that leaves all printing to parse.
func (c *cli) flagSet(name, synopsis, description string) *flagSet {
	fs := flag.NewFlagSet("ratls "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	// The flag package calls Usage on every error; parse prints instead.
	fs.Usage = func() {}
	help := func() {
		w := c.stdout
		fmt.Fprintf(w, "Usage: ratls %s %s\n\n%s\n\nFlags:\n", name, synopsis, strings.TrimSpace(description))
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	return &flagSet{fs, help}
}

// parse parses args, which may mix flags and positional arguments (as in
// "inspect HOST:PORT --json"), and returns the positional ones. It prints
// the help on --help (returning flag.ErrHelp) and turns every other flag
// error into a usageError.
func parse(fs *flagSet, args []string) ([]string, error) {
	var positional []string
	for {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			fs.help()
			return nil, err
		}
		if err != nil {
			return nil, usageError{err.Error()}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return positional, nil
		}
		// After "--", everything is positional.
		if i := len(args) - len(rest); i > 0 && args[i-1] == "--" {
			return append(positional, rest...), nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

// logger is where long-running subcommands report connections.
func (c *cli) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

func (c *cli) notifyListening(name string, addr net.Addr) {
	if c.listening != nil {
		c.listening(name, addr)
	}
}
