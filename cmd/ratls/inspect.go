package main

import (
	"bytes"
	"context"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/teesql/ratls"
	"github.com/teesql/ratls/ext"
	"github.com/teesql/ratls/tdx"
)

const inspectHelp = `
Shows the attestation carried by an RA-TLS certificate: read from FILE (PEM,
every certificate in it, leaf first; or DER), or presented by the server at
HOST:PORT. A live inspection performs one TLS handshake and sends nothing after
it; it presents a client certificate only when one is available (--client-cert,
or the dstack guest agent) and does not verify the server: it shows what is
there. Nothing shown is trusted unless --verify says so.

Output: quote version, MRTD, RTMR0-3, report data, debug flag, the extension the
quote came from, whether the quote binds the certificate's key
(REPORTDATA = SHA-512("ratls-cert:" || SubjectPublicKeyInfo)), the app identity
from the RTMR3 event log and whether the log replays to the quote's RTMR3, and
the certificate's subject, issuer and validity.

--json prints one object with the keys quote_version, mrtd, rtmr0, rtmr1,
rtmr2, rtmr3, report_data, debug, source_oid, key_binding (bool),
rtmr3_replay (bool), app_id, compose_hash, instance_id, os_image_hash,
subject, issuer, not_before, not_after (hex lower case without 0x, times RFC
3339; empty strings when absent). With --verify it adds "verification":
{accepted, error, tcb_status, advisory_ids, fmspc}.

--verify additionally verifies the certificate as a ratls client would
(DCAP quote verification, key binding, policy flags, certificate validity);
the policy flags have no effect without it.

Exit status: 0 when a quote is found and binds the certificate key (and, with
--verify, the certificate is accepted); 1 otherwise; 2 on bad usage.
`

// inspection is the JSON output of inspect. Its keys are an interface.
type inspection struct {
	QuoteVersion uint16 `json:"quote_version"`
	MRTD         string `json:"mrtd"`
	RTMR0        string `json:"rtmr0"`
	RTMR1        string `json:"rtmr1"`
	RTMR2        string `json:"rtmr2"`
	RTMR3        string `json:"rtmr3"`
	ReportData   string `json:"report_data"`
	Debug        bool   `json:"debug"`
	SourceOID    string `json:"source_oid"`
	KeyBinding   bool   `json:"key_binding"`
	RTMR3Replay  bool   `json:"rtmr3_replay"`
	AppID        string `json:"app_id"`
	ComposeHash  string `json:"compose_hash"`
	InstanceID   string `json:"instance_id"`
	OSImageHash  string `json:"os_image_hash"`
	Subject      string `json:"subject"`
	Issuer       string `json:"issuer"`
	NotBefore    string `json:"not_before"`
	NotAfter     string `json:"not_after"`

	Verification *verification `json:"verification,omitempty"`

	// Not printed: why the attestation could not be read, and the raw
	// quote.
	problem error
	quote   []byte
}

// verification is what --verify concluded.
type verification struct {
	Accepted    bool     `json:"accepted"`
	Error       string   `json:"error"`
	TCBStatus   string   `json:"tcb_status"`
	AdvisoryIDs []string `json:"advisory_ids"`
	FMSPC       string   `json:"fmspc"`
}

func (c *cli) inspect(ctx context.Context, args []string) error {
	fs := c.flagSet("inspect", "[flags] (--cert FILE | HOST:PORT)", inspectHelp)
	var (
		jsonOut    = fs.Bool("json", false, "print JSON")
		certFile   = fs.String("cert", "", "read the certificate from `FILE` instead of a server")
		verify     = fs.Bool("verify", false, "also verify the certificate (DCAP, key binding, policy flags)")
		saveQuote  = fs.String("save-quote", "", "write the raw quote to `FILE` (for verify-quote and fetch-collateral)")
		serverName = fs.String("server-name", "", "TLS server `NAME` (SNI) sent to the server; default the host of HOST:PORT")
		timeout    = fs.Duration("timeout", 10*time.Second, "bound on the connection and handshake")
		pf         policyFlags
		cf         clientCertFlags
	)
	pf.register(fs, c.getenv)
	cf.register(fs, c.getenv)
	args, err := parse(fs, args)
	if err != nil {
		return err
	}
	switch {
	case *certFile != "" && len(args) > 0:
		return usagef("give either --cert FILE or HOST:PORT, not both")
	case *certFile == "" && len(args) != 1:
		return usagef("give --cert FILE or one HOST:PORT")
	}
	// Check the policy flags before any network I/O.
	if _, err := pf.policy(); err != nil {
		return err
	}

	var chain []*x509.Certificate
	if *certFile != "" {
		chain, err = loadCertificates(*certFile)
	} else {
		chain, err = c.fetchChain(ctx, args[0], *serverName, &cf, *timeout)
	}
	if err != nil {
		return err
	}
	ins := inspect(chain[0])
	if *saveQuote != "" && ins.quote != nil {
		if err := writeFileAtomic(*saveQuote, ins.quote); err != nil {
			return err
		}
	}
	if *verify {
		ins.Verification = c.verifyLeaf(ctx, chain[0], &pf)
	}
	if *jsonOut {
		if err := writeJSON(c.stdout, ins); err != nil {
			return err
		}
	} else {
		printInspection(c.stdout, ins)
	}
	switch {
	case ins.problem != nil:
		return ins.problem
	case !ins.KeyBinding:
		return fmt.Errorf("%w: REPORTDATA %s, SHA-512(\"ratls-cert:\" || public key) is %s",
			ratls.ErrKeyBinding, ins.ReportData, hexs(keyBindingData(chain[0])))
	case ins.Verification != nil && !ins.Verification.Accepted:
		return errors.New(ins.Verification.Error)
	}
	return nil
}

