package main

import (
	"context"
	"crypto/tls"
	"net"
	"time"

	"github.com/teesql/ratls"
	"github.com/teesql/ratls/internal/forward"
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
		upstream  = fs.String("upstream", "", "plain TCP service `HOST:PORT` to forward to, e.g. 127.0.0.1:5432; required")
		skip      = fs.Bool("insecure-skip-client-attestation", false, "require a client certificate but do not verify its attestation (DANGER)")
		subject   = fs.String("subject", "", "`SUBJECT` (common name) of the served certificate")
		altNames  listFlag
		handshake = fs.Duration("handshake-timeout", 30*time.Second, "bound on each client handshake and upstream connect")
		drain     = fs.Duration("shutdown-timeout", 10*time.Second, "how long open connections may finish after SIGTERM/SIGINT")
		pf        policyFlags
		cf        clientCertFlags
	)
	fs.Var(&altNames, "alt-names", "subject alternative `NAMES` of the served certificate, comma-separated")
	pf.register(fs, c.getenv)
	cf.registerAgent(fs, c.getenv)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *listen == "" || *upstream == "" {
		return usagef("--listen and --upstream are required")
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	pol, err := pf.policy()
	if err != nil {
		return err
	}
	logger := c.logger().With("cmd", "sidecar")
	v, err := pf.verifier(nil, logger)
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
	tlsConfig := srv.TLSConfig()
	var d net.Dialer
	fwd := &forward.Proxy{
		// The handshake verifies the client; the upstream is dialed
		// only once it succeeded.
		Handshake: func(ctx context.Context, conn net.Conn) (net.Conn, error) {
			tc := tls.Server(conn, tlsConfig)
			if err := tc.HandshakeContext(ctx); err != nil {
				return nil, err
			}
			if rep, ok := srv.Report(tc); ok {
				logReport(logger.With("client", conn.RemoteAddr().String()), "client attested", rep)
			} else {
				logger.Warn("client admitted WITHOUT attestation (--insecure-skip-client-attestation)", "client", conn.RemoteAddr().String())
			}
			return tc, nil
		},
		Dial: func(ctx context.Context) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", *upstream)
		},
		HandshakeTimeout: *handshake,
		Logger:           logger,
	}
	logger.Info("listening", "addr", ln.Addr().String(), "upstream", *upstream,
		"client_attestation", !*skip)
	c.notifyListening("sidecar", ln.Addr())
	return serveUntilDone(ctx, fwd, ln, *drain, logger)
}
