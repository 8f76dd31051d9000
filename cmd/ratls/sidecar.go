package main

import (
	"context"
	"log/slog"
	"net"
	"time"

	"github.com/teesql/ratls"
	"github.com/teesql/ratls/internal/sidecar"
)

const sidecarHelp = `
The server side of RA-TLS, run inside a CVM in front of a service that knows
nothing of it (PostgreSQL): listens on --listen speaking TLS from the first
byte, presents an RA-TLS certificate from the dstack guest agent, requires a
client certificate and verifies the client's attestation under the policy
flags, then forwards the connection as plain TCP to --upstream.

--insecure-skip-client-attestation still requires a client certificate but
does not verify its attestation (DANGER: any client with a certificate gets
in).

SIGTERM or SIGINT stops accepting, lets open connections finish for
--shutdown-timeout, then closes them.

Exit status: 0 after a clean shutdown; 1 on error; 2 on bad usage.
`

func (c *cli) sidecar(ctx context.Context, args []string) error {
	fs := c.flagSet("sidecar", "--listen ADDR --upstream HOST:PORT [flags]", sidecarHelp)
	var (
		listen    = fs.String("listen", "", "`ADDR` to serve RA-TLS on, e.g. :5433; required")
		upstream  = fs.String("upstream", "", "plain TCP service `HOST:PORT` (or unix:/path/to/socket) to forward to, e.g. 127.0.0.1:5432; required")
		skip      = fs.Bool("insecure-skip-client-attestation", false, "require a client certificate but do not verify its attestation (DANGER)")
		subject   = fs.String("subject", "", "`SUBJECT` (common name) of the served certificate")
		altNames  listFlag
		handshake = fs.Duration("handshake-timeout", 30*time.Second, "bound on each client handshake and upstream connect")
		drain     = fs.Duration("shutdown-timeout", 10*time.Second, "how long open connections may finish after SIGTERM/SIGINT")
		logLevel  = fs.String("log-level", "info", "`LEVEL` of logging: debug (also every relay), info (also every attested client), warn or error")
		pf        policyFlags
		cf        clientCertFlags
	)
	fs.Var(&altNames, "alt-names", "subject alternative `NAMES` of the served certificate, comma-separated")
	pf.register(fs, c.getenv)
	cf.registerAgent(fs, c.getenv)
	args, err := parse(fs, args)
	if err != nil {
		return err
	}
	if *listen == "" || *upstream == "" {
		return usagef("--listen and --upstream are required")
	}
	if len(args) > 0 {
		return usagef("unexpected argument %q", args[0])
	}
	pol, err := pf.policy()
	if err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return usagef("--log-level %q: want debug, info, warn or error", *logLevel)
	}
	logger := slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: level})).With("cmd", "sidecar")
	v, err := c.verifier(&pf, nil, logger)
	if err != nil {
		return err
	}
	srv, err := ratls.NewServer(ctx, ratls.ServerConfig{
		ClientPolicy:                  pol,
		Verifier:                      v,
		InsecureSkipClientAttestation: *skip,
		DstackEndpoint:                cf.agent,
		Logger:                        logger,
		Subject:                       *subject,
		AltNames:                      altNames,
	})
	if err != nil {
		return err
	}
	defer srv.Close()

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	// The same sidecar the test suite puts in front of PostgreSQL (through
	// ratlstest). It logs where it listens.
	sc, err := sidecar.New(ctx, sidecar.Config{
		Upstream:         *upstream,
		Server:           srv,
		Listener:         ln,
		HandshakeTimeout: *handshake,
		Logger:           logger,
	})
	if err != nil {
		ln.Close()
		return err
	}
	c.notifyListening("sidecar", ln.Addr())
	<-ctx.Done()

	logger.Info("shutting down", "open_connections", sc.Stats().Active, "drain", *drain)
	sctx, cancel := context.WithTimeout(context.Background(), *drain)
	defer cancel()
	if err := sc.Shutdown(sctx); err != nil {
		logger.Warn("closed connections still open after the drain period")
	}
	if err := sc.Close(); err != nil {
		return err
	}
	st := sc.Stats()
	logger.Info("stopped", "accepted", st.Accepted, "rejected", st.Rejected, "relayed", st.Relayed)
	return nil
}
