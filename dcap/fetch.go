package dcap

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/teesql/ratls/tdx"
)

// maxResponseSize caps a collateral response. Real ones are a few KB; the
// PCK CRLs grow with revocations but stay far below this.
const maxResponseSize = 4 << 20

// FetchCollateral fetches (without verifying) the collateral for quote
// from the collateral source, for a connected machine to hand to an
// air-gapped one (VerifyWithCollateral). The quote's PCK certificate is read
// for its FMSPC and CA but not verified.
func (v *Verifier) FetchCollateral(ctx context.Context, quote []byte) (*Collateral, error) {
	q, err := parseQuote(quote)
	if err != nil {
		return nil, err
	}
	fmspc, ca, err := pckFacts(q)
	if err != nil {
		return nil, err
	}
	return v.fetchCollateral(ctx, fmspc, ca)
}

// pckFacts reads FMSPC and CA type from a quote's PCK chain without
// verifying it.
func pckFacts(q *tdx.Quote) (fmspc, ca string, err error) {
	ders, err := parsePEMCerts(q.PCKChainPEM, 3)
	if err != nil || len(ders) < 2 {
		return "", "", fmt.Errorf("%w: quote carries no PCK certificate and CA", ErrPCKChain)
	}
	leaf, err := x509.ParseCertificate(ders[0])
	if err != nil {
		return "", "", fmt.Errorf("%w: PCK certificate: %v", ErrPCKChain, err)
	}
	caCert, err := x509.ParseCertificate(ders[1])
	if err != nil {
		return "", "", fmt.Errorf("%w: PCK CA certificate: %v", ErrPCKChain, err)
	}
	if ca, err = pckCAType(caCert); err != nil {
		return "", "", fmt.Errorf("%w: %v", ErrPCKChain, err)
	}
	ext, err := pckExtensions(leaf)
	if err != nil {
		return "", "", fmt.Errorf("%w: PCK certificate SGX extensions: %v", ErrPCKChain, err)
	}
	if b, err := hex.DecodeString(ext.FMSPC); err != nil || len(b) != 6 {
		return "", "", fmt.Errorf("%w: PCK certificate FMSPC %q is not 6 bytes", ErrPCKChain, ext.FMSPC)
	}
	return strings.ToUpper(ext.FMSPC), ca, nil
}

// collateralLoader returns the fetch-and-verify function the cache runs
// for one FMSPC and CA type.
func (v *Verifier) collateralLoader(fmspc, ca string) loader {
	return loader{
		fetch: func(ctx context.Context) (*Collateral, error) { return v.fetchCollateral(ctx, fmspc, ca) },
		check: func(c *Collateral) (*checkedCollateral, error) {
			cc, err := checkCollateral(v.root, c)
			if err != nil {
				return nil, err
			}
			// Authentic collateral for another platform would fail every
			// verification until the next refresh: refuse it as a failed
			// fetch instead of caching it.
			if !strings.EqualFold(cc.fmspc, fmspc) {
				return nil, fmt.Errorf("%w: %s served TCB info for FMSPC %s, asked for %s", ErrFMSPCMismatch, v.source, cc.fmspc, fmspc)
			}
			if cc.caType != ca {
				return nil, fmt.Errorf("%w: %s served the PCK CRL of the %s CA, asked for %s", ErrCollateralMismatch, v.source, cc.caType, ca)
			}
			return cc, nil
		},
	}
}

// fetchCollateral fetches the four parts of the collateral concurrently:
// TCB info, QE identity, PCK CRL and root CA CRL.
func (v *Verifier) fetchCollateral(ctx context.Context, fmspc, ca string) (*Collateral, error) {
	rootCRLURL := v.source + "/sgx/certification/v4/rootcacrl"
	if v.source == IntelPCS {
		if len(v.root.CRLDistributionPoints) == 0 {
			return nil, fmt.Errorf("%w: the trusted root has no CRL distribution point to fetch the root CA CRL from", ErrFetch)
		}
		rootCRLURL = v.root.CRLDistributionPoints[0]
	}
	reqs := [4]struct {
		url  string
		body []byte
		hdr  http.Header
		err  error
	}{
		{url: v.source + "/tdx/certification/v4/tcb?fmspc=" + url.QueryEscape(fmspc)},
		{url: v.source + "/tdx/certification/v4/qe/identity"},
		{url: v.source + "/sgx/certification/v4/pckcrl?ca=" + url.QueryEscape(ca) + "&encoding=der"},
		{url: rootCRLURL},
	}
	var wg sync.WaitGroup
	for i := range reqs {
		wg.Go(func() {
			r := &reqs[i]
			r.body, r.hdr, r.err = v.get(ctx, r.url)
		})
	}
	wg.Wait()
	for _, r := range reqs {
		if r.err != nil {
			return nil, r.err
		}
	}

	c := &Collateral{}
	var err error
	tcb, qe, pck, root := &reqs[0], &reqs[1], &reqs[2], &reqs[3]
	if c.TCBInfo, c.TCBInfoSignature, err = signedBody(tcb.body, "tcbInfo"); err != nil {
		return nil, fmt.Errorf("%w: GET %s: %v", ErrFetch, tcb.url, err)
	}
	if tcb.hdr.Get("TCB-Info-Issuer-Chain") == "" && tcb.hdr.Get("SGX-TCB-Info-Issuer-Chain") != "" {
		tcb.hdr.Set("TCB-Info-Issuer-Chain", tcb.hdr.Get("SGX-TCB-Info-Issuer-Chain")) // PCS v3 name, kept by some PCCS
	}
	if c.TCBInfoIssuerChain, err = issuerChainHeader(tcb.hdr, "TCB-Info-Issuer-Chain"); err != nil {
		return nil, fmt.Errorf("%w: GET %s: %v", ErrFetch, tcb.url, err)
	}
	if c.QEIdentity, c.QEIdentitySignature, err = signedBody(qe.body, "enclaveIdentity"); err != nil {
		return nil, fmt.Errorf("%w: GET %s: %v", ErrFetch, qe.url, err)
	}
	if c.QEIdentityIssuerChain, err = issuerChainHeader(qe.hdr, "SGX-Enclave-Identity-Issuer-Chain"); err != nil {
		return nil, fmt.Errorf("%w: GET %s: %v", ErrFetch, qe.url, err)
	}
	if c.PCKCRL, err = crlBody(pck.body); err != nil {
		return nil, fmt.Errorf("%w: GET %s: %v", ErrFetch, pck.url, err)
	}
	if c.PCKCRLIssuerChain, err = issuerChainHeader(pck.hdr, "SGX-PCK-CRL-Issuer-Chain"); err != nil {
		return nil, fmt.Errorf("%w: GET %s: %v", ErrFetch, pck.url, err)
	}
	if c.RootCACRL, err = crlBody(root.body); err != nil {
		return nil, fmt.Errorf("%w: GET %s: %v", ErrFetch, root.url, err)
	}
	return c, nil
}

