package ratlstest

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// httpServer serves one handler on several listeners and, unlike
// http.Server.Close, waits on Close for every handler and goroutine to end.
type httpServer struct {
	srv  *http.Server
	wg   sync.WaitGroup
	stop context.CancelFunc
	done <-chan struct{} // closed by Close: ends handlers that wait on it
	log  *slog.Logger
}

// newHTTPServer prepares a server; serve starts it. The two steps let a
// handler refer to the server (its done channel) without a race.
func newHTTPServer(h http.Handler, logger *slog.Logger) *httpServer {
	ctx, cancel := context.WithCancel(context.Background())
	s := &httpServer{stop: cancel, done: ctx.Done()}
	s.srv = &http.Server{
		Handler: h,
		// Count connection goroutines: StateNew runs on the Serve
		// goroutine (itself counted), StateClosed when the connection's
		// goroutine has finished with it, after its handler returned.
		ConnState: func(_ net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				s.wg.Add(1)
			case http.StateClosed, http.StateHijacked:
				s.wg.Done()
			}
		},
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	s.log = logger
	return s
}

// serve serves every listener in its own goroutine.
func (s *httpServer) serve(lns ...net.Listener) {
	for _, ln := range lns {
		s.wg.Go(func() {
			if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Warn("ratlstest: HTTP server stopped", "addr", ln.Addr().String(), "err", err)
			}
		})
	}
}

// Close closes the listeners and connections, ends handlers waiting on the
// server's context, and waits for all of them.
func (s *httpServer) Close() error {
	s.stop()
	err := s.srv.Close()
	s.wg.Wait()
	return err
}
