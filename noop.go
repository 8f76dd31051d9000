package ratls

import (
	"context"
	"log/slog"

	"github.com/teesql/ratls/tdx"
)

// NoopVerifier accepts every well-formed quote without checking a single
// signature: anyone can forge a quote that passes it. It exists for tests
// and for development against simulators. A Client or Server using one logs
// a warning when built, whether it came from NewNoopVerifier or not.
//
// The key binding (REPORTDATA against the certificate key) and the Policy's
// measurement checks still apply. Its verdicts carry no TCB status, so the
// TCB status check is skipped for them, and only for them: an empty status
// from any other Verifier (including one wrapping a NoopVerifier) is
// refused.
type NoopVerifier struct{}

// NewNoopVerifier returns a NoopVerifier after logging a warning to logger
// (nil: slog.Default()).
func NewNoopVerifier(logger *slog.Logger) *NoopVerifier {
	if logger == nil {
		logger = slog.Default()
	}
	logger.Warn("ratls: NoopVerifier in use: TDX quotes are NOT verified and anyone can forge one; tests and development only")
	return &NoopVerifier{}
}

// VerifyQuote parses quote and returns a verdict with no TCB status.
func (*NoopVerifier) VerifyQuote(_ context.Context, quote []byte) (*tdx.Verdict, error) {
	q, err := tdx.ParseQuote(quote)
	if err != nil {
		return nil, err
	}
	return &tdx.Verdict{Quote: q}, nil
}

// isNoop reports whether verdicts from v carry no TCB status by design. The
// test is on the exact type, so a wrapper never inherits the exemption.
func isNoop(v Verifier) bool {
	_, ok := v.(*NoopVerifier)
	return ok
}
