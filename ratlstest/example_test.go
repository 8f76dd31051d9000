package ratlstest_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"

	"github.com/Dstack-TEE/dstack/sdk/go/dstack"

	"github.com/teesql/ratls"
	"github.com/teesql/ratls/ratlstest"
)

// A whole simulated TEE on one machine: a client dials an RA-TLS sidecar in
// front of an echo server. Both sides get their certificates from the
// agent double and verify each other's quotes with DCAP against the test
// PKI.
func Example() {
	st, err := ratlstest.NewStack(ratlstest.StackOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()
	echo, err := ratlstest.NewEchoServer()
	if err != nil {
		log.Fatal(err)
	}
	defer echo.Close()

	ctx := context.Background()
	sidecar, err := st.NewSidecar(ctx, echo.Addr())
	if err != nil {
		log.Fatal(err)
	}
	client, err := st.NewClient(ctx)
	if err != nil {
		log.Fatal(err)
	}
	conn, err := client.DialContext(ctx, "tcp", sidecar.Addr())
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()

	report, _ := client.Report(conn)
	fmt.Println("MRTD as pinned:", fmt.Sprintf("%x", report.MRTD) == st.Agent.TD().MRTDHex())
	fmt.Println("TCB status:", report.TCBStatus)
	fmt.Println("compose hash as pinned:", fmt.Sprintf("%x", report.App.ComposeHash) == st.Agent.TD().ComposeHashHex())

	if _, err := conn.Write([]byte("hello")); err != nil {
		log.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(conn, buf); err != nil {
		log.Fatal(err)
	}
	fmt.Println("echoed:", string(buf))
	// Output:
	// MRTD as pinned: true
	// TCB status: UpToDate
	// compose hash as pinned: true
	// echoed: hello
}

// An adversary serving a genuine quote in a certificate for another key is
// refused before the client sends anything.
func ExampleNewAdversary() {
	st, err := ratlstest.NewStack(ratlstest.StackOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	client, err := st.NewClient(ctx)
	if err != nil {
		log.Fatal(err)
	}
	adv, err := st.NewAdversary(ratlstest.SwappedKey)
	if err != nil {
		log.Fatal(err)
	}
	_, err = client.DialContext(ctx, "tcp", adv.Addr())
	fmt.Println("key binding refused:", errors.Is(err, ratls.ErrKeyBinding))
	adv.Close()
	fmt.Println("bytes the adversary got:", adv.BytesReceived())
	// Output:
	// key binding refused: true
	// bytes the adversary got: 0
}

// The agent double speaks the real dstack API: the dstack SDK talks to it
// over its unix socket (or its URL, or via DSTACK_SIMULATOR_ENDPOINT).
func ExampleAgent() {
	auth, err := ratlstest.NewAuthority(ratlstest.AuthorityOptions{})
	if err != nil {
		log.Fatal(err)
	}
	agent, err := ratlstest.NewAgent(auth, ratlstest.AgentOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer agent.Close()

	sdk := dstack.NewDstackClient(dstack.WithEndpoint(agent.SocketPath()))
	resp, err := sdk.GetTlsKey(context.Background(), dstack.WithUsageRaTls(true), dstack.WithUsageServerAuth(true))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("chain length:", len(resp.CertificateChain))
	fmt.Println("calls:", agent.TLSKeyCalls())
	// Output:
	// chain length: 2
	// calls: 1
}
