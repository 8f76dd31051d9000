package ratls

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/teesql/ratls/ext"
	"github.com/teesql/ratls/internal/flight"
	"github.com/teesql/ratls/internal/ttlcache"
	"github.com/teesql/ratls/tdx"
)

const (
	defaultCacheTTL = 10 * time.Minute
	// cacheSize bounds the verification cache. Each entry is a Report (about
	// 1 KB); a client talks to far fewer servers than this.
	cacheSize = 1024
	// reportDataTag is dstack's QuoteContentType::RaTlsCert prefix.
	reportDataTag = "ratls-cert:"
)

// peerVerifier runs the attestation checks on a peer's certificate. Client
// (on servers) and Server (on clients) share it; its policy is compiled
// once, so its verification cache is keyed by the certificate alone.
type peerVerifier struct {
	policy   *policy
	verifier Verifier
	// skipTCB: verdicts come from NoopVerifier and carry no TCB status.
	skipTCB bool
	// cache maps SHA-256(leaf DER) to its report; nil when disabled.
	// Policy and verifier are fixed per peerVerifier, so the leaf is the
	// whole key.
	cache   *ttlcache.Cache[[32]byte, *Report]
	ttl     time.Duration
	flight  flight.Group[[32]byte, *Report]
	reports reportRegistry
	now     func() time.Time
	log     *slog.Logger
	// timeout bounds a verification whose caller has no deadline.
	timeout time.Duration
	// peer names the other side in messages: "server" or "client".
	peer    string
	simOnce sync.Once
}

type verifierOptions struct {
	policy   *policy
	verifier Verifier
	cacheTTL time.Duration
	now      func() time.Time
	log      *slog.Logger
	timeout  time.Duration
	peer     string
}

func newPeerVerifier(o verifierOptions) *peerVerifier {
	v := &peerVerifier{
		policy:   o.policy,
		verifier: o.verifier,
		skipTCB:  isNoop(o.verifier),
		now:      o.now,
		log:      o.log,
		timeout:  o.timeout,
		peer:     o.peer,
	}
	switch {
	case o.cacheTTL == 0:
		v.ttl = defaultCacheTTL
	case o.cacheTTL > 0:
		v.ttl = o.cacheTTL
	}
	if v.ttl > 0 {
		v.cache = ttlcache.New[[32]byte, *Report](cacheSize)
	}
	return v
}

// verify checks a handshake's peer and remembers the report for Report.
// The result is the caller's own copy.
func (v *peerVerifier) verify(ctx context.Context, cs tls.ConnectionState) (*Report, error) {
	if len(cs.PeerCertificates) == 0 {
		return nil, fmt.Errorf("%w (the %s sent an empty certificate list)", ErrNoPeerCertificate, v.peer)
	}
	leaf := cs.PeerCertificates[0]
	rep, err := v.verifyLeaf(ctx, leaf)
	if err != nil {
		return nil, err
	}
	v.reports.put(leaf, rep)
	return rep.clone(), nil
}

// verifyLeaf returns the (shared, read-only) report for leaf, from the cache
// or by verifying it; concurrent calls for one leaf verify it once. The
// checks are bounded by ctx and by v.timeout.
func (v *peerVerifier) verifyLeaf(ctx context.Context, leaf *x509.Certificate) (*Report, error) {
	now := v.now()
	if err := v.checkValidity(leaf, now); err != nil {
		return nil, err
	}
	key := sha256.Sum256(leaf.Raw)
	if v.cache != nil {
		if rep, ok := v.cache.Get(key, now); ok {
			return rep, nil
		}
	}
	if v.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, v.timeout)
		defer cancel()
	}
	rep, err, _ := v.flight.Do(ctx, key, func(ctx context.Context) (*Report, error) {
		// Another caller may have finished verifying just before this one
		// got in.
		if v.cache != nil {
			if rep, ok := v.cache.Get(key, v.now()); ok {
				return rep, nil
			}
		}
		rep, err := v.verifyUncached(ctx, leaf)
		if err != nil {
			// A connection has no use for the report of a refused peer.
			return nil, err
		}
		if v.cache != nil && !rep.Simulated {
			v.cache.Put(key, rep, rep.ValidUntil, v.now())
		}
		return rep, nil
	})
	return rep, err
}

