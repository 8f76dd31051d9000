package ratls

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"time"

	"github.com/teesql/ratls/tdx"
)

// VerifyQuote verifies a bare TDX quote with v and applies p to it: the
// checks a Client runs on a server's quote, for tools and audits that hold a
// quote rather than a connection. A nil v is DCAP with Intel's pinned root
// and collateral from Intel PCS, as in Config. ctx bounds the verifier's
// work (collateral fetches).
//
// A bare quote comes without a certificate, so nothing binds it to a key
// (its REPORTDATA is not checked), and without an event log, so a policy
// that pins ComposeHashes or AppIDs refuses it with ErrAppIdentity.
// AllowSimulator has no effect: there is a quote.
//
// Errors wrap the sentinels of connections: ErrConfig for a malformed
// policy; ErrQuoteInvalid when the quote is malformed or the verifier
// rejects it; ErrMRTDNotAllowed, ErrDebugMode, *TCBStatusError or
// ErrAppIdentity when the policy refuses it. In those four policy cases
// only, the report of the verified quote is returned with the error, so
// that callers can show what was refused (its TCB status, for instance);
// in every other case it is nil. A report with an error is never an
// acceptance.
//
// In the report, SourceOID and App are empty and ValidUntil is the
// verdict's (zero if the verifier gives no bound).
func VerifyQuote(ctx context.Context, quote []byte, p Policy, v Verifier, opts ...VerifyOption) (*Report, error) {
	pv, err := oneShotVerifier(p, v, opts)
	if err != nil {
		return nil, err
	}
	q, err := tdx.ParseQuote(quote)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrQuoteInvalid, err)
	}
	return pv.judge(ctx, quote, q, nil, time.Time{})
}

// VerifyCertificate runs on leaf the checks a Client runs on a server's
// certificate, outside a handshake: validity dates, extraction of the
// attestation, key binding, quote verification with v (nil: DCAP as in
// VerifyQuote), the policy p and the app identity pins. Nothing is cached.
//
// It does not prove that whoever presented leaf holds its private key; a
// handshake does. Use it for audits and tools, never to authenticate a
// connection: use a Client (or Server) for that.
//
// Errors and the report returned with a policy error are as for
// VerifyQuote, plus ErrNoPeerCertificate (nil leaf), ErrCertificateValidity,
// ErrNoQuote, ErrMalformedExtension and ErrKeyBinding. With
// p.AllowSimulator, a certificate without a quote is accepted with a
// Simulated report.
func VerifyCertificate(ctx context.Context, leaf *x509.Certificate, p Policy, v Verifier, opts ...VerifyOption) (*Report, error) {
	pv, err := oneShotVerifier(p, v, opts)
	if err != nil {
		return nil, err
	}
	if leaf == nil {
		return nil, fmt.Errorf("%w (nil certificate)", ErrNoPeerCertificate)
	}
	if err := pv.checkValidity(leaf, pv.now()); err != nil {
		return nil, err
	}
	return pv.verifyUncached(ctx, leaf)
}

// VerifyOption changes how VerifyQuote and VerifyCertificate judge.
type VerifyOption func(*oneShotOptions)

type oneShotOptions struct {
	now func() time.Time
	log *slog.Logger
}

// VerifyAt judges as of t instead of now: certificate validity, the expiry
// of the verdict, and the clock of the default DCAP verifier (a Verifier
// passed in keeps its own clock: set it to t too). For re-checking recorded
// evidence; a verification at a past time says nothing about now.
func VerifyAt(t time.Time) VerifyOption {
	return func(o *oneShotOptions) { o.now = func() time.Time { return t } }
}

// VerifyLogger sends the warnings a Client would log (insecure policy
// settings, a simulated peer accepted) to l. Default: none are logged, as
// the report and error say all there is to know.
func VerifyLogger(l *slog.Logger) VerifyOption {
	return func(o *oneShotOptions) { o.log = l }
}

// oneShotVerifier builds the verifier a Client would have, without cache
// or timeout of its own: the caller's ctx bounds it.
func oneShotVerifier(p Policy, v Verifier, opts []VerifyOption) (*peerVerifier, error) {
	o := oneShotOptions{now: time.Now, log: slog.New(slog.DiscardHandler)}
	for _, opt := range opts {
		opt(&o)
	}
	if o.log == nil {
		o.log = slog.New(slog.DiscardHandler)
	}
	pol, err := compilePolicy(p, "Policy")
	if err != nil {
		return nil, err
	}
	verifier, err := defaultVerifier(v, o.now, o.log)
	if err != nil {
		return nil, err
	}
	pol.warn(o.log, "peer")
	return newPeerVerifier(verifierOptions{
		policy:   pol,
		verifier: verifier,
		cacheTTL: -1,
		now:      o.now,
		log:      o.log,
		peer:     "peer",
	}), nil
}
