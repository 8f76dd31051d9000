package main

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/teesql/ratls"
	"github.com/teesql/ratls/dcap"
	"github.com/teesql/ratls/tdx"
)

// Environment variables that `ratls simulator` prints. The first two are
// defaults of --dstack-endpoint and --pccs: neither can make anything
// trusted by itself. envTrustedRoot is deliberately NOT a default of
// --trusted-root: a value left in a shell by `. sim.env` would silently make
// a production proxy trust the test root. It must be passed explicitly:
// --trusted-root "$RATLS_TRUSTED_ROOT".
const (
	envAgent       = "DSTACK_SIMULATOR_ENDPOINT"
	envPCCS        = "RATLS_PCCS_URL"
	envTrustedRoot = "RATLS_TRUSTED_ROOT"
)

// listFlag is a comma-separated list flag that may also be repeated.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}

// policyFlags are the flags shared by every command that judges a quote.
type policyFlags struct {
	mrtds, composeHashes, appIDs listFlag
	acceptTCB                    listFlag
	allowDebug, allowSimulator   bool
	pccs, trustedRoot            string
}

func (p *policyFlags) register(fs *flagSet, getenv func(string) string) {
	fs.Var(&p.mrtds, "mrtd", "accepted MRTD `HEX` (96 digits); comma-separated or repeated; empty: any MRTD")
	fs.Var(&p.composeHashes, "compose-hash", "accepted app compose hash `HEX` (64 digits, from the RTMR3 event log); comma-separated or repeated")
	fs.Var(&p.appIDs, "app-id", "accepted dstack app id `HEX` (40 digits); comma-separated or repeated")
	fs.Var(&p.acceptTCB, "accept-tcb", "accepted TCB `STATUSES`, comma-separated (default UpToDate,SWHardeningNeeded)")
	fs.BoolVar(&p.allowDebug, "allow-debug", false, "accept debug TDs (DANGER: their memory is open to the host)")
	fs.BoolVar(&p.allowSimulator, "allow-simulator", false, "accept a certificate carrying no quote, unverified (DANGER: development only)")
	fs.StringVar(&p.pccs, "pccs", getenv(envPCCS), "collateral source `URL` (Intel PCS or a PCCS); default $"+envPCCS+", else "+dcap.IntelPCS)
	fs.StringVar(&p.trustedRoot, "trusted-root", "", "`PEM` file of the root CA quotes must chain to, replacing Intel's (DANGER: tests only; announced on stderr). Never read from $"+envTrustedRoot+": for the simulator's, pass --trusted-root \"$"+envTrustedRoot+"\"")
}

// policy checks the flags and returns the ratls.Policy they describe.
func (p *policyFlags) policy() (ratls.Policy, error) {
	pol := ratls.Policy{AllowDebugMode: p.allowDebug, AllowSimulator: p.allowSimulator}
	var err error
	if pol.MRTDs, err = hexList("mrtd", p.mrtds, 48); err != nil {
		return pol, err
	}
	if pol.ComposeHashes, err = hexList("compose-hash", p.composeHashes, 32); err != nil {
		return pol, err
	}
	if pol.AppIDs, err = hexList("app-id", p.appIDs, 20); err != nil {
		return pol, err
	}
	for _, s := range p.acceptTCB {
		st, ok := parseTCBStatus(s)
		if !ok {
			return pol, usagef("--accept-tcb: unknown TCB status %q (known: %s)", s, strings.Join(tcbStatusNames(), ", "))
		}
		pol.AcceptTCBStatuses = append(pol.AcceptTCBStatuses, st)
	}
	return pol, nil
}

// verifier returns the DCAP verifier the flags describe. A root other than
// Intel's is announced with a one-line banner on stderr, whatever the log
// level: everything the verifier accepts then proves nothing about real TDX
// hardware.
func (c *cli) verifier(p *policyFlags, now func() time.Time, logger *slog.Logger) (*dcap.Verifier, error) {
	opts := dcap.Options{CollateralURL: p.pccs, Now: now, Logger: logger}
	if p.trustedRoot != "" {
		root, err := loadCertificate(p.trustedRoot)
		if err != nil {
			return nil, fmt.Errorf("--trusted-root: %w", err)
		}
		c.warnNonIntelRoot(root, p.trustedRoot)
		opts.TrustedRoot = root
	}
	return dcap.New(opts)
}

// warnNonIntelRoot prints the banner for a trusted root that is not Intel's
// SGX Root CA; from is where it came from.
func (c *cli) warnNonIntelRoot(root *x509.Certificate, from string) {
	sum := sha256.Sum256(root.Raw)
	if hex.EncodeToString(sum[:]) == dcap.IntelRootCASHA256 {
		return
	}
	fmt.Fprintf(c.stderr, "%s: WARNING: NOT INTEL'S ROOT: quotes are verified against %q (SHA-256 %x, %s); nothing it accepts proves a real TDX machine\n",
		c.name, root.Subject.CommonName, sum, oneLine(from))
}

