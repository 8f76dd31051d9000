package ratlstest

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/teesql/ratls/ext"
)

// DefaultValidity is how long agent certificates last when the request and
// AgentOptions.Validity say nothing.
const DefaultValidity = time.Hour

// AgentOptions configures an Agent. The zero value simulates DefaultTD with
// V0 certificates valid for DefaultValidity.
type AgentOptions struct {
	// TD is the simulated trust domain; zero fields take DefaultTD's.
	TD TD
	// Format is how certificates carry the attestation. Zero: FormatV0.
	Format Format
	// Validity is the lifetime of certificates whose request has no
	// not_after. Zero: DefaultValidity. SetValidity changes it later.
	Validity time.Duration
	// Now is the clock for certificate validity. Nil: time.Now.
	Now func() time.Time
	// Logger receives request logs at Debug and failures at Warn. Nil:
	// slog.Default().
	Logger *slog.Logger
}

// Agent is a dstack guest agent double. It serves the real agent's HTTP API
// (POST /GetTlsKey, plus /GetQuote, /Attest, /Info and /Version) on a unix
// socket in a fresh temporary directory and on http://127.0.0.1:port, so
// clients use the real dstack SDK against it, either way. Every /GetTlsKey
// call makes a fresh P-256 key and a certificate from a test app CA,
// attested by a quote from the Authority that binds the key.
//
// The simulated TD proves nothing: its quotes chain to the Authority's test
// root, which no default configuration trusts.
type Agent struct {
	auth   *Authority
	td     TD
	format Format
	now    func() time.Time
	log    *slog.Logger
	ca     *appCA

	dir  string // temporary directory holding the socket
	sock string
	url  string
	srv  *httpServer

	validity atomic.Int64 // time.Duration
	fault    faultState
	calls    atomic.Int64
}

// NewAgent starts an agent double whose quotes come from auth. Close it to
// stop its servers and remove its socket.
func NewAgent(auth *Authority, opts AgentOptions) (*Agent, error) {
	if auth == nil {
		return nil, errors.New("ratlstest: NewAgent: nil Authority")
	}
	td := opts.TD.withDefaults()
	if err := td.validate(); err != nil {
		return nil, err
	}
	if !opts.Format.valid() {
		return nil, fmt.Errorf("ratlstest: unknown Format %d", int(opts.Format))
	}
	a := &Agent{auth: auth, td: td, format: opts.Format, now: opts.Now, log: opts.Logger}
	if a.now == nil {
		a.now = time.Now
	}
	if a.log == nil {
		a.log = slog.Default()
	}
	a.SetValidity(opts.Validity)
	var err error
	if a.ca, err = newAppCA(a.now()); err != nil {
		return nil, err
	}

	// A short directory name keeps the socket path within the 108 bytes a
	// unix socket address allows.
	if a.dir, err = os.MkdirTemp("", "ratlstest-"); err != nil {
		return nil, err
	}
	a.sock = filepath.Join(a.dir, "dstack.sock")
	unixLn, err := net.Listen("unix", a.sock)
	if err != nil {
		os.RemoveAll(a.dir)
		return nil, err
	}
	tcpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		unixLn.Close()
		os.RemoveAll(a.dir)
		return nil, err
	}
	a.url = "http://" + tcpLn.Addr().String()
	a.srv = newHTTPServer(a.handler(), a.log)
	a.srv.serve(unixLn, tcpLn)
	a.log.Info("ratlstest: simulated dstack guest agent started (NOT A TEE: quotes chain to a test root)",
		"socket", a.sock, "url", a.url, "mrtd", td.MRTDHex(), "debug", td.Debug, "format", a.format.String())
	return a, nil
}

// SocketPath is the unix socket the agent listens on: what
// Config.DstackEndpoint and DSTACK_SIMULATOR_ENDPOINT accept.
func (a *Agent) SocketPath() string { return a.sock }

// URL is the agent's HTTP address (http://127.0.0.1:port), also accepted by
// Config.DstackEndpoint and DSTACK_SIMULATOR_ENDPOINT.
func (a *Agent) URL() string { return a.url }

// TD is the simulated trust domain, defaults filled in.
func (a *Agent) TD() TD { return a.td }

// AppCA is the certificate of the agent's test app CA, the issuer of its
// certificates. RA-TLS does not trust it; it is here for inspection.
func (a *Agent) AppCA() *x509.Certificate { return a.ca.cert }

// SetFault injects f into every later answer; Fault{} restores normal
// service. Safe to call concurrently with requests.
func (a *Agent) SetFault(f Fault) { a.fault.set(f) }

// SetValidity sets the lifetime of certificates whose request has no
// not_after (zero: DefaultValidity). Short lifetimes exercise renewal.
func (a *Agent) SetValidity(d time.Duration) {
	if d <= 0 {
		d = DefaultValidity
	}
	a.validity.Store(int64(d))
}

