package ratlstest

import (
	"context"

	"github.com/teesql/ratls/internal/sidecar"
)

// DefaultSidecarHandshakeTimeout bounds a client's TLS handshake plus the
// upstream dial when SidecarConfig.HandshakeTimeout is zero.
const DefaultSidecarHandshakeTimeout = sidecar.DefaultHandshakeTimeout

// SidecarConfig configures a Sidecar: Upstream ("host:port" or
// "unix:/path", required); Server, or else ServerConfig from which the
// sidecar makes (and closes) its own ratls.Server; Listen or Listener
// (default "127.0.0.1:0"); HandshakeTimeout (default
// DefaultSidecarHandshakeTimeout), IdleTimeout (default none) and Logger
// (default slog.Default()).
type SidecarConfig = sidecar.Config

// Sidecar is an RA-TLS terminating proxy: it serves the RA-TLS certificate
// of a ratls.Server, requires every client to present a certificate (and,
// unless the server config says otherwise, a verified attestation), and
// only then connects to the upstream and relays bytes both ways. A rejected
// client causes no upstream connection and has no byte forwarded.
//
// It is the production sidecar that `ratls sidecar` runs in front of a
// database in a CVM; in tests it sits in front of an echo server or a real
// PostgreSQL. Its methods: Addr, Stats, BytesReceived, Shutdown, Close.
type Sidecar = sidecar.Sidecar

// SidecarStats counts what a Sidecar has done: Accepted, Rejected (failed
// handshakes, bad or missing client attestations, failed upstream dials),
// Relayed, Active, and BytesFromClients / BytesToClients (application
// bytes; a client rejected in the handshake adds none).
type SidecarStats = sidecar.Stats

// NewSidecar starts a sidecar. Close it to stop it.
func NewSidecar(ctx context.Context, cfg SidecarConfig) (*Sidecar, error) {
	return sidecar.New(ctx, cfg)
}