// inspect reads what cert claims, verifying nothing but the key binding and
// the event log's consistency with the quote.
func inspect(cert *x509.Certificate) *inspection {
	ins := &inspection{
		Subject:   cert.Subject.String(),
		Issuer:    cert.Issuer.String(),
		NotBefore: cert.NotBefore.UTC().Format(time.RFC3339),
		NotAfter:  cert.NotAfter.UTC().Format(time.RFC3339),
	}
	att, err := ext.FromCertificate(cert)
	if err != nil {
		ins.problem = err
		return ins
	}
	ins.SourceOID = att.SourceOID.String()
	ins.quote = att.Quote
	q, err := tdx.ParseQuote(att.Quote)
	if err != nil {
		ins.problem = err
		return ins
	}
	body := &q.Body
	ins.QuoteVersion = q.Header.Version
	ins.MRTD = hexs(body.MRTD[:])
	ins.RTMR0 = hexs(body.RTMR[0][:])
	ins.RTMR1 = hexs(body.RTMR[1][:])
	ins.RTMR2 = hexs(body.RTMR[2][:])
	ins.RTMR3 = hexs(body.RTMR[3][:])
	ins.ReportData = hexs(body.ReportData[:])
	ins.Debug = body.Debug()
	ins.KeyBinding = bytes.Equal(body.ReportData[:], keyBindingData(cert))

	app, err := ext.VerifiedAppIdentity(att.Events, body.RTMR[3])
	ins.RTMR3Replay = err == nil
	if err != nil {
		// Show what the log claims anyway; rtmr3_replay says it is not
		// to be believed.
		app = claimedAppIdentity(att.Events)
	}
	ins.AppID = hexs(app.AppID)
	ins.ComposeHash = hexs(app.ComposeHash)
	ins.InstanceID = hexs(app.InstanceID)
	ins.OSImageHash = hexs(app.OSImageHash)
	return ins
}

// keyBindingData is the REPORTDATA that binds cert's public key (dstack's
// RaTlsCert quote content type).
func keyBindingData(cert *x509.Certificate) []byte {
	sum := sha512.Sum512(append([]byte("ratls-cert:"), cert.RawSubjectPublicKeyInfo...))
	return sum[:]
}

// claimedAppIdentity reads the app identity events without replaying them.
// Later events win, as they would in dstack's own reading of the log.
func claimedAppIdentity(events []ext.Event) *ext.AppIdentity {
	app := &ext.AppIdentity{}
	for _, e := range events {
		if e.IMR != 3 || e.EventType != ext.RuntimeEventType {
			continue
		}
		switch e.Event {
		case "app-id":
			app.AppID = e.Payload
		case "compose-hash":
			app.ComposeHash = e.Payload
		case "instance-id":
			app.InstanceID = e.Payload
		case "os-image-hash":
			app.OSImageHash = e.Payload
		}
	}
	return app
}