// TLSKeyCalls is the number of /GetTlsKey requests received, including
// those answered with a Fault.
func (a *Agent) TLSKeyCalls() int64 { return a.calls.Load() }

// Close stops the servers, waits for their handlers, and removes the
// socket's directory.
func (a *Agent) Close() error {
	err := a.srv.Close()
	if rerr := os.RemoveAll(a.dir); err == nil {
		err = rerr
	}
	return err
}

// TLSKeyRequest is the body of a GetTlsKey request, as the dstack SDKs send
// it.
type TLSKeyRequest struct {
	// Subject and AltNames go into the certificate.
	Subject  string   `json:"subject"`
	AltNames []string `json:"alt_names,omitempty"`
	// UsageRATLS asks for the attestation extensions; without it the
	// certificate carries none.
	UsageRATLS bool `json:"usage_ra_tls"`
	// UsageServerAuth and UsageClientAuth set the extended key usages.
	UsageServerAuth bool `json:"usage_server_auth"`
	UsageClientAuth bool `json:"usage_client_auth"`
	// NotBefore and NotAfter are unix seconds; nil: now and now+validity.
	NotBefore *uint64 `json:"not_before,omitempty"`
	NotAfter  *uint64 `json:"not_after,omitempty"`
	// WithAppInfo is accepted and ignored: the double writes no .1.9
	// extension.
	WithAppInfo bool `json:"with_app_info,omitempty"`
}

// tlsKeyResponse is the GetTlsKey answer.
type tlsKeyResponse struct {
	Key              string   `json:"key"`
	CertificateChain []string `json:"certificate_chain"`
}

// Certificate issues a certificate as /GetTlsKey would, without HTTP, and
// without counting a call or applying a Fault: for a ServerConfig or Config
// that takes a ready certificate.
func (a *Agent) Certificate(req TLSKeyRequest) (*tls.Certificate, error) {
	is, err := a.issue(req)
	if err != nil {
		return nil, err
	}
	return is.tlsCertificate(), nil
}

func (a *Agent) issue(req TLSKeyRequest) (*issued, error) {
	cr, err := a.certRequest(req)
	if err != nil {
		return nil, err
	}
	return a.auth.mint(a.ca, a.td, a.format, cr)
}

// errBadRequest marks requests the real agent would refuse.
var errBadRequest = errors.New("ratlstest: bad GetTlsKey request")

func (a *Agent) certRequest(req TLSKeyRequest) (certRequest, error) {
	now := a.now().Truncate(time.Second)
	cr := certRequest{
		subject:    req.Subject,
		altNames:   req.AltNames,
		raTLS:      req.UsageRATLS,
		serverAuth: req.UsageServerAuth,
		clientAuth: req.UsageClientAuth,
		notBefore:  now,
		notAfter:   now.Add(time.Duration(a.validity.Load())),
	}
	if req.NotBefore != nil {
		cr.notBefore = unixTime(*req.NotBefore)
	}
	if req.NotAfter != nil {
		cr.notAfter = unixTime(*req.NotAfter)
	}
	if !cr.notAfter.After(cr.notBefore) {
		return cr, fmt.Errorf("%w: not_after %s is not after not_before %s", errBadRequest,
			cr.notAfter.UTC().Format(time.RFC3339), cr.notBefore.UTC().Format(time.RFC3339))
	}
	return cr, nil
}

// unixTime converts unix seconds, saturating values time.Time cannot hold
// (X.509 cannot encode them either; CreateCertificate then fails cleanly).
func unixTime(s uint64) time.Time {
	const maxSeconds = 253402300799 // 9999-12-31T23:59:59Z, X.509's limit
	return time.Unix(int64(min(s, maxSeconds)), 0)
}

const maxRequestBody = 1 << 20

func (a *Agent) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/GetTlsKey", a.getTLSKey)
	mux.HandleFunc("/GetQuote", a.getQuote)
	mux.HandleFunc("/Attest", a.attest)
	mux.HandleFunc("/Info", a.info)
	mux.HandleFunc("/Version", a.version)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.log.Debug("ratlstest: agent request", "method", r.Method, "path", r.URL.Path)
		if r.URL.Path == "/GetTlsKey" {
			a.calls.Add(1)
		}
		if a.fault.get().inject(w, r, a.srv.done) {
			return
		}
		if r.Method != http.MethodPost && r.Method != http.MethodGet {
			http.Error(w, "ratlstest: method not allowed", http.StatusMethodNotAllowed)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxRequestBody)
		mux.ServeHTTP(w, r)
	})
}

