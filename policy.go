package ratls

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/teesql/ratls/tdx"
)

// defaultTCBStatuses are accepted when Policy.AcceptTCBStatuses is empty.
var defaultTCBStatuses = []tdx.TCBStatus{tdx.TCBUpToDate, tdx.TCBSWHardeningNeeded}

var knownTCBStatuses = []tdx.TCBStatus{
	tdx.TCBUpToDate,
	tdx.TCBSWHardeningNeeded,
	tdx.TCBConfigurationNeeded,
	tdx.TCBConfigurationAndSWHardeningNeeded,
	tdx.TCBOutOfDate,
	tdx.TCBOutOfDateConfigurationNeeded,
	tdx.TCBRevoked,
}

// policy is a Policy checked and decoded once, when a Client or Server is
// built, so that handshakes compare bytes rather than parse strings.
type policy struct {
	mrtds          [][]byte // 48 bytes each; empty: any
	composeHashes  [][]byte // 32 bytes each; empty: not pinned
	appIDs         [][]byte // 20 bytes each; empty: not pinned
	accept         []tdx.TCBStatus
	allowDebug     bool
	allowSimulator bool
}

// compilePolicy checks p; field names in errors are prefixed with name
// ("Policy" or "ClientPolicy").
func compilePolicy(p Policy, name string) (*policy, error) {
	c := &policy{allowDebug: p.AllowDebugMode, allowSimulator: p.AllowSimulator}
	var err error
	if c.mrtds, err = decodeHexList(p.MRTDs, name+".MRTDs", 48); err != nil {
		return nil, err
	}
	if c.composeHashes, err = decodeHexList(p.ComposeHashes, name+".ComposeHashes", 32); err != nil {
		return nil, err
	}
	if c.appIDs, err = decodeHexList(p.AppIDs, name+".AppIDs", 20); err != nil {
		return nil, err
	}
	c.accept = defaultTCBStatuses
	if len(p.AcceptTCBStatuses) > 0 {
		for i, s := range p.AcceptTCBStatuses {
			if !slices.Contains(knownTCBStatuses, s) {
				return nil, fmt.Errorf("%w: %s.AcceptTCBStatuses[%d]: unknown TCB status %q", ErrConfig, name, i, s)
			}
		}
		c.accept = slices.Clone(p.AcceptTCBStatuses)
	}
	return c, nil
}

// decodeHexList decodes measurements of size bytes given as hex, with or
// without 0x, in any case.
func decodeHexList(list []string, field string, size int) ([][]byte, error) {
	out := make([][]byte, 0, len(list))
	for i, s := range list {
		digits := strings.TrimSpace(s)
		if len(digits) >= 2 && digits[0] == '0' && (digits[1] == 'x' || digits[1] == 'X') {
			digits = digits[2:]
		}
		b, err := hex.DecodeString(digits)
		if err != nil {
			return nil, fmt.Errorf("%w: %s[%d]: %q is not hex: %v", ErrConfig, field, i, s, err)
		}
		if len(b) != size {
			return nil, fmt.Errorf("%w: %s[%d]: %q is %d bytes, want %d (%d hex digits)",
				ErrConfig, field, i, s, len(b), size, 2*size)
		}
		out = append(out, b)
	}
	return out, nil
}

// warnInsecure logs, once per Client or Server, every setting that weakens
// the checks of its peers ("server" or "client"): the policy's and an
// unverifying Verifier, however it was built (NewNoopVerifier warns, a
// composite literal does not).
func warnInsecure(log *slog.Logger, p *policy, v Verifier, peer string) {
	if isNoop(v) {
		log.Warn("ratls: the Verifier is a NoopVerifier: " + peer + " quotes are NOT verified and anyone can forge one; tests and development only")
	}
	p.warn(log, peer)
}

// warn logs the dangers of the policy. peer is "server" or "client".
func (p *policy) warn(log *slog.Logger, peer string) {
	if len(p.mrtds) == 0 {
		log.Warn("ratls: the MRTD allowlist is empty: any " + peer + " TD image is accepted; pin MRTDs (and ComposeHashes) in production")
	}
	if p.allowSimulator {
		log.Warn("ratls: AllowSimulator is on: " + peer + "s whose certificate carries no TDX quote are accepted WITHOUT any attestation; development only")
	}
	if p.allowDebug {
		log.Warn("ratls: AllowDebugMode is on: debug TDs, whose memory the host can read, are accepted as " + peer + "s; never in production")
	}
	for _, s := range p.accept {
		if !slices.Contains(defaultTCBStatuses, s) {
			log.Warn("ratls: accepting "+peer+"s whose platform TCB status is "+string(s)+": they may miss security fixes", "accepted", p.accept)
		}
	}
}

// check applies the policy to a report whose quote has been verified.
// skipTCB is set only for verdicts of NoopVerifier, which has no status.
// appErr says why r.App is nil, if it is.
func (p *policy) check(r *Report, skipTCB bool, appErr error) error {
	if len(p.mrtds) > 0 && !containsBytes(p.mrtds, r.MRTD[:]) {
		return fmt.Errorf("%w: MRTD %x is not in the allowlist %s", ErrMRTDNotAllowed, r.MRTD, hexList(p.mrtds))
	}
	if r.Debug && !p.allowDebug {
		return fmt.Errorf("%w: TD attributes %x have the debug bit set, and AllowDebugMode is off", ErrDebugMode, r.TDAttributes)
	}
	if !skipTCB && !slices.Contains(p.accept, r.TCBStatus) {
		return &TCBStatusError{
			Status:      r.TCBStatus,
			AdvisoryIDs: slices.Clone(r.AdvisoryIDs),
			Accepted:    slices.Clone(p.accept),
		}
	}
	if len(p.composeHashes) == 0 && len(p.appIDs) == 0 {
		return nil
	}
	if r.App == nil {
		return fmt.Errorf("%w: app identity is pinned but the peer's cannot be established: %w", ErrAppIdentity, appErr)
	}
	if len(p.composeHashes) > 0 && !containsBytes(p.composeHashes, r.App.ComposeHash) {
		return fmt.Errorf("%w: compose hash %x is not in the allowlist %s", ErrAppIdentity, r.App.ComposeHash, hexList(p.composeHashes))
	}
	if len(p.appIDs) > 0 && !containsBytes(p.appIDs, r.App.AppID) {
		return fmt.Errorf("%w: app id %x is not in the allowlist %s", ErrAppIdentity, r.App.AppID, hexList(p.appIDs))
	}
	return nil
}

func containsBytes(list [][]byte, b []byte) bool {
	return slices.ContainsFunc(list, func(v []byte) bool { return bytes.Equal(v, b) })
}

func hexList(list [][]byte) string {
	parts := make([]string, len(list))
	for i, v := range list {
		parts[i] = hex.EncodeToString(v)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}