// get fetches one URL within FetchTimeout and ctx.
func (v *Verifier) get(ctx context.Context, u string) ([]byte, http.Header, error) {
	ctx, cancel := context.WithTimeout(ctx, v.fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: GET %s: %w", ErrFetch, u, err)
	}
	resp, err := v.client.Do(req)
	if err != nil {
		return nil, nil, v.fetchError(ctx, u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		detail := resp.Header.Get("Error-Message") // Intel PCS explains its 4xx here
		if detail != "" {
			return nil, nil, fmt.Errorf("%w: GET %s: status %s (%s)", ErrFetch, u, resp.Status, detail)
		}
		return nil, nil, fmt.Errorf("%w: GET %s: status %s", ErrFetch, u, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseSize+1))
	if err != nil {
		return nil, nil, v.fetchError(ctx, u, err)
	}
	if len(body) > maxResponseSize {
		return nil, nil, fmt.Errorf("%w: GET %s: response larger than %d bytes", ErrFetch, u, maxResponseSize)
	}
	return body, resp.Header, nil
}

func (v *Verifier) fetchError(ctx context.Context, u string, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // its message repeats the URL
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w: GET %s: no response within %v: %w", ErrFetch, u, v.fetchTimeout, err)
	}
	return fmt.Errorf("%w: GET %s: %w", ErrFetch, u, err)
}

// signedBody splits a PCS response {"<field>": {...}, "signature": "hex"},
// keeping the field's JSON value byte for byte: the signature covers those
// exact bytes.
func signedBody(body []byte, field string) (value, sig string, err error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		return "", "", fmt.Errorf("response is not JSON: %v", err)
	}
	raw, ok := m[field]
	if !ok {
		return "", "", fmt.Errorf("response has no %q", field)
	}
	if err := json.Unmarshal(m["signature"], &sig); err != nil || sig == "" {
		return "", "", fmt.Errorf("response has no string \"signature\"")
	}
	return string(raw), sig, nil
}

// issuerChainHeader reads a URL-encoded PEM issuer chain from a header.
func issuerChainHeader(h http.Header, name string) (string, error) {
	v := h.Get(name)
	if v == "" {
		return "", fmt.Errorf("no %s header", name)
	}
	// PathUnescape, not QueryUnescape: a '+' of base64 sent unescaped must
	// stay a '+'.
	s, err := url.PathUnescape(v)
	if err != nil {
		return "", fmt.Errorf("%s header is not URL-encoded: %v", name, err)
	}
	if !strings.Contains(s, "-----BEGIN CERTIFICATE-----") {
		return "", fmt.Errorf("%s header holds no PEM certificate", name)
	}
	return s, nil
}

// crlBody accepts a CRL as DER (PCS), hex of DER (PCCS) or PEM, and returns
// it as hex DER, the interchange form. Hex is tried first: hex text can
// start with the byte 0x30 ('0') too, while DER never is all hex digits.
func crlBody(b []byte) (string, error) {
	s := strings.TrimSpace(string(b))
	if der, err := hex.DecodeString(s); err == nil && len(der) > 0 {
		if der[0] != 0x30 {
			return "", fmt.Errorf("response is hex but not of a DER CRL")
		}
		return hex.EncodeToString(der), nil
	}
	if strings.HasPrefix(s, "-----BEGIN") {
		blk, _ := pem.Decode([]byte(s))
		if blk == nil || blk.Type != "X509 CRL" {
			return "", fmt.Errorf("response is PEM but not an X509 CRL")
		}
		return hex.EncodeToString(blk.Bytes), nil
	}
	if len(b) > 0 && b[0] == 0x30 { // DER SEQUENCE; parsed when verified
		return hex.EncodeToString(b), nil
	}
	return "", fmt.Errorf("response is neither a DER, hex nor PEM CRL")
}
