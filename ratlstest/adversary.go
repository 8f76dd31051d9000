package ratlstest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/teesql/ratls/ext"
)

// AdversaryKind selects what an Adversary does wrong.
type AdversaryKind int

const (
	// SwappedKey serves a genuine quote, copied from a well-formed
	// certificate, inside a certificate for another key: REPORTDATA does
	// not bind the served key. A client must fail with ErrKeyBinding.
	SwappedKey AdversaryKind = iota + 1
	// DebugTD is a genuine, well-bound quote from a debug TD. ErrDebugMode.
	DebugTD
	// MismatchedQuotes carries different quotes in .1.1 and .1.8, each
	// genuine and bound to the key; they differ in MRTD, so a reader of
	// only one extension would accept. ErrMalformedExtension.
	MismatchedQuotes
	// NoAttestation serves a certificate with no dstack extension at all.
	// ErrNoQuote.
	NoAttestation
	// WrongMRTD is genuine and well-bound but its MRTD is OtherMRTD (or, if
	// the expected TD already uses that, DefaultTD's). ErrMRTDNotAllowed.
	WrongMRTD
	// Recorder is a well-behaved attested server (what the expected TD
	// would serve) that records what clients send. A client must accept
	// it.
	Recorder
)

// String names the kind, for test names and messages.
func (k AdversaryKind) String() string {
	switch k {
	case SwappedKey:
		return "SwappedKey"
	case DebugTD:
		return "DebugTD"
	case MismatchedQuotes:
		return "MismatchedQuotes"
	case NoAttestation:
		return "NoAttestation"
	case WrongMRTD:
		return "WrongMRTD"
	case Recorder:
		return "Recorder"
	}
	return fmt.Sprintf("AdversaryKind(%d)", int(k))
}

// maxRecorded caps what an Adversary keeps of the bytes it receives (it
// still counts them all).
const maxRecorded = 1 << 20

// adversaryHandshakeTimeout bounds each handshake; adversaryDrain is how
// long Close lets connections finish on their own before closing them.
const (
	adversaryHandshakeTimeout = 10 * time.Second
	adversaryDrain            = 2 * time.Second
)

// Adversary is a TLS server on 127.0.0.1 presenting a certificate that a
// ratls client must reject (or, for Recorder, accept). It completes
// handshakes without asking for a client certificate, and records every
// application byte received after a handshake, so tests prove that a
// rejected client sent nothing.
type Adversary struct {
	kind AdversaryKind
	leaf *x509.Certificate
	ln   net.Listener
	tls  *tls.Config
	log  *slog.Logger

	handshakes, received atomic.Int64
	mu                   sync.Mutex
	recorded             []byte
	conns                map[net.Conn]struct{}
	closed               bool
	wg                   sync.WaitGroup
	closeOnce            sync.Once
}

// NewAdversary starts an adversarial server of the given kind whose quotes
// come from auth. expected is the TD that clients trust (zero fields:
// DefaultTD's); the adversary derives its deviation from it.
func NewAdversary(auth *Authority, kind AdversaryKind, expected TD) (*Adversary, error) {
	if auth == nil {
		return nil, errors.New("ratlstest: NewAdversary: nil Authority")
	}
	td := expected.withDefaults()
	if err := td.validate(); err != nil {
		return nil, err
	}
	cert, err := auth.adversaryCertificate(kind, td)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	a := &Adversary{
		kind: kind,
		leaf: cert.Leaf,
		ln:   ln,
		tls:  &tls.Config{Certificates: []tls.Certificate{*cert}, ClientAuth: tls.RequestClientCert},
		log:  auth.log,
	}
	a.conns = make(map[net.Conn]struct{})
	a.wg.Go(a.serve)
	return a, nil
}

// adversaryCertificate builds the certificate an adversary of kind serves.
func (a *Authority) adversaryCertificate(kind AdversaryKind, td TD) (*tls.Certificate, error) {
	// The real clock, as the agent's default: clients check validity with
	// theirs.
	now := time.Now().Truncate(time.Second)
	ca, err := newAppCA(now)
	if err != nil {
		return nil, err
	}
	req := certRequest{
		subject: "ratlstest adversary " + kind.String(), altNames: []string{"localhost", "127.0.0.1"},
		raTLS: true, serverAuth: true, clientAuth: true,
		notBefore: now.Add(-time.Minute), notAfter: now.Add(24 * time.Hour),
	}
	var is *issued
	switch kind {
	case Recorder:
		is, err = a.mint(ca, td, FormatV0, req)
	case DebugTD:
		td.Debug = true
		is, err = a.mint(ca, td, FormatV0, req)
	case WrongMRTD:
		td.MRTD = mrtdOtherThan(td.MRTD)
		is, err = a.mint(ca, td, FormatV0, req)
	case NoAttestation:
		req.raTLS = false
		is, err = a.mint(ca, td, FormatV0, req)
	case SwappedKey:
		is, err = a.swappedKey(ca, td, req)
	case MismatchedQuotes:
		is, err = a.mismatched(ca, td, req)
	default:
		return nil, fmt.Errorf("ratlstest: unknown AdversaryKind %d", int(kind))
	}
	if err != nil {
		return nil, err
	}
	return is.tlsCertificate(), nil
}

