package ratlstest

import (
	"errors"
	"io"
	"net"
	"sync"
)

// EchoServer is a TCP server on 127.0.0.1 that writes back everything it
// reads and half-closes when the client does: a stand-in upstream for a
// Sidecar.
type EchoServer struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// NewEchoServer starts an echo server. Close it when done.
func NewEchoServer() (*EchoServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	e := &EchoServer{ln: ln, conns: make(map[net.Conn]struct{})}
	e.wg.Go(e.serve)
	return e, nil
}

// Addr is the server's address (127.0.0.1:port).
func (e *EchoServer) Addr() string { return e.ln.Addr().String() }

func (e *EchoServer) serve() {
	for {
		c, err := e.ln.Accept()
		if err != nil {
			return
		}
		e.mu.Lock()
		if e.conns == nil { // closed
			e.mu.Unlock()
			c.Close()
			return
		}
		e.conns[c] = struct{}{}
		e.wg.Add(1)
		e.mu.Unlock()
		go func() {
			defer e.wg.Done()
			defer func() {
				e.mu.Lock()
				delete(e.conns, c)
				e.mu.Unlock()
				c.Close()
			}()
			if _, err := io.Copy(c, c); err == nil {
				c.(*net.TCPConn).CloseWrite()
			}
		}()
	}
}

// Close stops the server, closes its connections and waits for them.
func (e *EchoServer) Close() error {
	err := e.ln.Close()
	e.mu.Lock()
	for c := range e.conns {
		c.Close()
	}
	e.conns = nil
	e.mu.Unlock()
	e.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}
