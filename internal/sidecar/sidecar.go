// Package sidecar is the server side of RA-TLS for a service that knows
// nothing of it (PostgreSQL, any TCP service): it listens speaking TLS from
// the first byte, serves the RA-TLS certificate of a ratls.Server, requires
// every client to present a certificate and (unless the server is configured
// otherwise) a verified attestation, and only then connects to the upstream
// and relays bytes both ways. A refused client causes no upstream connection
// and has no byte forwarded.
//
// It is what `ratls sidecar` runs inside a CVM, and what ratlstest.Sidecar
// puts in front of an echo server or a real PostgreSQL in tests. The data
// path is internal/forward's.
//
// Log messages are prefixed "sidecar:" (the relay's own are "forward:"):
// listening at Info, each attested client at Info with its MRTD, TCB status
// and app identity (app id, compose hash) when its event log establishes
// one, a client admitted with no quote (AllowSimulator) at Info, clients
// admitted without attestation (InsecureSkipClientAttestation) at Debug.
package sidecar

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/teesql/ratls"
	"github.com/teesql/ratls/internal/forward"
)

// DefaultHandshakeTimeout bounds a client's TLS handshake plus the upstream
// dial when Config.HandshakeTimeout is zero.
const DefaultHandshakeTimeout = 10 * time.Second

// Config configures a Sidecar.
type Config struct {
	// Upstream is where client bytes go: "host:port" over TCP, or
	// "unix:/path" for a unix socket. Required.
	Upstream string
	// Server supplies the served certificate and the client verification.
	// The sidecar does not close it. Nil: the sidecar creates a Server from
	// ServerConfig and closes it on Close.
	Server *ratls.Server
	// ServerConfig is used when Server is nil. Its defaults are the core's:
	// full DCAP verification of clients against Intel's root, a
	// certificate from the local dstack agent.
	ServerConfig ratls.ServerConfig
	// Listen is the TCP address to listen on. Empty: "127.0.0.1:0".
	// Ignored if Listener is set.
	Listen string
	// Listener, if set, is served instead of listening on Listen. The
	// sidecar closes it.
	Listener net.Listener
	// HandshakeTimeout bounds each client's TLS handshake plus the
	// upstream dial. Zero: DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// IdleTimeout closes connections idle in both directions this long.
	// Zero: no limit.
	IdleTimeout time.Duration
	// Logger receives the sidecar's and the relay's events (see the
	// package doc). Nil: slog.Default().
	Logger *slog.Logger
}

// Stats counts what a Sidecar has done: accepted connections, rejected
// ones (failed handshakes, a bad or missing client attestation, failed
// upstream dials), relayed ones, open ones, and the application bytes
// relayed each way. A client rejected in the handshake adds no byte.
type Stats = forward.Stats

// Sidecar is an RA-TLS terminating proxy. It is safe for concurrent use.
type Sidecar struct {
	proxy   *forward.Proxy
	server  *ratls.Server
	ownsSrv bool
	ln      net.Listener
	log     *slog.Logger

	serveErr  chan error
	closeOnce sync.Once
	closeErr  error
}