// mrtdOtherThan returns OtherMRTD, or DefaultTD's MRTD if m is OtherMRTD.
func mrtdOtherThan(m [48]byte) [48]byte {
	if o := OtherMRTD(); o != m {
		return o
	}
	return DefaultTD().MRTD
}

// swappedKey takes the attestation of a genuine certificate for one key
// and puts it, unchanged, in a certificate for another.
func (a *Authority) swappedKey(ca *appCA, td TD, req certRequest) (*issued, error) {
	genuine, err := a.mint(ca, td, FormatV0, req)
	if err != nil {
		return nil, err
	}
	var exts []pkix.Extension
	for _, e := range genuine.chain[0].Extensions {
		if e.Id.Equal(ext.OIDAttestation) {
			exts = append(exts, e)
		}
	}
	if len(exts) == 0 {
		return nil, errors.New("ratlstest: genuine certificate lacks its attestation extension")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	leaf, err := ca.issue(req, &key.PublicKey, exts)
	if err != nil {
		return nil, err
	}
	return &issued{key: key, chain: []*x509.Certificate{leaf, ca.cert}}, nil
}

// mismatched puts a genuine quote for td in .1.8 and a genuine quote for
// the same key but another MRTD in .1.1.
func (a *Authority) mismatched(ca *appCA, td TD, req certRequest) (*issued, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	rd, err := keyReportData(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	good, err := a.attestation(td, rd)
	if err != nil {
		return nil, err
	}
	other := td
	other.MRTD = mrtdOtherThan(td.MRTD)
	bad, err := a.attestation(other, rd)
	if err != nil {
		return nil, err
	}
	v0, err := extensions(good, FormatV0)
	if err != nil {
		return nil, err
	}
	legacy, err := extensions(bad, FormatLegacy)
	if err != nil {
		return nil, err
	}
	leaf, err := ca.issue(req, &key.PublicKey, mergeExtensions(v0, legacy))
	if err != nil {
		return nil, err
	}
	return &issued{key: key, chain: []*x509.Certificate{leaf, ca.cert}}, nil
}

// Kind is what the adversary does wrong.
func (a *Adversary) Kind() AdversaryKind { return a.kind }

// Addr is the adversary's address (127.0.0.1:port).
func (a *Adversary) Addr() string { return a.ln.Addr().String() }

// Certificate is the leaf certificate the adversary serves.
func (a *Adversary) Certificate() *x509.Certificate { return a.leaf }

// Handshakes counts TLS handshakes that completed on the adversary's side.
func (a *Adversary) Handshakes() int64 { return a.handshakes.Load() }

// BytesReceived counts application bytes received after handshakes.
func (a *Adversary) BytesReceived() int64 { return a.received.Load() }

// Received returns a copy of the application bytes received (the first
// MiB), all connections concatenated.
func (a *Adversary) Received() []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]byte(nil), a.recorded...)
}

func (a *Adversary) serve() {
	for {
		c, err := a.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				a.log.Warn("ratlstest: adversary accept failed", "err", err)
			}
			return
		}
		a.mu.Lock()
		if a.closed {
			a.mu.Unlock()
			c.Close()
			return
		}
		a.conns[c] = struct{}{}
		a.wg.Add(1)
		a.mu.Unlock()
		go func() {
			defer a.wg.Done()
			defer func() {
				a.mu.Lock()
				delete(a.conns, c)
				a.mu.Unlock()
				c.Close()
			}()
			a.handle(c)
		}()
	}
}

func (a *Adversary) handle(c net.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), adversaryHandshakeTimeout)
	defer cancel()
	tc := tls.Server(c, a.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		a.log.Debug("ratlstest: adversary handshake failed (expected when the client rejects it)", "kind", a.kind.String(), "err", err)
		return
	}
	a.handshakes.Add(1)
	buf := make([]byte, 16<<10)
	for {
		n, err := tc.Read(buf)
		if n > 0 {
			a.received.Add(int64(n))
			a.mu.Lock()
			if room := maxRecorded - len(a.recorded); room > 0 {
				a.recorded = append(a.recorded, buf[:min(n, room)]...)
			}
			a.mu.Unlock()
		}
		if err != nil {
			return
		}
	}
}

// Close stops accepting, lets open connections end by themselves for a
// moment (so that bytes already sent are counted), then closes them and
// waits for every goroutine.
func (a *Adversary) Close() error {
	a.closeOnce.Do(func() {
		a.mu.Lock()
		a.closed = true
		a.mu.Unlock()
		a.ln.Close()
		done := make(chan struct{})
		go func() {
			a.wg.Wait()
			close(done)
		}()
		select {
		case <-done:
			return
		case <-time.After(adversaryDrain):
		}
		a.mu.Lock()
		for c := range a.conns {
			c.Close()
		}
		a.mu.Unlock()
		<-done
	})
	return nil
}
