package ratls

import (
	"crypto/x509"
	"runtime"
	"sync"
	"weak"
)

// reportRegistry remembers the report of each peer certificate verified by
// one Client or Server, so that Report(conn) can find it after a handshake
// driven by anyone (Dial, a driver using TLSConfig, a gRPC server).
//
// The VerifyConnection hook sees only a tls.ConnectionState, never the
// *tls.Conn, but the *x509.Certificate pointers it sees are the ones
// conn.ConnectionState() returns later. Entries are keyed by a weak pointer
// to the leaf and dropped when the certificate is garbage collected, which
// happens once no connection, session ticket or crypto/tls cache holds it:
// the registry cannot leak. Connections that share a leaf pointer (crypto/tls
// shares parsed certificates between connections to one server) share the
// latest report for it; they presented the same certificate and passed the
// same policy.
type reportRegistry struct {
	mu sync.Mutex
	m  map[weak.Pointer[x509.Certificate]]*Report
}

func (r *reportRegistry) put(leaf *x509.Certificate, rep *Report) {
	wp := weak.Make(leaf)
	r.mu.Lock()
	if r.m == nil {
		r.m = make(map[weak.Pointer[x509.Certificate]]*Report)
	}
	_, known := r.m[wp]
	r.m[wp] = rep
	r.mu.Unlock()
	// An entry is removed only by its cleanup, once the leaf is
	// unreachable; a known leaf therefore already has one.
	if !known {
		runtime.AddCleanup(leaf, r.remove, wp)
	}
}

func (r *reportRegistry) get(leaf *x509.Certificate) (*Report, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rep, ok := r.m[weak.Make(leaf)]
	return rep, ok
}

func (r *reportRegistry) remove(wp weak.Pointer[x509.Certificate]) {
	r.mu.Lock()
	delete(r.m, wp)
	r.mu.Unlock()
}

func (r *reportRegistry) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.m)
}
