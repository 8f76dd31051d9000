package dcap

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"strings"
	"time"

	"github.com/teesql/ratls/tdx"
)

// VerifyQuote verifies quote at the Verifier's clock with collateral from
// the cache or, on a miss or when the cached collateral nears its
// nextUpdate, from the collateral source. It waits for a fetch no longer
// than ctx allows.
func (v *Verifier) VerifyQuote(ctx context.Context, quote []byte) (*tdx.Verdict, error) {
	now := v.now()
	q, err := parseQuote(quote)
	if err != nil {
		return nil, err
	}
	chain, err := verifyPCKChain(q.PCKChainPEM, v.root, &v.cas, now)
	if err != nil {
		return nil, err
	}
	key := cacheKey{source: v.source, root: v.rootFP, fmspc: chain.fmspc, ca: chain.caType}
	cc, grace, err := v.cache.get(ctx, key, now, v.collateralLoader(chain.fmspc, chain.caType))
	if err != nil {
		return nil, err
	}
	return v.verify(q, chain, cc, now, grace)
}

// VerifyWithCollateral verifies quote against the given collateral at time
// now, with no network access (air-gapped use). Every signature of the
// collateral is checked on each call; the cache is not used.
func (v *Verifier) VerifyWithCollateral(ctx context.Context, quote []byte, c *Collateral, now time.Time) (*tdx.Verdict, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	q, err := parseQuote(quote)
	if err != nil {
		return nil, err
	}
	chain, err := verifyPCKChain(q.PCKChainPEM, v.root, &v.cas, now)
	if err != nil {
		return nil, err
	}
	cc, err := checkCollateral(v.root, c)
	if err != nil {
		return nil, err
	}
	return v.verify(q, chain, cc, now, 0)
}

// parseQuote parses a quote, telling apart quotes this package does not
// verify (ErrUnsupportedQuote) from broken ones (ErrMalformedQuote).
func parseQuote(b []byte) (*tdx.Quote, error) {
	if len(b) >= 8 {
		version := binary.LittleEndian.Uint16(b[0:])
		keyType := binary.LittleEndian.Uint16(b[2:])
		tee := binary.LittleEndian.Uint32(b[4:])
		switch {
		case version != 4 && version != 5:
			return nil, fmt.Errorf("%w: version %d, want 4 or 5", ErrUnsupportedQuote, version)
		case tee != tdx.TEETypeTDX:
			return nil, fmt.Errorf("%w: TEE type %#x, want %#x (TDX)", ErrUnsupportedQuote, tee, tdx.TEETypeTDX)
		case keyType != tdx.AttestKeyTypeECDSA:
			return nil, fmt.Errorf("%w: attestation key type %d, want %d (ECDSA P-256)", ErrUnsupportedQuote, keyType, tdx.AttestKeyTypeECDSA)
		}
	}
	q, err := tdx.ParseQuote(b)
	if err != nil {
		msg := strings.TrimPrefix(err.Error(), tdx.ErrMalformed.Error()+": ")
		return nil, fmt.Errorf("%w: %s", ErrMalformedQuote, msg)
	}
	return q, nil
}

// verify runs the per-quote checks against collateral whose signatures are
// already verified. The order follows Intel's QVL: revocation, QE report
// signature and binding, quote signature, QE identity, then the TCB.
func (v *Verifier) verify(q *tdx.Quote, chain *pckChain, cc *checkedCollateral, now time.Time, grace time.Duration) (*tdx.Verdict, error) {
	if err := cc.checkTime(now, grace); err != nil {
		return nil, err
	}
	if chain.caType != cc.caType || !bytes.Equal(chain.leaf.RawIssuer, cc.pckCAName) {
		return nil, fmt.Errorf("%w: the PCK CRL is for the %s CA, the PCK certificate is issued by the %s CA (%q)",
			ErrCollateralMismatch, cc.caType, chain.caType, chain.leaf.Issuer.CommonName)
	}
	if cc.rootCRL.has(chain.ca.SerialNumber) {
		return nil, fmt.Errorf("%w: PCK CA certificate %q (serial %x) is in the root CA CRL", ErrRevoked, chain.ca.Subject.CommonName, chain.ca.SerialNumber)
	}
	if cc.pckCRL.has(chain.leaf.SerialNumber) {
		return nil, fmt.Errorf("%w: PCK certificate (serial %x) is in the PCK CRL", ErrRevoked, chain.leaf.SerialNumber)
	}

	if !verifyRawSig(chain.leafKey, q.QEReport.Raw(), q.QEReportSignature[:]) {
		return nil, fmt.Errorf("%w: signature %x does not verify with the PCK certificate key", ErrQEReportSignature, q.QEReportSignature)
	}
	h := sha256.New()
	h.Write(q.AttestKey[:])
	h.Write(q.QEAuthData)
	var want [64]byte
	h.Sum(want[:0])
	if q.QEReport.ReportData != want {
		return nil, fmt.Errorf("%w: QE REPORTDATA %x, want %x (SHA-256 of attestation key and QE auth data, then zeros)",
			ErrQEBinding, q.QEReport.ReportData, want)
	}
	ak, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append([]byte{4}, q.AttestKey[:]...))
	if err != nil {
		return nil, fmt.Errorf("%w: attestation key %x is not a P-256 point", ErrQuoteSignature, q.AttestKey)
	}
	if !verifyRawSig(ak, q.SignedBytes(), q.Signature[:]) {
		return nil, fmt.Errorf("%w: signature %x does not verify with attestation key %x", ErrQuoteSignature, q.Signature, q.AttestKey)
	}

	qeLevel, err := checkQEIdentity(cc.qeIdentity, &q.QEReport)
	if err != nil {
		return nil, err
	}
	if !strings.EqualFold(cc.fmspc, chain.fmspc) {
		return nil, fmt.Errorf("%w: TCB info is for FMSPC %s, the PCK certificate has FMSPC %s", ErrFMSPCMismatch, cc.fmspc, chain.fmspc)
	}
	if !strings.EqualFold(cc.tcbInfo.PCEID, chain.pceID) {
		return nil, fmt.Errorf("%w: TCB info is for PCE ID %s, the PCK certificate has PCE ID %s", ErrCollateralMismatch, strings.ToUpper(cc.tcbInfo.PCEID), chain.pceID)
	}
	if q.Body.MRSignerSEAM != [48]byte{} {
		return nil, fmt.Errorf("%w: MRSIGNERSEAM %x, want zero (Intel)", ErrSEAMSigner, q.Body.MRSignerSEAM)
	}
	if q.BodyType == tdx.BodyTypeTD15 && q.Body.MRServiceTD != [48]byte{} {
		return nil, fmt.Errorf("%w: MRSERVICETD %x, want zero (no service TD)", ErrSEAMSigner, q.Body.MRServiceTD)
	}
	status, advisories, err := tcbVerdict(cc.tcbInfo, chain, &q.Body, qeLevel)
	if err != nil {
		return nil, err
	}

	validUntil := chain.notAfter
	for _, t := range []time.Time{cc.expires.Add(grace), cc.certsNotAfter} {
		if t.Before(validUntil) {
			validUntil = t
		}
	}
	return &tdx.Verdict{
		Quote:       q,
		TCBStatus:   status,
		AdvisoryIDs: advisories,
		FMSPC:       chain.fmspc,
		ValidUntil:  validUntil,
	}, nil
}
