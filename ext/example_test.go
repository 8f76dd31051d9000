package ext_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log"
	"math/big"
	"os"
	"time"

	"github.com/teesql/ratls/ext"
	"github.com/teesql/ratls/tdx"
)

// The app identity is read from a full V0 envelope. In a real verifier the
// quote is verified first (package dcap): only then is its RTMR3 a value to
// replay against.
func ExampleParseEnvelope() {
	b, err := os.ReadFile("../testdata/dstack/attestation.bin")
	if err != nil {
		log.Fatal(err)
	}
	a, err := ext.ParseEnvelope(b)
	if err != nil {
		log.Fatal(err)
	}
	q, err := tdx.ParseQuote(a.Quote)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("quote v%d, %d bytes, %d events\n", q.Header.Version, len(a.Quote), len(a.Events))

	id, err := ext.VerifiedAppIdentity(a.Events, q.Body.RTMR[3])
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("app-id       %x\n", id.AppID)
	fmt.Printf("compose-hash %x\n", id.ComposeHash)
	// Output:
	// quote v4, 5010 bytes, 33 events
	// app-id       5bb4ff9a3837357f19dc176407a5709c62eb6c56
	// compose-hash c143116fef3940e7f776bfc0919c256232ae5338a6e948c96b711e0b2383483a
}

func ExampleFromCertificate() {
	cert := liteCertificate()

	a, err := ext.FromCertificate(cert)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("quote from %v (%d bytes), %d events, usage %q\n", a.SourceOID, len(a.Quote), len(a.Events), a.Usage)

	q, err := tdx.ParseQuote(a.Quote) // verify it with package dcap first
	if err != nil {
		log.Fatal(err)
	}
	rtmr3, err := ext.Replay(a.Events, 3)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("RTMR3 replays:", rtmr3 == q.Body.RTMR[3])
	// Output:
	// quote from 1.3.6.1.4.1.62397.1.8 (5006 bytes), 12 events, usage "app:custom"
	// RTMR3 replays: true
}

func ExampleExtensions() {
	b, err := os.ReadFile("../testdata/dstack/attestation.bin")
	if err != nil {
		log.Fatal(err)
	}
	a, err := ext.ParseEnvelope(b)
	if err != nil {
		log.Fatal(err)
	}
	for _, legacy := range []bool{false, true} {
		exts, err := ext.Extensions(a, legacy)
		if err != nil {
			log.Fatal(err)
		}
		for _, e := range exts {
			fmt.Println(e.Id)
		}
	}
	// Output:
	// 1.3.6.1.4.1.62397.1.8
	// 1.3.6.1.4.1.62397.1.1
	// 1.3.6.1.4.1.62397.1.2
}

// liteCertificate issues a certificate carrying the stripped envelope of
// testdata/dstack/tdx-lite-attestation.json, as a dstack guest agent would.
func liteCertificate() *x509.Certificate {
	doc, err := os.ReadFile("../testdata/dstack/tdx-lite-attestation.json")
	if err != nil {
		log.Fatal(err)
	}
	var fixture struct{ Attestation string }
	if err := json.Unmarshal(doc, &fixture); err != nil {
		log.Fatal(err)
	}
	env, err := hex.DecodeString(fixture.Attestation)
	if err != nil {
		log.Fatal(err)
	}
	a, err := ext.ParseEnvelope(env)
	if err != nil {
		log.Fatal(err)
	}
	a.Usage = "app:custom"
	exts, err := ext.Extensions(a, false)
	if err != nil {
		log.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:    big.NewInt(1),
		Subject:         pkix.Name{CommonName: "app"},
		NotBefore:       time.Unix(0, 0),
		NotAfter:        time.Unix(1<<31, 0),
		ExtraExtensions: exts,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		log.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		log.Fatal(err)
	}
	return cert
}
