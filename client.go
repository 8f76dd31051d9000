package ratls

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"time"

	"github.com/teesql/ratls/dcap"
	"github.com/teesql/ratls/internal/agent"
	"github.com/teesql/ratls/internal/certsource"
)

const defaultHandshakeTimeout = 30 * time.Second

// Client dials attested servers. It is safe for concurrent use.
type Client struct {
	pv               *peerVerifier
	certs            *certsource.Source
	handshakeTimeout time.Duration
}

// NewClient checks cfg, obtains the client certificate (from the guest agent
// unless cfg.ClientCertificate is set; ErrMissingDstackSocket if no agent is
// reachable), and starts its renewal. ctx bounds agent discovery and the
// first certificate request only. Call Close to stop the renewal.
//
// Settings that weaken the attestation checks (a NoopVerifier, an empty
// MRTD allowlist, AllowDebugMode, AllowSimulator, non-default TCB statuses)
// are logged as warnings, once per Client.
func NewClient(ctx context.Context, cfg Config) (*Client, error) {
	pol, log, now, err := commonSettings(cfg.Policy, "Policy", cfg.Logger, cfg.Now, cfg.CertificateMaxAge)
	if err != nil {
		return nil, err
	}
	timeout := cfg.HandshakeTimeout
	switch {
	case timeout < 0:
		return nil, fmt.Errorf("%w: negative HandshakeTimeout %v", ErrConfig, timeout)
	case timeout == 0:
		timeout = defaultHandshakeTimeout
	}
	verifier, err := defaultVerifier(cfg.Verifier, cfg.Now, log)
	if err != nil {
		return nil, err
	}
	certs, err := newCertSource(ctx, certOptions{
		static:   cfg.ClientCertificate,
		endpoint: cfg.DstackEndpoint,
		request:  agent.Request{ClientAuth: true},
		maxAge:   cfg.CertificateMaxAge,
		now:      now,
		log:      log,
		hooks:    cfg.hooks,
		field:    "Config.ClientCertificate",
	})
	if err != nil {
		return nil, err
	}
	warnInsecure(log, pol, verifier, "server")
	return &Client{
		pv: newPeerVerifier(verifierOptions{
			policy:   pol,
			verifier: verifier,
			cacheTTL: cfg.CacheTTL,
			now:      now,
			log:      log,
			timeout:  timeout,
			peer:     "server",
		}),
		certs:            certs,
		handshakeTimeout: timeout,
	}, nil
}

// commonSettings checks and completes what Config and ServerConfig share:
// the policy (its field named policyField in errors), the logger, the clock
// and the certificate age limit.
func commonSettings(p Policy, policyField string, log *slog.Logger, now func() time.Time, maxAge time.Duration) (*policy, *slog.Logger, func() time.Time, error) {
	pol, err := compilePolicy(p, policyField)
	if err != nil {
		return nil, nil, nil, err
	}
	if maxAge < 0 {
		return nil, nil, nil, fmt.Errorf("%w: negative CertificateMaxAge %v", ErrConfig, maxAge)
	}
	if log == nil {
		log = slog.Default()
	}
	if now == nil {
		now = time.Now
	}
	return pol, log, now, nil
}

// defaultVerifier returns v, or DCAP with Intel's root and PCS.
func defaultVerifier(v Verifier, now func() time.Time, log *slog.Logger) (Verifier, error) {
	if v != nil {
		return v, nil
	}
	d, err := dcap.New(dcap.Options{Now: now, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("%w: default verifier: %w", ErrConfig, err)
	}
	return d, nil
}

// TLSConfig returns a client tls.Config for serverName whose
// VerifyConnection hook performs the attestation checks (on resumed
// sessions too), and which presents the client certificate to servers that
// ask for one. Use it with drivers that do their own dialling; Report then
// finds the connection's report.
//
// InsecureSkipVerify is set because X.509 chain validation is not what
// establishes trust: do not clear it, and do not replace VerifyConnection.
// The certificate's validity dates are still enforced. serverName is sent
// as SNI unless it is an IP address. The attestation checks are bounded by
// Config.HandshakeTimeout; use TLSConfigContext to bound them by a context
// too.
func (c *Client) TLSConfig(serverName string) *tls.Config {
	return c.tlsConfig(context.Background(), serverName)
}

// TLSConfigContext is TLSConfig for one handshake driven by code that has a
// context for it (a gRPC dial, a driver's connect): the attestation checks
// in VerifyConnection, quote verification and collateral fetches included,
// are bounded by ctx as well as by Config.HandshakeTimeout. crypto/tls does
// not hand the handshake's context to VerifyConnection, hence this.
//
// Once ctx ends, every handshake using the returned config fails: make one
// per handshake (or per dial), not one for the Client's lifetime.
func (c *Client) TLSConfigContext(ctx context.Context, serverName string) *tls.Config {
	return c.tlsConfig(ctx, serverName)
}

// tlsConfig binds the attestation checks to ctx.
func (c *Client) tlsConfig(ctx context.Context, serverName string) *tls.Config {
	return &tls.Config{
		ServerName: serverName,
		MinVersion: tls.VersionTLS12,
		// Trust comes from the quote, checked in VerifyConnection; the
		// server's certificate is issued by a per-app CA no one can know.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := c.pv.verify(ctx, cs)
			return err
		},
		GetClientCertificate: func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return certificate(cri.Context(), c.certs)
		},
	}
}

// Report returns the verified report of a connection whose handshake used
// one of c's configurations (DialContext, TLSConfig). It is the report of
// the latest successful verification of the connection's certificate.
func (c *Client) Report(conn *tls.Conn) (*Report, bool) {
	return reportOf(&c.pv.reports, conn)
}

func reportOf(reg *reportRegistry, conn *tls.Conn) (*Report, bool) {
	if conn == nil {
		return nil, false
	}
	cs := conn.ConnectionState()
	if !cs.HandshakeComplete || len(cs.PeerCertificates) == 0 {
		return nil, false
	}
	rep, ok := reg.get(cs.PeerCertificates[0])
	if !ok {
		return nil, false
	}
	return rep.clone(), true
}

// VerifyConnection runs the attestation checks on a completed handshake's
// state. Adapters that drive the handshake themselves (gRPC) call it; the
// checks are bounded by Config.HandshakeTimeout.
func (c *Client) VerifyConnection(cs tls.ConnectionState) (*Report, error) {
	return c.pv.verify(context.Background(), cs)
}

// Close stops certificate renewal. Connections stay open, and the current
// client certificate is presented until it expires.
func (c *Client) Close() error {
	c.certs.Close()
	return nil
}