// fetchChain performs one TLS handshake with addr and returns the
// certificates the server presented. It does not verify them: inspect shows
// what is there.
func (c *cli) fetchChain(ctx context.Context, addr, serverName string, cf *clientCertFlags, timeout time.Duration) ([]*x509.Certificate, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, usagef("%q is not HOST:PORT: %v", addr, err)
	}
	if serverName == "" {
		serverName = host
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	cfg := &tls.Config{
		ServerName: serverName,
		// Deliberate: inspect reports what the server presents, whoever
		// signed it; trust comes only from --verify.
		InsecureSkipVerify: true,
		MinVersion:         tls.VersionTLS12,
	}
	var chain []*x509.Certificate
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		chain = cs.PeerCertificates
		return nil
	}
	closeAgent, err := c.offerClientCertificate(ctx, cfg, cf)
	if err != nil {
		return nil, err
	}
	defer closeAgent()

	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	// Closing the TCP connection, not the TLS one, sends nothing after the
	// handshake, not even close_notify.
	defer raw.Close()
	err = tls.Client(raw, cfg).HandshakeContext(ctx)
	if len(chain) == 0 {
		if err == nil {
			err = ratls.ErrNoPeerCertificate
		}
		return nil, fmt.Errorf("handshake with %s: %w", addr, err)
	}
	// A server that wants a client certificate we lack may fail the
	// handshake after sending its own: that is still worth showing.
	return chain, nil
}

// offerClientCertificate makes cfg present a client certificate if one is
// available: from --client-cert/--client-key, else from a reachable dstack
// guest agent; else none.
func (c *cli) offerClientCertificate(ctx context.Context, cfg *tls.Config, cf *clientCertFlags) (func(), error) {
	cert, err := cf.certificate()
	if err != nil {
		return nil, err
	}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
		return func() {}, nil
	}
	// This client only fetches a certificate: its (empty) policy is never
	// applied, so its warnings about it would mislead.
	client, err := ratls.NewClient(ctx, ratls.Config{
		DstackEndpoint: cf.agent,
		Verifier:       noVerifier{},
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		if !errors.Is(err, ratls.ErrMissingDstackSocket) {
			fmt.Fprintf(c.stderr, "ratls inspect: no client certificate from the dstack guest agent: %s\n", oneLine(err.Error()))
		}
		return func() {}, nil
	}
	agentCfg := client.TLSConfig(cfg.ServerName)
	cfg.Certificates = agentCfg.Certificates
	cfg.GetClientCertificate = agentCfg.GetClientCertificate
	return func() { client.Close() }, nil
}

// noVerifier stands in where a ratls.Client is built only for its client
// certificate: it refuses every quote, so it can never let one through.
type noVerifier struct{}

func (noVerifier) VerifyQuote(context.Context, []byte) (*tdx.Verdict, error) {
	return nil, errors.New("ratls: no verifier configured")
}

func printInspection(w io.Writer, ins *inspection) {
	p := func(label, value string) { fmt.Fprintf(w, "  %-14s %s\n", label, value) }
	fmt.Fprintln(w, "Certificate")
	p("subject", ins.Subject)
	p("issuer", ins.Issuer)
	p("not before", ins.NotBefore)
	p("not after", ins.NotAfter)
	if ins.QuoteVersion == 0 {
		fmt.Fprintln(w, "Attestation")
		p("quote", "none found")
		return
	}
	fmt.Fprintln(w, "Attestation (as claimed; not verified unless --verify)")
	p("source OID", ins.SourceOID)
	p("quote version", fmt.Sprint(ins.QuoteVersion))
	p("MRTD", ins.MRTD)
	p("RTMR0", ins.RTMR0)
	p("RTMR1", ins.RTMR1)
	p("RTMR2", ins.RTMR2)
	p("RTMR3", ins.RTMR3)
	p("report data", ins.ReportData)
	p("debug", fmt.Sprint(ins.Debug))
	if ins.KeyBinding {
		p("key binding", "ok: REPORTDATA = SHA-512(\"ratls-cert:\" || certificate public key)")
	} else {
		p("key binding", "FAILED: REPORTDATA does not bind this certificate's key (a copied quote?)")
	}
	if ins.RTMR3Replay {
		fmt.Fprintln(w, "App identity (RTMR3 event log replays to the quote: ok)")
	} else {
		fmt.Fprintln(w, "App identity (RTMR3 event log does NOT replay to the quote: claims only)")
	}
	p("app id", orNone(ins.AppID))
	p("compose hash", orNone(ins.ComposeHash))
	p("instance id", orNone(ins.InstanceID))
	p("os image hash", orNone(ins.OSImageHash))
	if v := ins.Verification; v != nil {
		fmt.Fprintln(w, "Verification")
		if v.Accepted {
			p("result", "accepted")
		} else {
			p("result", "REJECTED: "+v.Error)
		}
		if v.TCBStatus != "" {
			p("TCB status", v.TCBStatus)
			p("FMSPC", v.FMSPC)
			if len(v.AdvisoryIDs) > 0 {
				p("advisories", fmt.Sprint(v.AdvisoryIDs))
			}
		}
	}
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
