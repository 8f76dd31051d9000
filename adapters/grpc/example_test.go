package ratlsgrpc_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/teesql/ratls"
	ratlsgrpc "github.com/teesql/ratls/adapters/grpc"
	"github.com/teesql/ratls/ratlstest"
)

// pinnedHealth admits only callers running the pinned image.
type pinnedHealth struct {
	*health.Server
	mrtd string
}

func (h pinnedHealth) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	r, ok := ratlsgrpc.ReportFromContext(ctx)
	if !ok || fmt.Sprintf("%x", r.MRTD) != h.mrtd {
		return nil, status.Error(codes.PermissionDenied, "caller not running the pinned image")
	}
	return h.Server.Check(ctx, req)
}

// Two services in CVMs calling each other over mutually attested gRPC; here
// both run on the simulated TEE stack of ratlstest.
func Example() {
	st, err := ratlstest.NewStack(ratlstest.StackOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()

	// Server side: its certificate from the dstack agent; clients' quotes
	// verified under st.ServerConfig's policy.
	srv, err := ratls.NewServer(ctx, st.ServerConfig)
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	gs := grpc.NewServer(grpc.Creds(ratlsgrpc.NewServerCredentials(srv)))
	healthpb.RegisterHealthServer(gs, pinnedHealth{health.NewServer(), st.Agent.TD().MRTDHex()})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go gs.Serve(ln)
	defer gs.Stop()

	// Client side.
	client, err := ratls.NewClient(ctx, st.Config)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(ratlsgrpc.NewClientCredentials(client)))
	if err != nil {
		log.Fatal(err)
	}
	defer cc.Close()

	resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(resp.Status)
	// Output: SERVING
}

// Why was a server refused? The RPC's status error only carries text;
// the same handshake made outside gRPC returns the ratls sentinel.
func Example_attestationFailure() {
	st, err := ratlstest.NewStack(ratlstest.StackOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	// A genuine TD running an image the client's policy does not allow.
	adv, err := st.NewAdversary(ratlstest.WrongMRTD)
	if err != nil {
		log.Fatal(err)
	}
	defer adv.Close()

	client, err := ratls.NewClient(ctx, st.Config)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	cc, err := grpc.NewClient(adv.Addr(), grpc.WithTransportCredentials(ratlsgrpc.NewClientCredentials(client)))
	if err != nil {
		log.Fatal(err)
	}
	defer cc.Close()

	_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	fmt.Println("RPC:", status.Code(err), errors.Is(err, ratls.ErrMRTDNotAllowed))

	conn, err := client.DialContext(ctx, "tcp", adv.Addr())
	if err == nil {
		conn.Close()
	}
	fmt.Println("handshake:", errors.Is(err, ratls.ErrMRTDNotAllowed))
	// Output:
	// RPC: Unavailable false
	// handshake: true
}
