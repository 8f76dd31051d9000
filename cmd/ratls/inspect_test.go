package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/teesql/ratls/ext"
	"github.com/teesql/ratls/ratlstest"
)

var inspectionKeys = []string{
	"app_id", "compose_hash", "debug", "instance_id", "issuer", "key_binding",
	"mrtd", "not_after", "not_before", "os_image_hash", "quote_version",
	"report_data", "rtmr0", "rtmr1", "rtmr2", "rtmr3", "rtmr3_replay",
	"source_oid", "subject",
}

var quietLogger = slog.New(slog.NewTextHandler(io.Discard, nil))

func newAgent(t *testing.T, opts ratlstest.AgentOptions) (*ratlstest.Authority, *ratlstest.Agent) {
	t.Helper()
	auth, err := ratlstest.NewAuthority(ratlstest.AuthorityOptions{Logger: quietLogger})
	require.NoError(t, err)
	if opts.Logger == nil {
		opts.Logger = quietLogger
	}
	agent, err := ratlstest.NewAgent(auth, opts)
	require.NoError(t, err)
	t.Cleanup(func() { agent.Close() })
	return auth, agent
}

func agentCertificate(t *testing.T, agent *ratlstest.Agent) *tls.Certificate {
	t.Helper()
	cert, err := agent.Certificate(ratlstest.TLSKeyRequest{
		Subject: "inspect.test", AltNames: []string{"127.0.0.1", "localhost"},
		UsageRATLS: true, UsageServerAuth: true,
	})
	require.NoError(t, err)
	return cert
}

func writeChainPEM(t *testing.T, ders [][]byte) string {
	t.Helper()
	var b []byte
	for _, der := range ders {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	p := filepath.Join(t.TempDir(), "cert.pem")
	require.NoError(t, os.WriteFile(p, b, 0o600))
	return p
}

// swappedKey returns a certificate carrying cert's dstack extensions (its
// quote) over another public key: a copied quote.
func swappedKey(t *testing.T, cert *x509.Certificate) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: cert.SerialNumber,
		Subject:      cert.Subject,
		NotBefore:    cert.NotBefore,
		NotAfter:     cert.NotAfter,
		DNSNames:     cert.DNSNames,
	}
	for _, e := range cert.Extensions {
		if len(e.Id) > 7 && e.Id[6] == 62397 {
			tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, e)
		}
	}
	require.NotEmpty(t, tmpl.ExtraExtensions)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	return der
}

func TestInspectCertFile(t *testing.T) {
	t.Parallel()
	_, agent := newAgent(t, ratlstest.AgentOptions{})
	cert := agentCertificate(t, agent)
	td := agent.TD()
	path := writeChainPEM(t, cert.Certificate)

	r := runCmd(t, nil, "inspect", "--json", "--cert", path)
	require.Equal(t, exitOK, r.code, r.stderr)
	m := decodeJSON(t, r.stdout)
	assert.Equal(t, inspectionKeys, keys(m))
	assert.EqualValues(t, 4, m["quote_version"])
	assert.Equal(t, td.MRTDHex(), m["mrtd"])
	assert.Equal(t, td.ComposeHashHex(), m["compose_hash"])
	assert.Equal(t, td.AppIDHex(), m["app_id"])
	assert.Equal(t, hexs(td.InstanceID[:]), m["instance_id"])
	assert.Equal(t, hexs(td.OSImageHash[:]), m["os_image_hash"])
	assert.Equal(t, true, m["key_binding"])
	assert.Equal(t, true, m["rtmr3_replay"])
	assert.Equal(t, false, m["debug"])
	assert.Equal(t, ext.OIDAttestation.String(), m["source_oid"])
	assert.Equal(t, hexs(keyBindingData(cert.Leaf)), m["report_data"])
	assert.Equal(t, cert.Leaf.Subject.String(), m["subject"])
	assert.Equal(t, cert.Leaf.Issuer.String(), m["issuer"])
	assert.Equal(t, cert.Leaf.NotAfter.UTC().Format(time.RFC3339), m["not_after"])
	for _, k := range []string{"mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3", "report_data"} {
		s := m[k].(string)
		assert.Equal(t, strings.ToLower(s), s, k)
		assert.False(t, strings.HasPrefix(s, "0x"), k)
	}
	_, err := time.Parse(time.RFC3339, m["not_before"].(string))
	assert.NoError(t, err)

	quotePath := filepath.Join(t.TempDir(), "quote.bin")
	r = runCmd(t, nil, "inspect", "--cert", path, "--save-quote", quotePath)
	require.Equal(t, exitOK, r.code, r.stderr)
	att, err := ext.FromCertificate(cert.Leaf)
	require.NoError(t, err)
	assert.Equal(t, string(att.Quote), readFile(t, quotePath))
	for _, want := range []string{td.MRTDHex(), td.ComposeHashHex(), "key binding", "ok", "replays to the quote: ok", "inspect.test"} {
		assert.Contains(t, r.stdout, want)
	}
}