var tcbStatuses = []tdx.TCBStatus{
	tdx.TCBUpToDate, tdx.TCBSWHardeningNeeded, tdx.TCBConfigurationNeeded,
	tdx.TCBConfigurationAndSWHardeningNeeded, tdx.TCBOutOfDate,
	tdx.TCBOutOfDateConfigurationNeeded, tdx.TCBRevoked,
}

func tcbStatusNames() []string {
	names := make([]string, len(tcbStatuses))
	for i, s := range tcbStatuses {
		names[i] = string(s)
	}
	return names
}

// parseTCBStatus accepts Intel's names in any case.
func parseTCBStatus(s string) (tdx.TCBStatus, bool) {
	for _, st := range tcbStatuses {
		if strings.EqualFold(s, string(st)) {
			return st, true
		}
	}
	return "", false
}

// hexList checks that every value is n bytes of hex (0x prefix allowed) and
// returns them in canonical lower case.
func hexList(flagName string, vals []string, n int) ([]string, error) {
	var out []string
	for _, v := range vals {
		b, err := hex.DecodeString(strings.TrimPrefix(strings.TrimPrefix(v, "0x"), "0X"))
		if err != nil || len(b) != n {
			return nil, usagef("--%s: %q is not %d hex digits", flagName, v, 2*n)
		}
		out = append(out, hex.EncodeToString(b))
	}
	return out, nil
}

// clientCertFlags select the certificate a command presents to servers:
// files, else the dstack guest agent.
type clientCertFlags struct {
	certFile, keyFile string
	agent             string
}

func (f *clientCertFlags) register(fs *flagSet, getenv func(string) string) {
	fs.StringVar(&f.certFile, "client-cert", "", "client certificate chain `PEM` file (with --client-key); default: a certificate from the dstack guest agent")
	fs.StringVar(&f.keyFile, "client-key", "", "client private key `PEM` file")
	f.registerAgent(fs, getenv)
}

func (f *clientCertFlags) registerAgent(fs *flagSet, getenv func(string) string) {
	fs.StringVar(&f.agent, "dstack-endpoint", getenv(envAgent), "dstack guest agent `ENDPOINT` (http URL or unix socket path); default $"+envAgent+", else the standard sockets")
}

// certificate loads the files, or returns nil when none were given.
func (f *clientCertFlags) certificate() (*tls.Certificate, error) {
	if f.certFile == "" && f.keyFile == "" {
		return nil, nil
	}
	if f.certFile == "" || f.keyFile == "" {
		return nil, usagef("--client-cert and --client-key go together")
	}
	cert, err := tls.LoadX509KeyPair(f.certFile, f.keyFile)
	if err != nil {
		return nil, fmt.Errorf("loading the client certificate: %w", err)
	}
	return &cert, nil
}

// loadCertificates reads certificates from a PEM file (every CERTIFICATE
// block, in order) or a DER file (one certificate). A file is read as PEM
// only when it starts, after whitespace, with "-----BEGIN": other files are
// never scanned for PEM text, which they may merely embed (a TDX quote
// carries its PCK chain as PEM, and would show Intel's PCK Platform CA as
// "the certificate").
func loadCertificates(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if !bytes.HasPrefix(bytes.TrimLeft(b, " \t\r\n"), []byte("-----BEGIN")) {
		cert, err := x509.ParseCertificate(b)
		if err != nil {
			return nil, fmt.Errorf("%s: not a PEM or DER certificate (PEM must start with -----BEGIN; as DER: %v)", path, err)
		}
		return []*x509.Certificate{cert}, nil
	}
	var certs []*x509.Certificate
	for rest := b; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		certs = append(certs, cert)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s: PEM with no CERTIFICATE block", path)
	}
	return certs, nil
}

func loadCertificate(path string) (*x509.Certificate, error) {
	certs, err := loadCertificates(path)
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}

// readQuote reads a quote file: raw binary, or hex text (whitespace and a
// 0x prefix allowed), as dcap-qvl and the dstack tools write them.
func readQuote(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(b) > 4*tdx.MaxQuoteSize {
		return nil, fmt.Errorf("%s: %d bytes, too large for a quote", path, len(b))
	}
	text := strings.Join(strings.Fields(string(b)), "")
	text = strings.TrimPrefix(strings.TrimPrefix(text, "0x"), "0X")
	if len(text) > 0 && len(text)%2 == 0 {
		if raw, err := hex.DecodeString(text); err == nil {
			return raw, nil
		}
	}
	return b, nil
}

// hexs is lower-case hex with no prefix, the format of every JSON output.
func hexs(b []byte) string { return hex.EncodeToString(b) }
