package ratls

import (
	"context"
	"crypto/tls"
	"fmt"

	"github.com/teesql/ratls/internal/agent"
	"github.com/teesql/ratls/internal/certsource"
)

// Server serves RA-TLS. It is safe for concurrent use.
type Server struct {
	pv    *peerVerifier // nil when client attestation is skipped
	certs *certsource.Source
}

// NewServer checks cfg, obtains the server certificate (from the guest
// agent unless cfg.Certificate is set; ErrMissingDstackSocket if none is
// reachable) and starts its renewal. ctx bounds agent discovery and the
// first certificate request only. Call Close to stop the renewal. Settings
// that weaken the client checks are logged as warnings, once, as by
// NewClient.
func NewServer(ctx context.Context, cfg ServerConfig) (*Server, error) {
	pol, log, now, err := commonSettings(cfg.ClientPolicy, "ClientPolicy", cfg.Logger, cfg.Now, cfg.CertificateMaxAge)
	if err != nil {
		return nil, err
	}
	var pv *peerVerifier
	var verifier Verifier
	if !cfg.InsecureSkipClientAttestation {
		verifier, err = defaultVerifier(cfg.Verifier, cfg.Now, log)
		if err != nil {
			return nil, err
		}
		pv = newPeerVerifier(verifierOptions{
			policy:   pol,
			verifier: verifier,
			cacheTTL: cfg.CacheTTL,
			now:      now,
			log:      log,
			timeout:  defaultHandshakeTimeout,
			peer:     "client",
		})
	}
	certs, err := newCertSource(ctx, certOptions{
		static:   cfg.Certificate,
		endpoint: cfg.DstackEndpoint,
		request:  agent.Request{Subject: cfg.Subject, AltNames: cfg.AltNames, ServerAuth: true},
		maxAge:   cfg.CertificateMaxAge,
		now:      now,
		log:      log,
		hooks:    cfg.hooks,
		field:    "ServerConfig.Certificate",
	})
	if err != nil {
		return nil, err
	}
	if pv == nil {
		log.Warn("ratls: InsecureSkipClientAttestation is on: client certificates are required but their attestation is NOT verified; any client with a certificate gets in")
	} else {
		warnInsecure(log, pol, verifier, "client")
	}
	return &Server{pv: pv, certs: certs}, nil
}

// TLSConfig returns the server tls.Config: it serves the RA-TLS certificate,
// requires a client certificate, and verifies the client's attestation in
// VerifyConnection (also on resumed sessions). Wrap a listener with
// tls.NewListener(l, s.TLSConfig()).
func (s *Server) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			return certificate(hello.Context(), s.certs)
		},
		// Any certificate: trust comes from its quote, not from a CA.
		ClientAuth: tls.RequireAnyClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := s.VerifyConnection(cs)
			return err
		},
	}
}

// Report returns the verified report of a client connection (nil, false if
// attestation was skipped or the handshake has not completed).
func (s *Server) Report(conn *tls.Conn) (*Report, bool) {
	if s.pv == nil {
		return nil, false
	}
	return reportOf(&s.pv.reports, conn)
}

// AttestsClients reports whether s verifies its clients' attestations:
// false when ServerConfig.InsecureSkipClientAttestation is set.
func (s *Server) AttestsClients() bool { return s.pv != nil }

// VerifyConnection runs the client attestation checks on a handshake state.
// With InsecureSkipClientAttestation it only requires a client certificate
// and returns a nil Report.
func (s *Server) VerifyConnection(cs tls.ConnectionState) (*Report, error) {
	if s.pv == nil {
		if len(cs.PeerCertificates) == 0 {
			return nil, fmt.Errorf("%w (the client sent none)", ErrNoPeerCertificate)
		}
		return nil, nil
	}
	return s.pv.verify(context.Background(), cs)
}

// Close stops certificate renewal. The current certificate is served until
// it expires.
func (s *Server) Close() error {
	s.certs.Close()
	return nil
}
