package ratlspq_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"time"

	"github.com/teesql/ratls"
	ratlspq "github.com/teesql/ratls/adapters/pq"
	"github.com/teesql/ratls/ratlstest"
)

// database/sql over lib/pq to a TeeSQL cluster, from inside a CVM.
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

	connector, err := ratlspq.NewConnector(
		"postgres://teesql_read:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef@db.example:5433/app",
		client, nil)
	if err != nil {
		log.Fatal(err)
	}
	db := sql.OpenDB(connector)
	defer db.Close()
	// Connections are attested when made: bound their life to have the
	// server attested again.
	db.SetConnMaxLifetime(10 * time.Minute)

	var n int64
	err = db.QueryRowContext(ctx, "SELECT count(*) FROM orders").Scan(&n)
	if errors.Is(err, ratls.ErrMRTDNotAllowed) {
		log.Fatal("the server runs another image: ", err)
	}
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(n)
}

// A DSN that breaks the TeeSQL rule is refused before any network I/O,
// without quoting the password.
func ExampleNewConnector() {
	st, err := ratlstest.NewStack(ratlstest.StackOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()
	client, err := st.NewClient(context.Background())
	if err != nil {
		log.Fatal(err)
	}

	_, err = ratlspq.NewConnector("postgres://teesql_read:0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF@db.example:5433/app", client, nil)
	fmt.Println(errors.Is(err, ratlspq.ErrBadCredentials))
	fmt.Println(err)
	// Output:
	// true
	// ratls/dsn: credentials not accepted by the TeeSQL rule: password must be 64 lower-case hex characters, found upper-case hex digits (write the secret in lower case)
}
