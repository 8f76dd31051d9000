package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"github.com/teesql/ratls"
	ratlsgrpc "github.com/teesql/ratls/adapters/grpc"
	ratlspgx "github.com/teesql/ratls/adapters/pgx"
	"github.com/teesql/ratls/ratlstest"
)

const demoHelp = `
Runs the whole attested path in one process, on a SIMULATED TEE (no TDX
hardware; quotes chain to a test root made for this run):

  1. a simulated TEE stack: a test DCAP authority, a PCCS double, a dstack
     guest agent double;
  2. an RA-TLS sidecar (the same code as 'ratls sidecar') in front of the
     PostgreSQL of $DATABASE_URL (default
     postgres://postgres@127.0.0.1:5432/postgres);
  3. a pgx client dialing through ratls, which verifies the sidecar inside
     the TLS handshake (DCAP quote, TCB status, key binding, MRTD, app
     identity) before sending a byte, then runs a query;
  4. an attack: a server presenting a genuine quote in a certificate for
     another key, refused.

Without a reachable PostgreSQL it shows the same verification over gRPC, and
says how to get the SQL path ('make demo' starts PostgreSQL).

Exit status: 0 when every step went as expected; 1 otherwise; 2 on bad usage.
`

const defaultDatabaseURL = "postgres://postgres@127.0.0.1:5432/postgres"

func (c *cli) demo(ctx context.Context, args []string) error {
	fs := c.flagSet("demo", "[flags]", demoHelp)
	var (
		dbURL   = fs.String("database-url", c.getenv("DATABASE_URL"), "PostgreSQL `URL` behind the sidecar; default $DATABASE_URL, else "+defaultDatabaseURL)
		timeout = fs.Duration("timeout", 30*time.Second, "bound on the whole demo")
	)
	args, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(args) > 0 {
		return usagef("unexpected argument %q", args[0])
	}
	if *dbURL == "" {
		*dbURL = defaultDatabaseURL
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	d := &demo{w: c.stdout, dbURL: *dbURL, trusting: func(root *x509.Certificate) {
		c.warnNonIntelRoot(root, "the simulated TEE of this demo")
	}}
	return d.run(ctx)
}

type demo struct {
	w     io.Writer
	dbURL string
	step  int
	// trusting announces the root the demo's clients and servers trust.
	trusting func(root *x509.Certificate)
}

func (d *demo) printf(format string, a ...any) { fmt.Fprintf(d.w, format, a...) }

func (d *demo) section(title string) {
	d.step++
	d.printf("\n%d. %s\n", d.step, title)
}

func (d *demo) item(label, value string) { d.printf("   %-22s %s\n", label, value) }

func (d *demo) run(ctx context.Context) error {
	// The components' own logs would drown the narrative.
	stack, err := ratlstest.NewStack(ratlstest.StackOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return err
	}
	defer stack.Close()
	d.trusting(stack.Authority.Root())
	d.printf(`ratls demo: SIMULATED TEE. No Intel TDX hardware is involved: the quotes below are
signed by a test authority created for this run, and the client trusts its root only
because the demo tells it to. A real client trusts Intel's root and nothing else.
`)

	d.section("Simulated TEE stack")
	td := stack.Agent.TD()
	d.item("test DCAP root", stack.Authority.Root().Subject.CommonName)
	d.item("PCCS double", stack.PCCS.URL()+" (FMSPC "+stack.Authority.FMSPC()+")")
	d.item("dstack agent double", stack.Agent.URL())
	d.item("simulated TD MRTD", td.MRTDHex())
	d.item("app compose hash", td.ComposeHashHex())

	client, err := stack.NewClient(ctx)
	if err != nil {
		return err
	}
	d.item("client policy", "MRTD and compose hash pinned as above; TCB UpToDate or SWHardeningNeeded; no debug TD")

	pgAddr, network, reachable := postgresAddr(ctx, d.dbURL)
	if reachable {
		err = d.sql(ctx, stack, client, network, pgAddr)
	} else {
		err = d.grpc(ctx, stack, client, pgAddr)
	}
	if err != nil {
		return err
	}
	d.printf("\nDone: every connection above was verified inside its TLS handshake, before the first byte of data.\n")
	return nil
}

// postgresAddr finds the host:port of dbURL and whether something answers
// there.
func postgresAddr(ctx context.Context, dbURL string) (addr, network string, reachable bool) {
	cfg, err := pgconn.ParseConfig(dbURL)
	if err != nil {
		return dbURL, "tcp", false
	}
	network, addr = "tcp", net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))
	if strings.HasPrefix(cfg.Host, "/") {
		network, addr = "unix", fmt.Sprintf("%s/.s.PGSQL.%d", cfg.Host, cfg.Port)
	}
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var dialer net.Dialer
	conn, err := dialer.DialContext(dctx, network, addr)
	if err != nil {
		return addr, network, false
	}
	conn.Close()
	return addr, network, true
}

