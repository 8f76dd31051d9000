package ratlstest

import (
	"net/http"
	"sync/atomic"
	"time"
)

// Fault is a failure that a double (Agent, PCCS) injects into its HTTP
// answers. The zero Fault injects nothing. Faults can be changed at any
// time, concurrently with requests. An Agent request sees one Fault; a PCCS
// request arriving during a change may see some fields old and some new.
type Fault struct {
	// Status, if non-zero, answers every request with this HTTP status and
	// a short text body.
	Status int
	// Delay holds every answer this long first, or until the request is
	// cancelled or the double closes. Use it to exceed a client's timeout.
	Delay time.Duration
	// Garbage answers 200 OK with a body that is not what the client
	// expects (truncated JSON).
	Garbage bool
}

// faultState holds the current Fault.
type faultState struct{ p atomic.Pointer[Fault] }

func (s *faultState) set(f Fault) { s.p.Store(&f) }

func (s *faultState) get() Fault {
	if f := s.p.Load(); f != nil {
		return *f
	}
	return Fault{}
}

// garbageBody looks like the start of a JSON answer and stops short, so
// that a client fails while decoding rather than on the status.
const garbageBody = `{"key": "-----BEGIN PRIVATE KEY-----\nMIG`

// inject applies f to the request. It reports whether it answered (the
// caller must then not write anything).
func (f Fault) inject(w http.ResponseWriter, r *http.Request, done <-chan struct{}) bool {
	if f.Delay > 0 {
		t := time.NewTimer(f.Delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return true
		case <-done:
			http.Error(w, "ratlstest: double closing", http.StatusServiceUnavailable)
			return true
		}
	}
	if f.Status != 0 {
		http.Error(w, "ratlstest: injected fault", f.Status)
		return true
	}
	if f.Garbage {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(garbageBody))
		return true
	}
	return false
}
