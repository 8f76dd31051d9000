package ratls

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/teesql/ratls/ext"
	"github.com/teesql/ratls/internal/agent"
	"github.com/teesql/ratls/internal/certsource"
)

// agentTimeout bounds every call to the guest agent: the SDK's HTTP client
// has no timeout of its own.
const agentTimeout = 10 * time.Second

// hooks replace machine-dependent parts in tests: the agent discovery reads
// the real environment and filesystem otherwise.
type hooks struct {
	sockets    []string            // nil: agent.DefaultSockets()
	getenv     func(string) string // nil: os.Getenv
	minBackoff time.Duration       // renewal retry; zero: certsource default
	newTimer   func(time.Duration) (<-chan time.Time, func() bool)
}

// certOptions describes where a Client's or Server's own certificate comes
// from.
type certOptions struct {
	static   *tls.Certificate // set: served as is, no agent
	endpoint string
	request  agent.Request
	maxAge   time.Duration
	now      func() time.Time
	log      *slog.Logger
	hooks    *hooks
	field    string // "Config.ClientCertificate", for messages
}

// newCertSource returns the source of our own certificate: the static one,
// or one from the guest agent, fetched now (bounded by ctx) and then renewed
// in the background.
func newCertSource(ctx context.Context, o certOptions) (*certsource.Source, error) {
	if o.static != nil {
		if len(o.static.Certificate) == 0 || o.static.PrivateKey == nil {
			return nil, fmt.Errorf("%w: %s has no certificate or no private key", ErrConfig, o.field)
		}
		return certsource.Static(o.static), nil
	}
	h := o.hooks
	if h == nil {
		h = &hooks{}
	}
	sockets, getenv := h.sockets, h.getenv
	if sockets == nil {
		sockets = agent.DefaultSockets()
	}
	if getenv == nil {
		getenv = os.Getenv
	}
	endpoint, err := agent.Discover(ctx, o.endpoint, getenv, sockets)
	if err != nil {
		var ne *agent.NoEndpointError
		if errors.As(err, &ne) {
			return nil, fmt.Errorf("%w: %s", ErrMissingDstackSocket, ne.Reason)
		}
		return nil, fmt.Errorf("%w: %v", ErrMissingDstackSocket, err)
	}
	source := "standard socket"
	switch {
	case o.endpoint != "":
		source = "DstackEndpoint"
	case getenv(agent.EnvSimulatorEndpoint) != "":
		source = agent.EnvSimulatorEndpoint
	}
	client := agent.New(endpoint, agentTimeout, o.log)
	fetch := func(ctx context.Context) (*tls.Certificate, error) {
		cert, err := client.Certificate(ctx, o.request)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrAgent, err)
		}
		// Not fatal (the agent is trusted to issue what it issues), but a
		// certificate without a quote will be refused by every peer.
		if _, err := ext.FromCertificate(cert.Leaf); err != nil {
			o.log.Warn("ratls: the dstack guest agent issued a certificate without a usable attestation; attested peers will refuse it",
				"endpoint", endpoint, "err", err)
		}
		return cert, nil
	}
	src, err := certsource.New(ctx, certsource.Options{
		Fetch:      fetch,
		MaxAge:     o.maxAge,
		MinBackoff: h.minBackoff,
		Now:        o.now,
		Logger:     o.log,
		NewTimer:   h.newTimer,
	})
	if err != nil {
		if !errors.Is(err, ErrAgent) {
			err = fmt.Errorf("%w: %w", ErrAgent, err)
		}
		// Discovery takes an explicit endpoint as given (there is no other
		// to try), and a probed socket may die just after its probe:
		// nothing listening there is as good as no agent, and callers
		// checking for "not in a CVM" must see it so.
		if agent.Unreachable(err) {
			err = fmt.Errorf("%w: %s %q accepts no connections: %w", ErrMissingDstackSocket, source, endpoint, err)
		}
		return nil, err
	}
	return src, nil
}

// certificate returns the current certificate from src, as a handshake
// callback does: an error always wraps ErrAgent.
func certificate(ctx context.Context, src *certsource.Source) (*tls.Certificate, error) {
	cert, err := src.Certificate(ctx)
	if err != nil && !errors.Is(err, ErrAgent) {
		err = fmt.Errorf("%w: %w", ErrAgent, err)
	}
	return cert, err
}
