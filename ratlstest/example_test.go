package ratlstest_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"time"

	"github.com/Dstack-TEE/dstack/sdk/go/dstack"

	"github.com/teesql/ratls"
	"github.com/teesql/ratls/dcap"
	"github.com/teesql/ratls/ratlstest"
	"github.com/teesql/ratls/tdx"
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

// A quote with chosen contents (version 5, TD 1.5 body, chosen MRTD and
// REPORTDATA) judged by the real DCAP verifier against collateral rating
// the platform SWHardeningNeeded, then against collateral whose
// nextUpdate has passed.
func ExampleAuthority_MintQuote() {
	auth, err := ratlstest.NewAuthority(ratlstest.AuthorityOptions{})
	if err != nil {
		log.Fatal(err)
	}
	quote, err := auth.MintQuote(ratlstest.QuoteOptions{
		Version:  5,
		BodyType: tdx.BodyTypeTD15,
		Body: tdx.TDReport{
			MRTD:       ratlstest.OtherMRTD(),
			ReportData: [64]byte{0: 0xca, 1: 0xfe},
		}, // every other field: DefaultBody's
	})
	if err != nil {
		log.Fatal(err)
	}

	levels := auth.TCBLevels() // the platform's level first
	levels[0].Status = tdx.TCBSWHardeningNeeded
	levels[0].AdvisoryIDs = []string{"INTEL-SA-00615"}
	coll, err := auth.Collateral(ratlstest.CollateralOptions{TCBLevels: levels})
	if err != nil {
		log.Fatal(err)
	}

	// Offline verification: the collateral URL is never contacted.
	v, err := auth.NewVerifier("http://127.0.0.1:1", dcap.Options{})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	verdict, err := v.VerifyWithCollateral(ctx, quote, coll, auth.Now())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("version:", verdict.Quote.Header.Version, "TD 1.5:", verdict.Quote.BodyType == tdx.BodyTypeTD15)
	fmt.Println("MRTD as chosen:", verdict.Quote.Body.MRTD == ratlstest.OtherMRTD())
	fmt.Printf("REPORTDATA: %x...\n", verdict.Quote.Body.ReportData[:2])
	fmt.Println("TCB status:", verdict.TCBStatus, verdict.AdvisoryIDs)

	stale, err := auth.Collateral(ratlstest.CollateralOptions{NextUpdate: auth.Now().Add(-time.Hour)})
	if err != nil {
		log.Fatal(err)
	}
	_, err = v.VerifyWithCollateral(ctx, quote, stale, auth.Now())
	fmt.Println("stale collateral refused:", errors.Is(err, dcap.ErrCollateralExpired))
	// Output:
	// version: 5 TD 1.5: true
	// MRTD as chosen: true
	// REPORTDATA: cafe...
	// TCB status: SWHardeningNeeded [INTEL-SA-00615]
	// stale collateral refused: true
}
