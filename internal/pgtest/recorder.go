package pgtest

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// Recorder is a plain TCP listener on 127.0.0.1 that accepts connections,
// records their first bytes, and closes them: it shows what a client sends
// before anything has been verified, and whether it connected at all.
type Recorder struct {
	ln      net.Listener
	mu      sync.Mutex
	first   [][]byte
	remotes []string
	wg      sync.WaitGroup
}

// firstBytes is how much of each connection is kept: enough to tell a TLS
// record from an SSLRequest or a StartupMessage.
const firstBytes = 8

// NewRecorder starts a Recorder, closed when t ends.
func NewRecorder(t testing.TB) *Recorder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("pgtest: listen: %v", err)
	}
	r := &Recorder{ln: ln}
	r.wg.Go(r.serve)
	t.Cleanup(r.close)
	return r
}

// Addr is the recorder's address.
func (r *Recorder) Addr() string { return r.ln.Addr().String() }

func (r *Recorder) serve() {
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.wg.Go(func() {
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, firstBytes)
			n, _ := io.ReadFull(c, buf)
			r.mu.Lock()
			r.first = append(r.first, buf[:n])
			r.remotes = append(r.remotes, c.RemoteAddr().String())
			r.mu.Unlock()
		})
	}
}

func (r *Recorder) close() {
	r.ln.Close()
	r.wg.Wait()
}

// Settle waits until every connection made before the call has been
// accepted and read, by making a probe connection of its own (the kernel
// queues connections in order), and returns the first bytes of all of them
// but the probe. It makes "no connection was attempted" checkable without
// waiting for an arbitrary time.
func (r *Recorder) Settle(t testing.TB) [][]byte {
	t.Helper()
	probe, err := net.DialTimeout("tcp", r.Addr(), 5*time.Second)
	if err != nil {
		t.Fatalf("pgtest: probe: %v", err)
	}
	id := probe.LocalAddr().String()
	probe.Write([]byte("probe"))
	probe.Close()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		r.mu.Lock()
		var out [][]byte
		found := false
		for i, remote := range r.remotes {
			if remote == id {
				found = true
				continue
			}
			if !isProbe(r.first[i]) {
				out = append(out, r.first[i])
			}
		}
		r.mu.Unlock()
		if found {
			return out
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("pgtest: recorder never saw its probe")
	return nil
}

func isProbe(b []byte) bool { return bytes.Equal(b, []byte("probe")) }

// The first bytes of what a PostgreSQL client may send before TLS.
var (
	// SSLRequest is the complete SSLRequest message.
	SSLRequest = []byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}
	// GSSENCRequest is the complete GSSENCRequest message.
	GSSENCRequest = []byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30}
)

// IsClientHello reports whether b starts like a TLS handshake record (a
// ClientHello: content type 22, version 3.x).
func IsClientHello(b []byte) bool { return len(b) >= 2 && b[0] == 0x16 && b[1] == 0x03 }

// IsStartupMessage reports whether b starts like a PostgreSQL
// StartupMessage (protocol 3.x).
func IsStartupMessage(b []byte) bool {
	return len(b) >= 8 && binary.BigEndian.Uint16(b[4:6]) == 3
}