// New starts a sidecar. ctx bounds the start only (the server's first
// certificate request, the listen). Close it to stop it.
func New(ctx context.Context, cfg Config) (*Sidecar, error) {
	if cfg.Upstream == "" {
		return nil, errors.New("sidecar: Config.Upstream is empty")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Sidecar{server: cfg.Server, log: log, serveErr: make(chan error, 1)}
	if s.server == nil {
		if cfg.ServerConfig.Logger == nil {
			cfg.ServerConfig.Logger = log
		}
		srv, err := ratls.NewServer(ctx, cfg.ServerConfig)
		if err != nil {
			return nil, err
		}
		s.server, s.ownsSrv = srv, true
	}
	s.ln = cfg.Listener
	if s.ln == nil {
		addr := cfg.Listen
		if addr == "" {
			addr = "127.0.0.1:0"
		}
		var lc net.ListenConfig
		ln, err := lc.Listen(ctx, "tcp", addr)
		if err != nil {
			s.closeServer()
			return nil, err
		}
		s.ln = ln
	}
	tlsConfig := s.server.TLSConfig()
	// The sidecar's contract is "no certificate, no bytes": enforce it even
	// if the server config asked for less.
	if tlsConfig.ClientAuth < tls.RequireAnyClientCert {
		tlsConfig = tlsConfig.Clone()
		tlsConfig.ClientAuth = tls.RequireAnyClientCert
	}
	network, address := upstreamAddr(cfg.Upstream)
	timeout := cfg.HandshakeTimeout
	if timeout <= 0 {
		timeout = DefaultHandshakeTimeout
	}
	s.proxy = &forward.Proxy{
		Handshake:        s.handshake(tlsConfig),
		Dial:             func(ctx context.Context) (net.Conn, error) { return (&net.Dialer{}).DialContext(ctx, network, address) },
		HandshakeTimeout: timeout,
		IdleTimeout:      cfg.IdleTimeout,
		Logger:           log,
	}
	go func() { s.serveErr <- s.proxy.Serve(s.ln) }()
	log.Info("sidecar: listening", "addr", s.ln.Addr().String(), "upstream", cfg.Upstream,
		"client_attestation", s.server.AttestsClients())
	return s, nil
}

// upstreamAddr splits "unix:/path" from a TCP address.
func upstreamAddr(s string) (network, address string) {
	if p, ok := strings.CutPrefix(s, "unix:"); ok {
		return "unix", p
	}
	return "tcp", s
}

func (s *Sidecar) handshake(cfg *tls.Config) func(context.Context, net.Conn) (net.Conn, error) {
	return func(ctx context.Context, c net.Conn) (net.Conn, error) {
		tc := tls.Server(c, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, err
		}
		peers := tc.ConnectionState().PeerCertificates
		if len(peers) == 0 {
			return nil, fmt.Errorf("%w: client", ratls.ErrNoPeerCertificate)
		}
		remote := c.RemoteAddr().String()
		r, ok := s.server.Report(tc)
		switch {
		case !ok:
			s.log.Debug("sidecar: client admitted without attestation (InsecureSkipClientAttestation)",
				"remote", remote, "subject", peers[0].Subject.String())
		case r.Simulated:
			s.log.Info("sidecar: client admitted with no quote (AllowSimulator); NOT attested",
				"remote", remote, "subject", peers[0].Subject.String())
		default:
			attrs := []any{"remote", remote, "mrtd", fmt.Sprintf("%x", r.MRTD), "tcb_status", string(r.TCBStatus)}
			if r.App != nil {
				attrs = append(attrs, "app_id", fmt.Sprintf("%x", r.App.AppID), "compose_hash", fmt.Sprintf("%x", r.App.ComposeHash))
			}
			s.log.Info("sidecar: attested client", attrs...)
		}
		return tc, nil
	}
}

// Addr is the address clients connect to.
func (s *Sidecar) Addr() string { return s.ln.Addr().String() }

// Stats returns a snapshot of the sidecar's counters.
func (s *Sidecar) Stats() Stats { return s.proxy.Stats() }

// BytesReceived is Stats().BytesFromClients: application bytes received
// from clients after a successful handshake.
func (s *Sidecar) BytesReceived() int64 { return s.proxy.Stats().BytesFromClients }

// Shutdown stops accepting and waits for open connections, handshakes in
// progress included, to end by themselves; when ctx ends it closes them.
// It then closes the Server the sidecar created.
func (s *Sidecar) Shutdown(ctx context.Context) error {
	err := s.proxy.Shutdown(ctx)
	s.finish()
	return err
}

// Close closes the listener and every connection (ending handshakes in
// progress) and waits for all the sidecar's goroutines, then closes the
// Server the sidecar created.
func (s *Sidecar) Close() error {
	err := s.proxy.Close()
	if ferr := s.finish(); err == nil {
		err = ferr
	}
	return err
}

func (s *Sidecar) finish() error {
	s.closeOnce.Do(func() {
		if err := <-s.serveErr; err != nil && !errors.Is(err, forward.ErrClosed) {
			s.closeErr = err
		}
		if err := s.closeServer(); s.closeErr == nil {
			s.closeErr = err
		}
	})
	return s.closeErr
}

func (s *Sidecar) closeServer() error {
	if s.ownsSrv {
		return s.server.Close()
	}
	return nil
}
