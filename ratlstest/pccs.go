package ratlstest

import (
	"errors"
	"net"

	"github.com/teesql/ratls/dcap"
	"github.com/teesql/ratls/internal/testpki"
)

// Paths the PCCS double serves (Intel PCS v4 API), for PCCS.Requests.
const (
	PathTCBInfo    = testpki.PathTCBInfo    // TCB info for an FMSPC
	PathQEIdentity = testpki.PathQEIdentity // Quoting Enclave identity
	PathPCKCRL     = testpki.PathPCKCRL     // PCK CA CRL
	PathRootCACRL  = testpki.PathRootCACRL  // root CA CRL, hex (PCCS style)
)

// PCCS is a PCCS double: an HTTP server on 127.0.0.1 serving an
// Authority's collateral at the Intel PCS v4 paths, counting requests, with
// fault knobs. Point a verifier at URL (Authority.NewVerifier does).
type PCCS struct {
	auth *Authority
	h    *testpki.PCCS
	url  string
	srv  *httpServer
}

// NewPCCS starts a PCCS double serving auth's default collateral. Close
// it to stop it.
func NewPCCS(auth *Authority) (*PCCS, error) {
	if auth == nil {
		return nil, errors.New("ratlstest: NewPCCS: nil Authority")
	}
	coll, err := auth.Collateral(CollateralOptions{})
	if err != nil {
		return nil, err
	}
	h, err := testpki.NewPCCS(coll)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &PCCS{auth: auth, h: h, url: "http://" + ln.Addr().String()}
	p.srv = newHTTPServer(h, auth.log)
	p.srv.serve(ln)
	auth.log.Info("ratlstest: PCCS double started (serves TEST collateral)", "url", p.url, "fmspc", auth.FMSPC())
	return p, nil
}

// URL is the base URL (http://127.0.0.1:port) to use as
// dcap.Options.CollateralURL.
func (p *PCCS) URL() string { return p.url }

// NewVerifier returns a verifier trusting the authority's test root with
// collateral from this PCCS; see Authority.NewVerifier.
func (p *PCCS) NewVerifier(opts dcap.Options) (*dcap.Verifier, error) {
	return p.auth.NewVerifier(p.url, opts)
}

// SetFault injects f into every later answer: Status answers with that
// code, Delay holds answers, Garbage replaces bodies with bytes that parse
// as nothing. Fault{} restores normal service.
func (p *PCCS) SetFault(f Fault) {
	p.h.SetDelay(f.Delay)
	p.h.SetStatus(f.Status)
	p.h.SetGarbage(f.Garbage)
}

// SetCollateral replaces the collateral served (for example Expired, or
// another TCB status). Verifiers that already cached collateral keep it
// until it expires.
func (p *PCCS) SetCollateral(opts CollateralOptions) error {
	c, err := p.auth.Collateral(opts)
	if err != nil {
		return err
	}
	return p.h.SetCollateral(c)
}

// Requests is the number of requests received for path (one of the Path
// constants), whatever their outcome.
func (p *PCCS) Requests(path string) int64 { return p.h.Requests(path) }

// TotalRequests is the number of requests received in all.
func (p *PCCS) TotalRequests() int64 { return p.h.TotalRequests() }

// Close stops the server and waits for its handlers.
func (p *PCCS) Close() error { return p.srv.Close() }