// decode reads a JSON request body; an empty body is an empty request.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	err := json.NewDecoder(r.Body).Decode(v)
	if err == nil || errors.Is(err, io.EOF) {
		return true
	}
	http.Error(w, "ratlstest: bad request body: "+err.Error(), http.StatusBadRequest)
	return false
}

func (a *Agent) reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(v); err != nil {
		a.log.Debug("ratlstest: agent reply failed", "err", err)
	}
}

func (a *Agent) fail(w http.ResponseWriter, what string, err error) {
	status := http.StatusInternalServerError
	if errors.Is(err, errBadRequest) {
		status = http.StatusBadRequest
	}
	a.log.Warn("ratlstest: agent request failed", "call", what, "err", err)
	http.Error(w, err.Error(), status)
}

func (a *Agent) getTLSKey(w http.ResponseWriter, r *http.Request) {
	var req TLSKeyRequest
	if !decode(w, r, &req) {
		return
	}
	is, err := a.issue(req)
	if err != nil {
		a.fail(w, "GetTlsKey", err)
		return
	}
	key, chain, err := is.pem()
	if err != nil {
		a.fail(w, "GetTlsKey", err)
		return
	}
	a.reply(w, tlsKeyResponse{Key: key, CertificateChain: chain})
}

// reportDataRequest is the body of GetQuote and Attest.
type reportDataRequest struct {
	ReportData string `json:"report_data"`
}

// reportData decodes up to 64 bytes of hex and zero-pads them, as the
// agent does.
func (a *Agent) reportData(w http.ResponseWriter, r *http.Request) ([64]byte, bool) {
	var req reportDataRequest
	var rd [64]byte
	if !decode(w, r, &req) {
		return rd, false
	}
	b, err := hex.DecodeString(req.ReportData)
	if err == nil && len(b) > len(rd) {
		err = fmt.Errorf("%d bytes, want at most %d", len(b), len(rd))
	}
	if err != nil {
		a.fail(w, r.URL.Path, fmt.Errorf("%w: report_data: %v", errBadRequest, err))
		return rd, false
	}
	copy(rd[:], b)
	return rd, true
}

func (a *Agent) getQuote(w http.ResponseWriter, r *http.Request) {
	rd, ok := a.reportData(w, r)
	if !ok {
		return
	}
	q, err := a.auth.quote(a.td, rd)
	if err != nil {
		a.fail(w, "GetQuote", err)
		return
	}
	a.reply(w, map[string]string{
		"quote":       hex.EncodeToString(q),
		"event_log":   a.td.eventLogJSON(),
		"report_data": hex.EncodeToString(rd[:]),
		"vm_config":   a.td.vmConfig(),
	})
}

func (a *Agent) attest(w http.ResponseWriter, r *http.Request) {
	rd, ok := a.reportData(w, r)
	if !ok {
		return
	}
	att, err := a.auth.attestation(a.td, rd)
	if err == nil {
		var env []byte
		if env, err = ext.MarshalEnvelope(att, ext.EnvelopeV0); err == nil {
			a.reply(w, map[string]string{"attestation": hex.EncodeToString(env)})
			return
		}
	}
	a.fail(w, "Attest", err)
}

func (a *Agent) info(w http.ResponseWriter, r *http.Request) {
	td := a.td
	rt := td.rtmrs()
	tcb, _ := json.Marshal(map[string]any{
		"mrtd":          hex.EncodeToString(td.MRTD[:]),
		"rtmr0":         hex.EncodeToString(rt[0][:]),
		"rtmr1":         hex.EncodeToString(rt[1][:]),
		"rtmr2":         hex.EncodeToString(rt[2][:]),
		"rtmr3":         hex.EncodeToString(rt[3][:]),
		"os_image_hash": hex.EncodeToString(td.OSImageHash[:]),
		"compose_hash":  hex.EncodeToString(td.ComposeHash[:]),
		"app_compose":   "",
		"event_log":     json.RawMessage(td.eventLogJSON()),
	})
	a.reply(w, map[string]string{
		"app_id":            hex.EncodeToString(td.AppID[:]),
		"instance_id":       hex.EncodeToString(td.InstanceID[:]),
		"app_cert":          string(pemCert(a.ca.cert)),
		"tcb_info":          string(tcb),
		"app_name":          "ratlstest-simulated-app",
		"device_id":         "",
		"key_provider_info": keyProviderPayload,
		"os_image_hash":     hex.EncodeToString(td.OSImageHash[:]),
		"compose_hash":      hex.EncodeToString(td.ComposeHash[:]),
		"vm_config":         td.vmConfig(),
	})
}

func (a *Agent) version(w http.ResponseWriter, r *http.Request) {
	a.reply(w, map[string]string{"version": "0.5.9-ratlstest", "rev": "ratlstest-simulator"})
}