func TestInspectFormats(t *testing.T) {
	t.Parallel()
	for _, f := range []ratlstest.Format{ratlstest.FormatV1, ratlstest.FormatLegacy, ratlstest.FormatBoth} {
		t.Run(f.String(), func(t *testing.T) {
			t.Parallel()
			_, agent := newAgent(t, ratlstest.AgentOptions{Format: f, TD: ratlstest.TD{Debug: true, QuoteVersion: 5}})
			cert := agentCertificate(t, agent)
			// DER, leaf only.
			p := filepath.Join(t.TempDir(), "cert.der")
			require.NoError(t, os.WriteFile(p, cert.Certificate[0], 0o600))
			r := runCmd(t, nil, "inspect", "--json", "--cert", p)
			require.Equal(t, exitOK, r.code, r.stderr)
			m := decodeJSON(t, r.stdout)
			assert.EqualValues(t, 5, m["quote_version"])
			assert.Equal(t, true, m["debug"])
			assert.Equal(t, true, m["key_binding"])
			assert.Equal(t, true, m["rtmr3_replay"])
			assert.Equal(t, agent.TD().ComposeHashHex(), m["compose_hash"])
		})
	}
}

func TestInspectSwappedKey(t *testing.T) {
	t.Parallel()
	_, agent := newAgent(t, ratlstest.AgentOptions{})
	cert := agentCertificate(t, agent)
	path := writeChainPEM(t, [][]byte{swappedKey(t, cert.Leaf)})

	r := runCmd(t, nil, "inspect", "--json", "--cert", path)
	assert.Equal(t, exitFail, r.code)
	m := decodeJSON(t, r.stdout)
	assert.Equal(t, false, m["key_binding"])
	// The quote itself is still shown: it is what the certificate claims.
	assert.Equal(t, agent.TD().MRTDHex(), m["mrtd"])
	assert.Contains(t, r.stderr, "does not bind the certificate key")

	r = runCmd(t, nil, "inspect", "--cert", path)
	assert.Equal(t, exitFail, r.code)
	assert.Contains(t, r.stdout, "FAILED")
}

// throwawayCertificate is a self-signed certificate carrying no quote.
func throwawayCertificate() (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "ratls inspect"},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

func TestInspectNoQuote(t *testing.T) {
	t.Parallel()
	cert, err := throwawayCertificate()
	require.NoError(t, err)
	path := writeChainPEM(t, cert.Certificate)
	r := runCmd(t, nil, "inspect", "--json", "--cert", path)
	assert.Equal(t, exitFail, r.code)
	m := decodeJSON(t, r.stdout)
	assert.EqualValues(t, 0, m["quote_version"])
	assert.Equal(t, false, m["key_binding"])
	assert.Equal(t, "CN=ratls inspect", m["subject"])
	assert.Contains(t, r.stderr, "no TDX quote")
}

func TestInspectUsage(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"inspect"},
		{"inspect", "--cert", "x.pem", "host:1"},
		{"inspect", "a:1", "b:2"},
		{"inspect", "no-port"},
		{"inspect", "--mrtd", "12", "host:1"},
	} {
		r := runCmd(t, nil, args...)
		assert.Equal(t, exitUsage, r.code, "%v: %s", args, r.stderr)
	}
	p := filepath.Join(t.TempDir(), "junk.pem")
	require.NoError(t, os.WriteFile(p, []byte("-----BEGIN NOTHING-----\n-----END NOTHING-----\n"), 0o600))
	r := runCmd(t, nil, "inspect", "--cert", p)
	assert.Equal(t, exitFail, r.code)
	assert.Equal(t, 1, strings.Count(r.stderr, "\n"), r.stderr)
}

