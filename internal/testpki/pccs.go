package testpki

import (
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/teesql/ratls/dcap"
)

// Paths the PCCS double serves: the Intel PCS v4 API, PCCS's rootcacrl,
// and the root CA CRL distribution point the test root names.
const (
	PathTCBInfo    = "/tdx/certification/v4/tcb"
	PathQEIdentity = "/tdx/certification/v4/qe/identity"
	PathPCKCRL     = "/sgx/certification/v4/pckcrl"
	PathRootCACRL  = "/sgx/certification/v4/rootcacrl"
	PathRootCRLDER = rootCRLPath
)

// Issuer chain headers, as Intel PCS v4 names them.
const (
	HeaderTCBInfoIssuerChain    = "TCB-Info-Issuer-Chain"
	HeaderQEIdentityIssuerChain = "SGX-Enclave-Identity-Issuer-Chain"
	HeaderPCKCRLIssuerChain     = "SGX-PCK-CRL-Issuer-Chain"
)

// GarbageBody is what the PCCS double sends as body when SetGarbage is on:
// neither JSON, nor DER, nor hex.
const GarbageBody = "\x00garbage{\"tcbInfo\":"

// PCCS is a PCCS double: an http.Handler serving one platform's collateral
// at the Intel PCS v4 paths, like Intel PCS or a PCCS:
//
//	GET /tdx/certification/v4/tcb?fmspc=HEX      {"tcbInfo":...,"signature":"..."}, TCB-Info-Issuer-Chain
//	GET /tdx/certification/v4/qe/identity        {"enclaveIdentity":...,"signature":"..."}, SGX-Enclave-Identity-Issuer-Chain
//	GET /sgx/certification/v4/pckcrl?ca=platform|processor[&encoding=der]   CRL (PEM, or DER), SGX-PCK-CRL-Issuer-Chain
//	GET /sgx/certification/v4/rootcacrl          root CA CRL as hex text (PCCS style)
//	GET /IntelSGXRootCA.der                      root CA CRL as DER (the test root's CRL distribution point)
//
// Issuer chains are URL-encoded PEM. An unknown FMSPC or the other CA type
// gets 404. Query values are compared without case.
//
// Fault knobs (SetStatus, SetDelay, SetGarbage, SetCollateral) may be
// changed while requests are in flight. Serve expired collateral with
// SetCollateral(a.Collateral(CollateralOptions{Expired: true})).
type PCCS struct {
	served  atomic.Pointer[servedCollateral]
	status  atomic.Int32
	delay   atomic.Int64
	garbage atomic.Bool
	counts  sync.Map // path -> *atomic.Int64
	total   atomic.Int64
}

type servedCollateral struct {
	coll           *dcap.Collateral
	fmspc          string
	ca             string
	tcbBody        []byte
	qeBody         []byte
	pckCRL         []byte // DER
	rootCRL        []byte // DER
	tcbChain       string // URL-encoded
	qeChain        string
	pckCRLChain    string
	pckCRLPEM      []byte
	rootCRLHexText []byte
}

// NewPCCS returns a PCCS double serving c: collateral minted by an
// Authority, or recorded real collateral. It derives the FMSPC from c's TCB
// info and the CA type from the PCK CRL issuer's name.
func NewPCCS(c *dcap.Collateral) (*PCCS, error) {
	p := &PCCS{}
	if err := p.SetCollateral(c); err != nil {
		return nil, err
	}
	return p, nil
}

// SetCollateral atomically replaces the collateral served.
func (p *PCCS) SetCollateral(c *dcap.Collateral) error {
	s, err := prepare(c)
	if err != nil {
		return err
	}
	p.served.Store(s)
	return nil
}

func prepare(c *dcap.Collateral) (*servedCollateral, error) {
	if c == nil {
		return nil, fmt.Errorf("%w: nil collateral", ErrOptions)
	}
	cp := *c
	s := &servedCollateral{coll: &cp}
	var tcb struct {
		FMSPC string `json:"fmspc"`
	}
	if err := json.Unmarshal([]byte(c.TCBInfo), &tcb); err != nil || tcb.FMSPC == "" {
		return nil, fmt.Errorf("%w: TCB info without fmspc (%v)", ErrOptions, err)
	}
	s.fmspc = tcb.FMSPC
	var err error
	if s.pckCRL, err = hex.DecodeString(c.PCKCRL); err != nil {
		return nil, fmt.Errorf("%w: PCK CRL is not hex: %v", ErrOptions, err)
	}
	if s.rootCRL, err = hex.DecodeString(c.RootCACRL); err != nil {
		return nil, fmt.Errorf("%w: root CA CRL is not hex: %v", ErrOptions, err)
	}
	crl, err := x509.ParseRevocationList(s.pckCRL)
	if err != nil {
		return nil, fmt.Errorf("%w: PCK CRL: %v", ErrOptions, err)
	}
	s.ca = PlatformCA.String()
	if strings.Contains(strings.ToLower(crl.Issuer.CommonName), "processor") {
		s.ca = ProcessorCA.String()
	}
	s.tcbBody = signedBody("tcbInfo", c.TCBInfo, c.TCBInfoSignature)
	s.qeBody = signedBody("enclaveIdentity", c.QEIdentity, c.QEIdentitySignature)
	s.tcbChain = encodeChainHeader(c.TCBInfoIssuerChain)
	s.qeChain = encodeChainHeader(c.QEIdentityIssuerChain)
	s.pckCRLChain = encodeChainHeader(c.PCKCRLIssuerChain)
	s.pckCRLPEM = pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: s.pckCRL})
	s.rootCRLHexText = []byte(hex.EncodeToString(s.rootCRL))
	return s, nil
}