// clientDSN points dbURL at the sidecar instead of PostgreSQL.
func clientDSN(dbURL, sidecar string) (string, error) {
	host, port, err := net.SplitHostPort(sidecar)
	if err != nil {
		return "", err
	}
	if strings.HasPrefix(dbURL, "postgres://") || strings.HasPrefix(dbURL, "postgresql://") {
		u, err := url.Parse(dbURL)
		if err != nil {
			return "", fmt.Errorf("DATABASE_URL: %w", err)
		}
		u.Host = sidecar
		return u.String(), nil
	}
	// keyword=value form: later keywords override earlier ones.
	return fmt.Sprintf("%s host=%s port=%s", dbURL, host, port), nil
}

func (d *demo) sql(ctx context.Context, stack *ratlstest.Stack, client *ratls.Client, network, pgAddr string) error {
	d.section("RA-TLS sidecar in front of PostgreSQL")
	upstream := pgAddr
	if network == "unix" {
		upstream = "unix:" + pgAddr
	}
	sc, err := stack.NewSidecar(ctx, upstream)
	if err != nil {
		return err
	}
	d.item("PostgreSQL", pgAddr)
	d.item("sidecar", sc.Addr()+" (certificate from the agent double; client certificates required)")

	d.section("pgx connects through ratls (full DCAP verification)")
	dsn, err := clientDSN(d.dbURL, sc.Addr())
	if err != nil {
		return err
	}
	// The demo's PostgreSQL role is not a TeeSQL one, hence
	// AllowAnyCredentials; the attested dial is the same.
	opts := &ratlspgx.Options{AllowAnyCredentials: true}
	conn, err := ratlspgx.Connect(ctx, dsn, client, opts)
	if err != nil {
		return fmt.Errorf("connecting through the sidecar: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rep, ok := ratlspgx.Report(conn.PgConn())
	if !ok {
		return errors.New("the pgx connection carries no attestation report")
	}
	d.printReport(rep)

	const query = "SELECT current_user, version()"
	var user, version string
	if err := conn.QueryRow(ctx, query).Scan(&user, &version); err != nil {
		return fmt.Errorf("query: %w", err)
	}
	d.item("query", query)
	d.item("result", fmt.Sprintf("current_user=%s, %s", user, version))

	d.section("Attack: a server with a swapped key (a genuine quote copied into a certificate for its own key)")
	adv, err := stack.NewAdversary(ratlstest.SwappedKey)
	if err != nil {
		return err
	}
	advDSN, err := clientDSN(d.dbURL, adv.Addr())
	if err != nil {
		return err
	}
	_, err = ratlspgx.Connect(ctx, advDSN, client, opts)
	return d.refused(err, adv)
}

func (d *demo) grpc(ctx context.Context, stack *ratlstest.Stack, client *ratls.Client, pgAddr string) error {
	d.printf("\n   PostgreSQL is not reachable at %s: showing attestation over gRPC instead.\n", pgAddr)
	d.printf("   For the SQL path start PostgreSQL ('make demo' does) or set DATABASE_URL.\n")

	d.section("Attested gRPC server (RA-TLS certificate from the agent double; clients attested too)")
	srv, err := stack.NewServer(ctx)
	if err != nil {
		return err
	}
	clientReports := make(chan *ratls.Report, 1)
	gs := grpc.NewServer(
		grpc.Creds(ratlsgrpc.NewServerCredentials(srv)),
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if rep, ok := ratlsgrpc.ReportFromContext(ctx); ok {
				select {
				case clientReports <- rep:
				default:
				}
			}
			return h(ctx, req)
		}))
	healthpb.RegisterHealthServer(gs, health.NewServer())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		gs.Serve(ln)
	}()
	defer func() {
		gs.Stop()
		<-served
	}()
	d.item("server", ln.Addr().String())

	d.section("gRPC client connects through ratls (full DCAP verification)")
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(ratlsgrpc.NewClientCredentials(client)))
	if err != nil {
		return err
	}
	defer conn.Close()
	var p peer.Peer
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p))
	if err != nil {
		return fmt.Errorf("health check: %w", err)
	}
	ai, ok := p.AuthInfo.(ratlsgrpc.AuthInfo)
	if !ok || ai.Report == nil {
		return errors.New("the gRPC connection carries no attestation report")
	}
	d.printReport(ai.Report)
	d.item("call", "grpc.health.v1.Health/Check -> "+resp.GetStatus().String())
	select {
	case rep := <-clientReports:
		d.item("server verified client", "MRTD "+hexs(rep.MRTD[:])+" (mutual attestation)")
	default:
	}

	d.section("Attack: a server with a swapped key (a genuine quote copied into a certificate for its own key)")
	adv, err := stack.NewAdversary(ratlstest.SwappedKey)
	if err != nil {
		return err
	}
	// A direct dial shows the library's error as is; gRPC would wrap it in
	// a status.
	_, err = client.DialContext(ctx, "tcp", adv.Addr())
	return d.refused(err, adv)
}

