package ratlspgx_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"time"

	"github.com/teesql/ratls"
	ratlspgx "github.com/teesql/ratls/adapters/pgx"
	"github.com/teesql/ratls/ratlstest"
)

// Connecting to a TeeSQL cluster from inside a CVM: the client certificate
// comes from the local dstack agent, and the server must run the pinned
// image.
func Example() {
	ctx := context.Background()
	client, err := ratls.NewClient(ctx, ratls.Config{
		// The MRTD of the image you deployed (96 hex digits).
		Policy: ratls.Policy{MRTDs: []string{"c68518a0ebb42136c12b2275164f8c72f25fa9a34392228687ed6e9caeb9c0f1dbd895e9cf475121c029dc47e70e91fd"}},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	dsn := "postgres://teesql_read:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef@db.example:5433/app"
	conn, err := ratlspgx.Connect(ctx, dsn, client, nil)
	if errors.Is(err, ratls.ErrMRTDNotAllowed) {
		log.Fatal("the server runs another image: ", err)
	}
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(ctx)

	report, _ := ratlspgx.Report(conn.PgConn())
	fmt.Printf("attested MRTD %x, valid until %s\n", report.MRTD, report.ValidUntil)
}

// A pool that attests every new connection and replaces connections whose
// attestation has expired or that are older than an hour.
func ExampleNewPool() {
	ctx := context.Background()
	client, err := ratls.NewClient(ctx, ratls.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	dsn := "postgres://teesql_readwrite:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef@db.example:5433/app?pool_max_conns=16"
	pool, err := ratlspgx.NewPool(ctx, dsn, client, &ratlspgx.Options{MaxConnAge: time.Hour})
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	var n int64
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM orders").Scan(&n); err != nil {
		log.Fatal(err)
	}
	fmt.Println(n)
}

// What ParseConfig does to a DSN asking for sslmode=prefer: pgx's TLS and
// its plaintext fallback are gone, every connection is attested TLS; and a
// DSN breaking the TeeSQL rule is refused before any network I/O.
func ExampleParseConfig() {
	st, err := ratlstest.NewStack(ratlstest.StackOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()
	client, err := st.NewClient(context.Background())
	if err != nil {
		log.Fatal(err)
	}

	secret := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	cc, err := ratlspgx.ParseConfig("postgres://teesql_read:"+secret+"@db.example:5433/app?sslmode=prefer", client, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("pgx TLS:", cc.TLSConfig != nil, "fallbacks:", len(cc.Fallbacks))

	_, err = ratlspgx.ParseConfig("postgres://admin:hunter2@db.example:5433/app", client, nil)
	fmt.Println(errors.Is(err, ratlspgx.ErrBadCredentials))
	fmt.Println(err)
	// Output:
	// pgx TLS: false fallbacks: 0
	// true
	// ratls/dsn: credentials not accepted by the TeeSQL rule: user "admin" is neither teesql_read nor teesql_readwrite
}
