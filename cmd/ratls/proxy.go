package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/teesql/ratls"
	"github.com/teesql/ratls/internal/forward"
)

const proxyHelp = `
Listens on a local address and forwards every accepted connection, as plain
TCP, to the attested RA-TLS server at --upstream, so that psql or any client
without ratls support reaches it: psql "host=127.0.0.1 port=PORT sslmode=disable".

Each local connection gets its own upstream connection, verified before a
single byte is forwarded: DCAP quote verification, key binding, and the policy
flags. A refused upstream closes the local connection without forwarding
anything; the reason is logged. Accepted upstreams are logged with their
verified MRTD, TCB status and compose hash.

The proxy presents a client certificate from --client-cert/--client-key, or
else one from the dstack guest agent (--dstack-endpoint).

Listen on loopback: the local side is plain TCP, and anyone who can reach it
uses the proxy's client identity.

SIGINT or SIGTERM stops accepting, lets open connections finish for
--shutdown-timeout, then closes them.

Exit status: 0 after a clean shutdown; 1 on error; 2 on bad usage.
`

func (c *cli) proxy(ctx context.Context, args []string) error {
	fs := c.flagSet("proxy", "--listen ADDR --upstream HOST:PORT [flags]", proxyHelp)
	var (
		listen    = fs.String("listen", "", "local `ADDR` to listen on, e.g. 127.0.0.1:15432; required")
		upstream  = fs.String("upstream", "", "attested server `HOST:PORT`; required")
		handshake = fs.Duration("handshake-timeout", 30*time.Second, "bound on each upstream connect and handshake")
		drain     = fs.Duration("shutdown-timeout", 10*time.Second, "how long open connections may finish after SIGINT/SIGTERM")
		cacheTTL  = fs.Duration("cache-ttl", 0, "how long a verified server certificate is trusted without re-verifying (0: the library default, 10m; negative: never cached)")
		pf        policyFlags
		cf        clientCertFlags
	)
	pf.register(fs, c.getenv)
	cf.register(fs, c.getenv)
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
	if _, _, err := net.SplitHostPort(*upstream); err != nil {
		return usagef("--upstream %q is not HOST:PORT", *upstream)
	}
	pol, err := pf.policy()
	if err != nil {
		return err
	}
	cert, err := cf.certificate()
	if err != nil {
		return err
	}
	logger := c.logger().With("cmd", "proxy")
	v, err := c.verifier(&pf, nil, logger)
	if err != nil {
		return err
	}
	client, err := ratls.NewClient(ctx, ratls.Config{
		Policy:            pol,
		Verifier:          v,
		ClientCertificate: cert,
		DstackEndpoint:    cf.agent,
		HandshakeTimeout:  *handshake,
		CacheTTL:          *cacheTTL,
		Logger:            logger,
	})
	if err != nil {
		return err
	}
	defer client.Close()

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	fwd := &forward.Proxy{
		// Nothing is read from the local connection before Dial returns
		// a verified upstream, so a refused upstream cannot receive a
		// byte of it.
		Dial: func(ctx context.Context) (_ net.Conn, err error) {
			// A bug in a connection's goroutine must not take the
			// process down with a stack trace.
			defer func() {
				if r := recover(); r != nil {
					err = fmt.Errorf("internal error: %v", r)
				}
			}()
			up, err := client.DialContext(ctx, "tcp", *upstream)
			if err != nil {
				return nil, err
			}
			if rep, ok := client.Report(up); ok {
				logReport(logger, "upstream attested", rep)
			}
			return up, nil
		},
		HandshakeTimeout: *handshake,
		Logger:           logger,
	}
	logger.Info("listening", "addr", ln.Addr().String(), "upstream", *upstream)
	c.notifyListening("proxy", ln.Addr())
	return serveUntilDone(ctx, fwd, ln, *drain, logger)
}

// serveUntilDone runs fwd on ln until ctx is done, then shuts it down
// gracefully: no new connections, open ones get drain to finish.
func serveUntilDone(ctx context.Context, fwd *forward.Proxy, ln net.Listener, drain time.Duration, logger *slog.Logger) error {
	served := make(chan error, 1)
	go func() { served <- fwd.Serve(ln) }()
	select {
	case err := <-served:
		fwd.Close()
		return err
	case <-ctx.Done():
	}
	logger.Info("shutting down", "open_connections", fwd.Stats().Active, "drain", drain)
	sctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	if err := fwd.Shutdown(sctx); err != nil {
		logger.Warn("closed connections still open after the drain period")
	}
	fwd.Close()
	if err := <-served; !errors.Is(err, forward.ErrClosed) {
		return err
	}
	logger.Info("stopped")
	return nil
}

// logReport logs what was verified about a peer.
func logReport(log *slog.Logger, msg string, rep *ratls.Report) {
	if rep.Simulated {
		log.Warn(msg+" WITHOUT verification: no quote, allowed by --allow-simulator", "simulated", true)
		return
	}
	attrs := []any{
		"mrtd", hexs(rep.MRTD[:]),
		"tcb_status", string(rep.TCBStatus),
		"fmspc", rep.FMSPC,
	}
	if rep.App != nil {
		attrs = append(attrs, "compose_hash", hexs(rep.App.ComposeHash), "app_id", hexs(rep.App.AppID))
	}
	log.Info(msg, attrs...)
}
