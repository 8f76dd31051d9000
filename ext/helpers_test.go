package ext

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/teesql/ratls/tdx"
)

// Values read from testdata/dstack/attestation.bin (its RTMR3 runtime
// events), asserted against what the parser finds there.
const (
	fullAppID       = "5bb4ff9a3837357f19dc176407a5709c62eb6c56"
	fullComposeHash = "c143116fef3940e7f776bfc0919c256232ae5338a6e948c96b711e0b2383483a"
	fullInstanceID  = "1691ed1b47506cad7d08834668691d88246f5b1f"
	fullOSImageHash = "e61be43dd1cc6a6f5edefd7c51b608983780839b0000ce60dd99737dcffe09b9"
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", name))
	require.NoError(t, err)
	return b
}

// fullEnvelope is testdata/dstack/attestation.bin: a complete V0 envelope.
func fullEnvelope(t testing.TB) []byte {
	return readTestdata(t, "dstack/attestation.bin")
}

// liteEnvelope is the stripped V0 envelope of
// testdata/dstack/tdx-lite-attestation.json, as found in extension .1.8.
func liteEnvelope(t testing.TB) []byte {
	t.Helper()
	var doc struct {
		Attestation string `json:"attestation"`
	}
	require.NoError(t, json.Unmarshal(readTestdata(t, "dstack/tdx-lite-attestation.json"), &doc))
	b, err := hex.DecodeString(doc.Attestation)
	require.NoError(t, err)
	return b
}

func mustParse(t testing.TB, b []byte) *Attestation {
	t.Helper()
	a, err := ParseEnvelope(b)
	require.NoError(t, err)
	return a
}

func mustQuote(t testing.TB, b []byte) *tdx.Quote {
	t.Helper()
	q, err := tdx.ParseQuote(b)
	require.NoError(t, err)
	return q
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	require.NoError(t, err)
	return b
}

// newCert issues a self-signed certificate carrying exts and parses it
// back, as a TLS peer would receive it.
func newCert(t testing.TB, exts []pkix.Extension) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:    big.NewInt(1),
		Subject:         pkix.Name{CommonName: "ext test"},
		NotBefore:       time.Unix(0, 0),
		NotAfter:        time.Unix(1<<31, 0),
		ExtraExtensions: exts,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return cert
}

// wrapped returns v as dstack writes extension values: a DER OCTET STRING.
func wrapped(v []byte) []byte {
	if len(v) < 128 {
		return append([]byte{0x04, byte(len(v))}, v...)
	}
	n := len(v)
	var l []byte
	for ; n > 0; n >>= 8 {
		l = append([]byte{byte(n)}, l...)
	}
	return append(append([]byte{0x04, 0x80 | byte(len(l))}, l...), v...)
}

// runtimeEvents returns the IMR 3 runtime events of a.
func runtimeEvents(a *Attestation) []Event {
	var out []Event
	for _, ev := range a.Events {
		if ev.IMR == 3 && ev.IsRuntime() {
			out = append(out, ev)
		}
	}
	return out
}