// printReport says what the client verified about the server.
func (d *demo) printReport(rep *ratls.Report) {
	d.printf("   Verified inside the TLS handshake, before any application byte was sent:\n")
	d.item("quote", fmt.Sprintf("TDX v%d, signature and PCK chain ok (test root), from %s", rep.QuoteVersion, rep.SourceOID))
	d.item("TCB status", fmt.Sprintf("%s (FMSPC %s)", rep.TCBStatus, rep.FMSPC))
	d.item("key binding", "ok: REPORTDATA = SHA-512(\"ratls-cert:\" || the server's public key)")
	d.item("MRTD", hexs(rep.MRTD[:])+" (allowed)")
	d.item("debug TD", fmt.Sprint(rep.Debug))
	if rep.App != nil {
		d.item("app identity", "RTMR3 event log replays to the quote")
		d.item("  compose hash", hexs(rep.App.ComposeHash)+" (allowed)")
		d.item("  app id", hexs(rep.App.AppID))
		d.item("  instance id", hexs(rep.App.InstanceID))
	}
	d.item("valid until", rep.ValidUntil.UTC().Format(time.RFC3339))
}

// refused reports the attack's outcome: it must have failed on the key
// binding, with nothing sent to the attacker.
func (d *demo) refused(err error, adv *ratlstest.Adversary) error {
	if err == nil {
		return errors.New("the swapped-key server was ACCEPTED: this is a bug")
	}
	if !errors.Is(err, ratls.ErrKeyBinding) {
		return fmt.Errorf("the swapped-key server was refused for an unexpected reason: %w", err)
	}
	d.item("refused", ratls.ErrKeyBinding.Error())
	d.item("full error", oneLine(err.Error()))
	d.item("bytes it received", fmt.Sprintf("%d (after the handshake)", adv.BytesReceived()))
	if adv.BytesReceived() != 0 {
		return errors.New("the swapped-key server received application data")
	}
	return nil
}