// --cert reads PEM only from a file that starts with it, else one DER
// certificate: files that merely embed PEM (a quote carries its PCK chain
// as PEM text) are refused, not shown as "the certificate".
func TestInspectNotACertificate(t *testing.T) {
	t.Parallel()
	cert, err := throwawayCertificate()
	require.NoError(t, err)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})
	dir := t.TempDir()
	embedded := filepath.Join(dir, "notes.txt")
	require.NoError(t, os.WriteFile(embedded, append([]byte("the server's certificate:\n"), certPEM...), 0o600))

	for _, p := range []string{testdata("dstack", "attestation.bin"), testdata("dcap-qvl", "tdx_quote"), embedded} {
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		require.Contains(t, string(b), "-----BEGIN CERTIFICATE-----", "%s must embed PEM for this test to mean anything", p)
		for _, args := range [][]string{{"inspect", "--cert", p}, {"inspect", "--json", "--cert", p}} {
			r := runCmd(t, nil, args...)
			assert.Equal(t, exitFail, r.code, args)
			assert.Empty(t, r.stdout, args)
			assert.Contains(t, r.stderr, p+": not a PEM or DER certificate", args)
			assert.Equal(t, 1, strings.Count(r.stderr, "\n"), r.stderr)
		}
	}

	// PEM after leading whitespace is read (the certificate carries no
	// quote, hence exit 1, but it is the one shown).
	indented := filepath.Join(dir, "indented.pem")
	require.NoError(t, os.WriteFile(indented, append([]byte("\n \t\r\n"), certPEM...), 0o600))
	r := runCmd(t, nil, "inspect", "--json", "--cert", indented)
	assert.Equal(t, exitFail, r.code)
	assert.Equal(t, "CN=ratls inspect", decodeJSON(t, r.stdout)["subject"])
	assert.Contains(t, r.stderr, "no TDX quote")
}

// tlsServer serves cert and records whether anything arrived after the
// handshake and whether the client presented a certificate.
type tlsServer struct {
	addr       string
	mu         sync.Mutex
	afterBytes int
	clientCert bool
	handshakes int
	ended      int
}

func startTLSServer(t *testing.T, cert *tls.Certificate, clientAuth tls.ClientAuthType) *tlsServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &tlsServer{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{*cert}, ClientAuth: clientAuth})
				herr := tc.Handshake()
				s.mu.Lock()
				s.handshakes++
				s.clientCert = herr == nil && len(tc.ConnectionState().PeerCertificates) > 0
				s.mu.Unlock()
				var n int64
				if herr == nil {
					n, _ = io.Copy(io.Discard, tc)
				}
				s.mu.Lock()
				s.afterBytes += int(n)
				s.ended++
				s.mu.Unlock()
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return s
}

func (s *tlsServer) stats() (ended, after int, clientCert bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ended, s.afterBytes, s.clientCert
}

func TestInspectLive(t *testing.T) {
	t.Parallel()
	_, agent := newAgent(t, ratlstest.AgentOptions{})
	for _, auth := range []tls.ClientAuthType{tls.RequestClientCert, tls.RequireAnyClientCert} {
		srv := startTLSServer(t, agentCertificate(t, agent), auth)

		// No client certificate is available: none is presented, and a
		// server that requires one still shows its own.
		r := runCmd(t, nil, "inspect", "--json", srv.addr)
		require.Equal(t, exitOK, r.code, r.stderr)
		m := decodeJSON(t, r.stdout)
		assert.Equal(t, agent.TD().MRTDHex(), m["mrtd"])
		assert.Equal(t, true, m["key_binding"])
		assert.Equal(t, true, m["rtmr3_replay"])

		require.Eventually(t, func() bool { ended, _, _ := srv.stats(); return ended == 1 }, 10*time.Second, 10*time.Millisecond)
		_, after, clientCert := srv.stats()
		assert.Zero(t, after, "bytes sent after the handshake")
		assert.False(t, clientCert)
	}
}

// With a client certificate available (here: the agent's, through
// DSTACK_SIMULATOR_ENDPOINT), inspect presents it, so a server that
// requires one still shows its certificate.
func TestInspectLiveWithAgentClientCert(t *testing.T) {
	t.Parallel()
	_, agent := newAgent(t, ratlstest.AgentOptions{})
	srv := startTLSServer(t, agentCertificate(t, agent), tls.RequireAnyClientCert)
	env := map[string]string{envAgent: agent.URL()}
	r := runCmd(t, env, "inspect", "--json", srv.addr)
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Equal(t, agent.TD().MRTDHex(), decodeJSON(t, r.stdout)["mrtd"])
	require.Eventually(t, func() bool { _, _, cc := srv.stats(); return cc }, 10*time.Second, 10*time.Millisecond)
}

func TestInspectLiveNoServer(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close()
	r := runCmd(t, nil, "inspect", "--timeout", "5s", addr)
	assert.Equal(t, exitFail, r.code)
	assert.Equal(t, 1, strings.Count(r.stderr, "\n"), r.stderr)
	assert.Contains(t, r.stderr, "connection refused")
}
