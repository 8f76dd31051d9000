package ratlstest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/teesql/ratls"
	"github.com/teesql/ratls/dcap"
)

// StackOptions configures NewStack. The zero value simulates DefaultTD with
// V0 certificates valid for DefaultValidity.
type StackOptions struct {
	// TD is the simulated trust domain, served by the agent and pinned in
	// the stack's policies (MRTD and compose hash). Zero fields: DefaultTD.
	TD TD
	// Format is how the agent's certificates carry the attestation.
	Format Format
	// Validity is the default certificate lifetime. Zero: DefaultValidity.
	Validity time.Duration
	// Logger receives every component's logs. Nil: slog.Default().
	Logger *slog.Logger
}

// Stack is a complete simulated TEE environment: a test DCAP PKI, a PCCS
// double serving its collateral, a dstack agent double issuing RA-TLS
// certificates attested by it, and client and server configurations that
// trust that PKI (and nothing else does). Everything listens on 127.0.0.1
// or a unix socket in a temporary directory; Close shuts it all down,
// including the clients, servers, sidecars and adversaries made with its
// New methods.
//
// The fields are set by NewStack; change the configs' copies, not the
// fields, to vary them per client.
type Stack struct {
	// Authority is the test DCAP PKI.
	Authority *Authority
	// PCCS serves the authority's collateral.
	PCCS *PCCS
	// Agent is the dstack agent double.
	Agent *Agent
	// Verifier trusts the test root with collateral from PCCS. Config and
	// ServerConfig share it, and with it one collateral cache: the PCCS is
	// asked once per collateral item however many handshakes run.
	Verifier *dcap.Verifier
	// Config is a client configuration: Verifier, a client certificate from
	// Agent (over its unix socket), and a Policy pinning the TD's MRTD and
	// compose hash.
	Config ratls.Config
	// ServerConfig is the matching server configuration: a certificate
	// from Agent, clients verified with Verifier under the same policy.
	ServerConfig ratls.ServerConfig

	mu      sync.Mutex
	closers []io.Closer
	closed  bool
}

// NewStack starts a Stack. Close it when done.
func NewStack(opts StackOptions) (*Stack, error) {
	s := &Stack{}
	if err := s.start(opts); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Stack) start(opts StackOptions) (err error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	if s.Authority, err = NewAuthority(AuthorityOptions{Logger: log}); err != nil {
		return err
	}
	if s.PCCS, err = NewPCCS(s.Authority); err != nil {
		return err
	}
	if err = s.add(s.PCCS); err != nil {
		return err
	}
	if s.Verifier, err = s.PCCS.NewVerifier(dcap.Options{Logger: log}); err != nil {
		return err
	}
	s.Agent, err = NewAgent(s.Authority, AgentOptions{TD: opts.TD, Format: opts.Format, Validity: opts.Validity, Logger: log})
	if err != nil {
		return err
	}
	if err = s.add(s.Agent); err != nil {
		return err
	}
	td := s.Agent.TD()
	policy := ratls.Policy{MRTDs: []string{td.MRTDHex()}, ComposeHashes: []string{td.ComposeHashHex()}}
	s.Config = ratls.Config{
		Policy:         policy,
		Verifier:       s.Verifier,
		DstackEndpoint: s.Agent.SocketPath(),
		Logger:         log,
	}
	s.ServerConfig = ratls.ServerConfig{
		ClientPolicy:   policy,
		Verifier:       s.Verifier,
		DstackEndpoint: s.Agent.SocketPath(),
		Logger:         log,
		Subject:        "localhost",
		AltNames:       []string{"localhost", "127.0.0.1"},
	}
	return nil
}

// errStackClosed is returned by the New methods after Close.
var errStackClosed = errors.New("ratlstest: stack is closed")

// add registers c to be closed by Close (in reverse order). After Close, it
// closes c at once and fails.
func (s *Stack) add(c io.Closer) error {
	s.mu.Lock()
	closed := s.closed
	if !closed {
		s.closers = append(s.closers, c)
	}
	s.mu.Unlock()
	if closed {
		c.Close()
		return errStackClosed
	}
	return nil
}

// NewClient returns a client made from Config, closed with the stack.
func (s *Stack) NewClient(ctx context.Context) (*ratls.Client, error) {
	c, err := ratls.NewClient(ctx, s.Config)
	if err != nil {
		return nil, err
	}
	if err := s.add(c); err != nil {
		return nil, err
	}
	return c, nil
}

// NewServer returns a server made from ServerConfig, closed with the stack.
func (s *Stack) NewServer(ctx context.Context) (*ratls.Server, error) {
	srv, err := ratls.NewServer(ctx, s.ServerConfig)
	if err != nil {
		return nil, err
	}
	if err := s.add(srv); err != nil {
		return nil, err
	}
	return srv, nil
}

// NewSidecar starts a sidecar with ServerConfig in front of upstream
// ("host:port"), closed with the stack.
func (s *Stack) NewSidecar(ctx context.Context, upstream string) (*Sidecar, error) {
	sc, err := NewSidecar(ctx, SidecarConfig{Upstream: upstream, ServerConfig: s.ServerConfig, Logger: s.ServerConfig.Logger})
	if err != nil {
		return nil, err
	}
	if err := s.add(sc); err != nil {
		return nil, err
	}
	return sc, nil
}

// NewAdversary starts an adversarial server of the given kind, deviating
// from the stack's TD, closed with the stack.
func (s *Stack) NewAdversary(kind AdversaryKind) (*Adversary, error) {
	a, err := NewAdversary(s.Authority, kind, s.Agent.TD())
	if err != nil {
		return nil, err
	}
	if err := s.add(a); err != nil {
		return nil, err
	}
	return a, nil
}

// Close closes everything the stack started, newest first, and returns
// the errors joined.
func (s *Stack) Close() error {
	s.mu.Lock()
	closers := s.closers
	s.closers, s.closed = nil, true
	s.mu.Unlock()
	var errs []error
	for i := len(closers) - 1; i >= 0; i-- {
		if err := closers[i].Close(); err != nil {
			errs = append(errs, fmt.Errorf("ratlstest: closing %T: %w", closers[i], err))
		}
	}
	return errors.Join(errs...)
}
