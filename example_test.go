package ratls_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"time"

	"github.com/teesql/ratls"
	"github.com/teesql/ratls/ratlstest"
	"github.com/teesql/ratls/tdx"
)

// A client inside a dstack CVM connecting to an attested database. The
// zero Config verifies quotes with DCAP against Intel's root and PCS and
// presents a certificate from the local guest agent; the Policy says which
// code the server must run.
func ExampleNewClient() {
	ctx := context.Background()
	client, err := ratls.NewClient(ctx, ratls.Config{
		Policy: ratls.Policy{
			MRTDs:         []string{"0x91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7"},
			ComposeHashes: []string{"1a0c5b5bb7a01ab6e4b5e66a5ad7d3b4a7c8e1f0d2c3b4a5968778695a4b3c2d"},
		},
	})
	if errors.Is(err, ratls.ErrMissingDstackSocket) {
		log.Fatal("not running in a dstack CVM: ", err)
	} else if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	conn, err := client.DialContext(ctx, "tcp", "db.example.com:5433")
	if err != nil {
		// errors.Is(err, ratls.ErrMRTDNotAllowed), ratls.ErrKeyBinding, ...
		log.Fatal(err)
	}
	defer conn.Close()
	report, _ := client.Report(conn)
	fmt.Printf("server MRTD %x, TCB %s\n", report.MRTD, report.TCBStatus)
}

// DialContext against a simulated TEE: ratlstest's stack plays the Intel
// PKI, the collateral service and the dstack guest agent, so that the same
// code runs without TDX hardware.
func ExampleClient_DialContext() {
	ctx := context.Background()
	quiet := slog.New(slog.DiscardHandler)
	stack, err := ratlstest.NewStack(ratlstest.StackOptions{Logger: quiet})
	if err != nil {
		log.Fatal(err)
	}
	defer stack.Close()

	// The server side, as a service in a CVM runs it.
	server, err := ratls.NewServer(ctx, stack.ServerConfig)
	if err != nil {
		log.Fatal(err)
	}
	defer server.Close()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", server.TLSConfig())
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				io.Copy(conn, conn) // the handshake, client attestation included, runs on first read
			}()
		}
	}()

	// The client side. stack.Config pins the simulated TD's MRTD and
	// compose hash and trusts the test PKI.
	client, err := ratls.NewClient(ctx, stack.Config)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	conn, err := client.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()

	report, _ := client.Report(conn)
	td := stack.Agent.TD()
	fmt.Println("TCB status:", report.TCBStatus)
	fmt.Println("MRTD as pinned:", report.MRTD == td.MRTD)
	fmt.Println("compose hash as pinned:", bytes.Equal(report.App.ComposeHash, td.ComposeHash[:]))
	fmt.Fprint(conn, "ping")
	reply := make([]byte, 4)
	io.ReadFull(conn, reply)
	fmt.Println("reply:", string(reply))
	// Output:
	// TCB status: UpToDate
	// MRTD as pinned: true
	// compose hash as pinned: true
	// reply: ping
}

// Policies are checked when the Client is built: a typo in a pinned
// measurement is an error, never a silently empty allowlist.
func ExamplePolicy() {
	policy := ratls.Policy{
		MRTDs: []string{"0xZZ"},
		// Also accept platforms that need a configuration change.
		AcceptTCBStatuses: []tdx.TCBStatus{tdx.TCBUpToDate, tdx.TCBSWHardeningNeeded, tdx.TCBConfigurationNeeded},
	}
	_, err := ratls.NewClient(context.Background(), ratls.Config{Policy: policy})
	fmt.Println(errors.Is(err, ratls.ErrConfig))
	fmt.Println(err)
	// Output:
	// true
	// ratls: invalid configuration: Policy.MRTDs[0]: "0xZZ" is not hex: encoding/hex: invalid byte: U+005A 'Z'
}

// TLSConfig hands the attested configuration to code that dials by itself
// (a database driver, an HTTP transport). Report finds the verified report
// of connections it made.
func ExampleClient_TLSConfig() {
	client, err := ratls.NewClient(context.Background(), ratls.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	dialer := &tls.Dialer{
		NetDialer: &net.Dialer{Timeout: 10 * time.Second},
		Config:    client.TLSConfig("db.example.com"),
	}
	c, err := dialer.DialContext(context.Background(), "tcp", "db.example.com:5433")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if report, ok := client.Report(c.(*tls.Conn)); ok {
		fmt.Printf("app id %x\n", report.App.AppID)
	}
}

// A service in a CVM accepting only attested clients.
func ExampleNewServer() {
	server, err := ratls.NewServer(context.Background(), ratls.ServerConfig{
		ClientPolicy: ratls.Policy{
			MRTDs: []string{"91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7"},
		},
		Subject:  "db.example.com",
		AltNames: []string{"db.example.com"},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer server.Close()
	ln, err := tls.Listen("tcp", ":5433", server.TLSConfig())
	if err != nil {
		log.Fatal(err)
	}
	for {
		conn, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go func() {
			defer conn.Close()
			tc := conn.(*tls.Conn)
			if err := tc.Handshake(); err != nil {
				return // errors.Is(err, ratls.ErrNoQuote), ...
			}
			report, _ := server.Report(tc)
			log.Printf("client compose hash %x", report.App.ComposeHash)
		}()
	}
}

// Auditing a quote obtained out of band (from a log, an attestation API):
// the same verification and policy as a connection, without one. Here the
// quote comes from ratlstest's simulated TEE; in production, pass a nil
// Verifier for DCAP against Intel.
func ExampleVerifyQuote() {
	stack, err := ratlstest.NewStack(ratlstest.StackOptions{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	defer stack.Close()
	td := stack.Agent.TD()
	quote, err := stack.Authority.Quote(td, [64]byte{})
	if err != nil {
		log.Fatal(err)
	}

	ctx := context.Background()
	report, err := ratls.VerifyQuote(ctx, quote, ratls.Policy{MRTDs: []string{td.MRTDHex()}}, stack.Verifier)
	fmt.Println("accepted:", err == nil, report.TCBStatus)

	// A bare quote has no event log: app identity pins cannot hold. The
	// report of the verified quote comes with the policy's refusal.
	pinned := ratls.Policy{ComposeHashes: []string{td.ComposeHashHex()}}
	report, err = ratls.VerifyQuote(ctx, quote, pinned, stack.Verifier)
	fmt.Println("refused:", errors.Is(err, ratls.ErrAppIdentity), report.TCBStatus)
	// Output:
	// accepted: true UpToDate
	// refused: true UpToDate
}

// Checking a certificate saved from a server, for an audit: everything a
// Client checks in a handshake except that the presenter holds the key.
func ExampleVerifyCertificate() {
	stack, err := ratlstest.NewStack(ratlstest.StackOptions{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	defer stack.Close()
	cert, err := stack.Agent.Certificate(ratlstest.TLSKeyRequest{Subject: "db.example.com", UsageRATLS: true, UsageServerAuth: true})
	if err != nil {
		log.Fatal(err)
	}

	report, err := ratls.VerifyCertificate(context.Background(), cert.Leaf, stack.Config.Policy, stack.Verifier)
	if err != nil {
		log.Fatal(err)
	}
	td := stack.Agent.TD()
	fmt.Println("TCB status:", report.TCBStatus)
	fmt.Println("compose hash as pinned:", bytes.Equal(report.App.ComposeHash, td.ComposeHash[:]))
	// Output:
	// TCB status: UpToDate
	// compose hash as pinned: true
}
