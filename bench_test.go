package ratls_test

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/teesql/ratls"
	"github.com/teesql/ratls/ratlstest"
)

// BenchmarkHandshake compares, in one run, a loopback TLS 1.3 handshake
// that verifies nothing (the baseline) with ratls handshakes against the
// same server certificate: with the verification cache (the steady state
// of a client reconnecting to one server) and without it (full DCAP on
// every handshake, collateral cached). Each sub-benchmark reports its ratio
// to the baseline as "x-plain-tls"; the baseline is re-measured inside
// every sub-benchmark so that the ratio compares like with like.
//
//	go test . -run=NONE -bench=Handshake -benchmem
func BenchmarkHandshake(b *testing.B) {
	quiet := slog.New(slog.DiscardHandler)
	stack, err := ratlstest.NewStack(ratlstest.StackOptions{Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { stack.Close() })
	cert, err := stack.Agent.Certificate(ratlstest.TLSKeyRequest{UsageRATLS: true, UsageServerAuth: true})
	if err != nil {
		b.Fatal(err)
	}
	addr := serveTLS(b, &tls.Config{Certificates: []tls.Certificate{*cert}})

	plain := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}
	plainDial := func() error {
		conn, err := tls.Dial("tcp", addr, plain)
		if err != nil {
			return err
		}
		return conn.Close()
	}

	for _, bc := range []struct {
		name     string
		cacheTTL time.Duration
	}{
		{"cached", 0},
		{"full-dcap", -1},
	} {
		b.Run(bc.name, func(b *testing.B) {
			cfg := stack.Config
			cfg.CacheTTL = bc.cacheTTL
			cfg.Logger = quiet
			client, err := ratls.NewClient(context.Background(), cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer client.Close()
			attested := func() error {
				conn, err := client.DialContext(context.Background(), "tcp", addr)
				if err != nil {
					return err
				}
				return conn.Close()
			}
			if err := attested(); err != nil { // warm the collateral cache
				b.Fatal(err)
			}
			var base, ours time.Duration
			for b.Loop() {
				start := time.Now()
				if err := plainDial(); err != nil {
					b.Fatal(err)
				}
				mid := time.Now()
				if err := attested(); err != nil {
					b.Fatal(err)
				}
				base += mid.Sub(start)
				ours += time.Since(mid)
			}
			n := float64(b.N)
			b.ReportMetric(float64(base.Nanoseconds())/n, "plain-ns/hs")
			b.ReportMetric(float64(ours.Nanoseconds())/n, "ratls-ns/hs")
			b.ReportMetric(float64(ours)/float64(base), "x-plain-tls")
		})
	}
}

// serveTLS accepts TLS connections on loopback and completes their
// handshakes until the benchmark ends.
func serveTLS(b *testing.B, cfg *tls.Config) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			raw, err := ln.Accept()
			if err != nil {
				return
			}
			conn := tls.Server(raw, cfg)
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			if conn.Handshake() == nil {
				io.Copy(io.Discard, conn) // until the client closes
			}
			conn.Close()
		}
	}()
	b.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}
