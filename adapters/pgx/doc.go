// Package ratlspgx connects pgx (github.com/jackc/pgx/v5) to PostgreSQL
// front ends in Intel TDX trust domains, such as the TeeSQL sidecar, over
// attested TLS.
//
// [ParseConfig] and [ParsePoolConfig] turn a DSN and a *ratls.Client into a
// pgx configuration whose every connection, including cancel requests and
// every host of a multi-host DSN, is dialed by the ratls client: TLS starts
// with a raw ClientHello as the first byte, the server's quote is verified
// inside the handshake, and only then does pgx write its StartupMessage.
// pgx's own TLS is switched off, so pgx never sends an SSLRequest, and the
// sslmode of the DSN has no effect: there is no plaintext fallback, whatever
// it says (disable, allow, prefer, require and verify-* all mean "attested
// TLS"; sslrootcert, sslcert, sslkey and sslnegotiation are ignored, except
// that pgx still reads the files they name while parsing).
//
// # Traps closed
//
//   - Fallbacks: pgx implements sslmode=prefer and allow as a second attempt
//     at the same host, one of them plaintext. The configuration keeps one
//     attempt per distinct host and port, each dialed by ratls with pgx TLS
//     off.
//   - Host names: pgx normally resolves host names itself and dials IP
//     addresses, which would put an IP address in the SNI. The
//     configuration hands host names to the ratls dialer unresolved, so each
//     host is dialed, verified and routed (SNI) under its own name.
//   - Cancel requests: pgx dials them with the same DialFunc, to the
//     connection's RemoteAddr. The connections this package returns report
//     the host:port they were dialed with as RemoteAddr, so a cancel request
//     is attested and carries the same SNI as the connection it cancels (it
//     may reach another server behind a load-balanced name, where it is
//     ignored). A context that ends during a query sends a cancel request
//     (pgconn.CancelRequestContextWatcherHandler) and, if the server does not
//     answer within [Options.CancelGrace], cuts the connection.
//   - Errors: an attestation failure reaches the caller wrapped by pgx
//     (pgconn.ConnectError) and still matches the ratls sentinel with
//     errors.Is.
//
// # Credentials
//
// Before any network I/O, the DSN must parse ([ErrBadDSN] otherwise), name a
// TCP host, and, unless [Options.AllowAnyCredentials] is set, follow the
// TeeSQL sidecar's rule ([ErrBadCredentials] otherwise): user teesql_read or
// teesql_readwrite, password exactly 64 lower-case hex characters (upper
// case is refused: the secret has one spelling and is never rewritten).
// Error messages never contain the password.
//
// # Re-verification in pools
//
// A connection is attested once, in its handshake; what was verified holds
// until the report's ValidUntil (the earliest expiry of the collateral, the
// certificate and the client's verification cache). [ParsePoolConfig] makes
// the pool recycle connections past that point: PrepareConn (run before a
// connection is handed out) and AfterRelease destroy a connection whose
// report has expired or that is older than [Options.MaxConnAge], and pgx
// then dials a fresh, freshly attested one. MaxConnAge also caps the pool's
// MaxConnLifetime, so idle connections are recycled by the health check. A
// connection in use is never cut: a long transaction runs to its end on the
// connection it started on. A single *pgx.Conn is not re-verified: check
// [Report] yourself, or use a pool.
//
// Limits: SCRAM channel binding is not used (pgx sees a wrapped connection,
// not a *tls.Conn; the TeeSQL sidecar does not offer it anyway), so
// channel_binding=require is refused as [ErrBadDSN]. Unix socket hosts are
// refused. An AfterNetConnect hook that wraps the connection must expose it
// through a NetConn() net.Conn method, or [Report] cannot find the report
// and pools refuse the connection.
package ratlspgx
