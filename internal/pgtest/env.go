package pgtest

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/teesql/ratls"
	"github.com/teesql/ratls/ratlstest"
)

// Env is a simulated TEE stack with an RA-TLS sidecar in front of the local
// PostgreSQL, and a client trusting it: what an application in a CVM sees of
// a TeeSQL cluster.
type Env struct {
	// Stack is the simulated TEE: test DCAP authority, PCCS and agent
	// doubles.
	Stack *ratlstest.Stack
	// Client is an attested client trusting Stack's test root, with the
	// stack's TD pinned.
	Client *ratls.Client
	// Sidecar serves RA-TLS in front of the local PostgreSQL (Addr).
	Sidecar *ratlstest.Sidecar
}

// Quiet is a logger for the stack: the test PKI warns loudly, by design, on
// every verifier it builds.
func Quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// Stack starts a simulated TEE stack (no PostgreSQL needed) and a client
// trusting it, closed when t ends.
func Stack(t testing.TB) (*ratlstest.Stack, *ratls.Client) {
	t.Helper()
	st := ratlstest.StartStack(t, ratlstest.StackOptions{Logger: Quiet()})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client, err := st.NewClient(ctx)
	if err != nil {
		t.Fatalf("pgtest: NewClient: %v", err)
	}
	return st, client
}

// Start is Setup, then Stack, then a sidecar in front of PostgreSQL.
func Start(t testing.TB) *Env {
	t.Helper()
	Setup(t)
	st, client := Stack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sc, err := st.NewSidecar(ctx, Addr)
	if err != nil {
		t.Fatalf("pgtest: NewSidecar: %v", err)
	}
	return &Env{Stack: st, Client: client, Sidecar: sc}
}

// DSN is a TeeSQL DSN for user through the sidecar.
func (e *Env) DSN(user string, params ...string) string {
	return DSN(user, e.Sidecar.Addr(), params...)
}

// Adversary starts an adversarial server of kind, deviating from the
// stack's TD.
func (e *Env) Adversary(t testing.TB, kind ratlstest.AdversaryKind) *ratlstest.Adversary {
	t.Helper()
	return Adversary(t, e.Stack, kind)
}

// Adversary starts an adversarial server of kind on st.
func Adversary(t testing.TB, st *ratlstest.Stack, kind ratlstest.AdversaryKind) *ratlstest.Adversary {
	t.Helper()
	a, err := st.NewAdversary(kind)
	if err != nil {
		t.Fatalf("pgtest: NewAdversary(%v): %v", kind, err)
	}
	return a
}

// Refusals are the adversaries every adapter must refuse, with the sentinel
// each refusal must match.
var Refusals = []struct {
	Kind ratlstest.AdversaryKind
	Err  error
}{
	{ratlstest.SwappedKey, ratls.ErrKeyBinding},
	{ratlstest.DebugTD, ratls.ErrDebugMode},
	{ratlstest.WrongMRTD, ratls.ErrMRTDNotAllowed},
	{ratlstest.NoAttestation, ratls.ErrNoQuote},
	{ratlstest.MismatchedQuotes, ratls.ErrMalformedExtension},
}