// signedBody rebuilds the PCS response around the exact signed text.
func signedBody(field, signed, sigHex string) []byte {
	sig, _ := json.Marshal(sigHex) // a string always marshals
	return []byte(`{"` + field + `":` + signed + `,"signature":` + string(sig) + `}`)
}

// encodeChainHeader percent-encodes like JavaScript's encodeURIComponent,
// as Intel does: spaces become %20, not '+', so that both query-style and
// path-style decoders recover the PEM.
func encodeChainHeader(pemText string) string {
	return strings.ReplaceAll(url.QueryEscape(pemText), "+", "%20")
}

// Collateral returns the collateral being served.
func (p *PCCS) Collateral() *dcap.Collateral {
	c := *p.served.Load().coll
	return &c
}

// SetStatus makes every request fail with code (for example 500 or 503)
// after any delay. Zero restores normal service.
func (p *PCCS) SetStatus(code int) { p.status.Store(int32(code)) }

// SetDelay holds every request for d before answering. A request whose
// context ends first (client gone, server closing) is dropped at once.
func (p *PCCS) SetDelay(d time.Duration) { p.delay.Store(int64(d)) }

// SetGarbage makes successful responses carry GarbageBody instead of their
// body (headers stay as usual).
func (p *PCCS) SetGarbage(on bool) { p.garbage.Store(on) }

// Requests returns how many requests arrived for path (URL path without
// query, for example PathTCBInfo), whatever their outcome.
func (p *PCCS) Requests(path string) int64 {
	if n, ok := p.counts.Load(path); ok {
		return n.(*atomic.Int64).Load()
	}
	return 0
}

// TotalRequests returns how many requests arrived in all.
func (p *PCCS) TotalRequests() int64 { return p.total.Load() }

func (p *PCCS) count(path string) {
	p.total.Add(1)
	n, ok := p.counts.Load(path)
	if !ok {
		n, _ = p.counts.LoadOrStore(path, new(atomic.Int64))
	}
	n.(*atomic.Int64).Add(1)
}

// ServeHTTP serves the collateral; see PCCS.
func (p *PCCS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.count(r.URL.Path)
	if d := time.Duration(p.delay.Load()); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	if code := int(p.status.Load()); code != 0 {
		http.Error(w, fmt.Sprintf("testpki: injected status %d", code), code)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "testpki: method not allowed", http.StatusMethodNotAllowed)
		return
	}
	s := p.served.Load()
	q := r.URL.Query()
	h := w.Header()
	var body []byte
	switch r.URL.Path {
	case PathTCBInfo:
		fmspc := q.Get("fmspc")
		if fmspc == "" {
			http.Error(w, "testpki: missing fmspc", http.StatusBadRequest)
			return
		}
		if !strings.EqualFold(fmspc, s.fmspc) {
			http.Error(w, "testpki: no TCB info for FMSPC "+fmspc, http.StatusNotFound)
			return
		}
		h.Set(HeaderTCBInfoIssuerChain, s.tcbChain)
		h.Set("Content-Type", "application/json")
		body = s.tcbBody
	case PathQEIdentity:
		h.Set(HeaderQEIdentityIssuerChain, s.qeChain)
		h.Set("Content-Type", "application/json")
		body = s.qeBody
	case PathPCKCRL:
		ca := strings.ToLower(q.Get("ca"))
		if ca != PlatformCA.String() && ca != ProcessorCA.String() {
			http.Error(w, "testpki: ca must be platform or processor", http.StatusBadRequest)
			return
		}
		if ca != s.ca {
			http.Error(w, "testpki: no CRL for ca="+ca, http.StatusNotFound)
			return
		}
		h.Set(HeaderPCKCRLIssuerChain, s.pckCRLChain)
		if strings.EqualFold(q.Get("encoding"), "der") {
			h.Set("Content-Type", "application/pkix-crl")
			body = s.pckCRL
		} else {
			h.Set("Content-Type", "application/x-pem-file")
			body = s.pckCRLPEM
		}
	case PathRootCACRL:
		h.Set("Content-Type", "text/plain")
		body = s.rootCRLHexText
	case PathRootCRLDER:
		h.Set("Content-Type", "application/pkix-crl")
		body = s.rootCRL
	default:
		http.NotFound(w, r)
		return
	}
	if p.garbage.Load() {
		body = []byte(GarbageBody)
	}
	_, _ = w.Write(body) // the client may be gone; nothing to do about it
}