// checkValidity requires now to be within leaf's validity period.
func (v *peerVerifier) checkValidity(leaf *x509.Certificate, now time.Time) error {
	if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		return fmt.Errorf("%w: the %s certificate is valid from %s to %s, now is %s", ErrCertificateValidity, v.peer,
			leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return nil
}

// verifyUncached runs every check on leaf but its validity dates, cheapest
// first. When only the policy refuses the peer, its report comes with the
// error.
func (v *peerVerifier) verifyUncached(ctx context.Context, leaf *x509.Certificate) (*Report, error) {
	att, err := ext.FromCertificate(leaf)
	switch {
	case errors.Is(err, ext.ErrNoQuote):
		if v.policy.allowSimulator {
			return v.simulated(leaf), nil
		}
		return nil, fmt.Errorf("%w: the %s certificate has neither extension %s nor %s%.0w",
			ErrNoQuote, v.peer, ext.OIDAttestation, ext.OIDTDXQuote, err)
	case err != nil:
		return nil, fmt.Errorf("%w: %w", ErrMalformedExtension, err)
	}
	quote, err := tdx.ParseQuote(att.Quote)
	if err != nil {
		return nil, fmt.Errorf("%w: quote in %s: %w", ErrMalformedExtension, att.SourceOID, err)
	}
	if err := checkKeyBinding(leaf, quote); err != nil {
		return nil, err
	}
	return v.judge(ctx, att.Quote, quote, att, leaf.NotAfter)
}

// judge has the verifier check raw (parsed: quote), builds the report and
// applies the policy: what connections and one-shot verification share. att
// is the certificate's attestation and notAfter its expiry; a bare quote has
// neither (nil, zero). When only the policy refuses the quote, its report
// comes with the error.
func (v *peerVerifier) judge(ctx context.Context, raw []byte, quote *tdx.Quote, att *ext.Attestation, notAfter time.Time) (*Report, error) {
	verdict, err := v.verifier.VerifyQuote(ctx, raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrQuoteInvalid, err)
	}
	if verdict == nil {
		return nil, fmt.Errorf("%w: the verifier returned no verdict", ErrQuoteInvalid)
	}
	// The measurements reported are those of the bytes handed to the
	// verifier; a verifier that says it checked another quote is broken.
	if verdict.Quote != nil && verdict.Quote.Body != quote.Body {
		return nil, fmt.Errorf("%w: the verifier's verdict is about another quote", ErrQuoteInvalid)
	}

	now := v.now()
	// A verdict that has already stopped holding (collateral expired at
	// our clock) proves nothing now, whatever the verifier's own clock said.
	if !verdict.ValidUntil.IsZero() && !now.Before(verdict.ValidUntil) {
		return nil, fmt.Errorf("%w: the verifier's verdict held until %s, now is %s", ErrQuoteInvalid,
			verdict.ValidUntil.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	rep := &Report{
		QuoteVersion: quote.Header.Version,
		MRTD:         quote.Body.MRTD,
		RTMR:         quote.Body.RTMR,
		ReportData:   quote.Body.ReportData,
		TDAttributes: quote.Body.TDAttributes,
		Debug:        quote.Body.Debug(),
		TCBStatus:    verdict.TCBStatus,
		AdvisoryIDs:  append([]string(nil), verdict.AdvisoryIDs...),
		FMSPC:        verdict.FMSPC,
		VerifiedAt:   now,
		ValidUntil:   earliest(notAfter, verdict.ValidUntil),
	}
	if att != nil {
		rep.SourceOID = att.SourceOID.String()
	}
	if v.ttl > 0 {
		rep.ValidUntil = earliest(rep.ValidUntil, now.Add(v.ttl))
	}
	var appErr error
	switch {
	case att == nil:
		appErr = errors.New("a bare quote has no event log")
	case len(att.Events) == 0:
		appErr = fmt.Errorf("the %s certificate carries no event log", v.peer)
	default:
		rep.App, appErr = ext.VerifiedAppIdentity(att.Events, quote.Body.RTMR[3])
	}
	if err := v.policy.check(rep, v.skipTCB, appErr); err != nil {
		return rep, err
	}
	return rep, nil
}

// earliest returns the earlier of a and b, the zero time being no bound.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// checkKeyBinding requires the quote to have been made for leaf's key. The
// handshake already proved possession of that key, so a quote that binds it
// was made for this TLS endpoint, not copied from another one.
func checkKeyBinding(leaf *x509.Certificate, quote *tdx.Quote) error {
	want := expectedReportData(leaf)
	if subtle.ConstantTimeCompare(want[:], quote.Body.ReportData[:]) != 1 {
		return fmt.Errorf("%w: REPORTDATA is %x, want SHA-512(%q || SubjectPublicKeyInfo) = %x",
			ErrKeyBinding, quote.Body.ReportData, reportDataTag, want)
	}
	return nil
}

func expectedReportData(leaf *x509.Certificate) [64]byte {
	h := sha512.New()
	h.Write([]byte(reportDataTag))
	h.Write(leaf.RawSubjectPublicKeyInfo)
	var out [64]byte
	h.Sum(out[:0])
	return out
}

func (v *peerVerifier) simulated(leaf *x509.Certificate) *Report {
	v.simOnce.Do(func() {
		v.log.Warn("ratls: AllowSimulator: accepted a "+v.peer+" certificate that carries NO TDX quote; this peer is NOT attested. Development only.",
			"subject", leaf.Subject.String())
	})
	return &Report{Simulated: true, VerifiedAt: v.now(), ValidUntil: leaf.NotAfter}
}
