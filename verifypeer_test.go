package ratls

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"

	"github.com/teesql/ratls/tdx"
)

// benchVerify measures VerifyConnection with a verifier that checks
// nothing: what the core itself costs per handshake (extension and quote
// parsing, key binding, event log replay, policy), with and without the
// result cache.
func benchVerify(b *testing.B, cacheTTL time.Duration) {
	events, rtmr3 := appEvents(b, bytes.Repeat([]byte{1}, 20), bytes.Repeat([]byte{2}, 32))
	cert := mintCert(b, certSpec{events: events, mutate: func(q *tdx.Quote) { q.Body.RTMR[3] = rtmr3 }})
	c := testClient(b, Config{Verifier: newFakeVerifier(), CacheTTL: cacheTTL})
	cs := tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert.Leaf}}
	for b.Loop() {
		if _, err := c.VerifyConnection(cs); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyUncached(b *testing.B) { benchVerify(b, -1) }
func BenchmarkVerifyCached(b *testing.B)   { benchVerify(b, 0) }

// BenchmarkDial is a full loopback TLS 1.3 handshake with a cached
// verification.
func BenchmarkDial(b *testing.B) {
	srv := startTLSServer(b, &tls.Config{Certificates: []tls.Certificate{mintCert(b, certSpec{})}})
	c := testClient(b, Config{Verifier: newFakeVerifier()})
	for b.Loop() {
		conn, err := c.DialContext(context.Background(), "tcp", srv.addr)
		if err != nil {
			b.Fatal(err)
		}
		conn.Close()
		srv.result(b)
	}
}
