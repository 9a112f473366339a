package main

import (
	"errors"
	"math/rand/v2"
	"net"
	"net/rpc"
	"sync"
	"sync/atomic"
	"time"
)

// errInjected is what a node told to fail answers: an rpc.ServerError at the
// client.
var errInjected = errors.New("balance: injected failure")

// server is one stock net/rpc server (gob over TCP) on 127.0.0.1, serving
// Work.Do after a configurable service time. Its setters are safe for
// concurrent use.
type server struct {
	addr    string
	ln      net.Listener
	latency atomic.Int64 // service time, ns
	failPct atomic.Int64 // share of calls answered at once with errInjected, in percent

	mu    sync.Mutex
	conns map[net.Conn]struct{} // nil once closed
	wg    sync.WaitGroup
}

// Work is the service the servers register.
type Work struct{ s *server }

// Do answers arg after the server's service time, or fails at once with
// errInjected for the server's failing share of calls.
func (w *Work) Do(arg int, reply *int) error {
	if p := w.s.failPct.Load(); p > 0 && rand.Int64N(100) < p {
		return errInjected
	}
	time.Sleep(time.Duration(w.s.latency.Load()))
	*reply = arg
	return nil
}

// startServers starts n servers; stop them with stopServers.
func startServers(n int) ([]*server, error) {
	out := make([]*server, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			stopServers(out)
			return nil, err
		}
		s := &server{addr: ln.Addr().String(), ln: ln, conns: map[net.Conn]struct{}{}}
		srv := rpc.NewServer()
		if err := srv.Register(&Work{s: s}); err != nil {
			ln.Close()
			stopServers(out)
			return nil, err
		}
		s.wg.Add(1)
		go s.accept(srv)
		out = append(out, s)
	}
	return out, nil
}

func (s *server) accept(srv *rpc.Server) {
	defer s.wg.Done()
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.conns == nil {
			s.mu.Unlock()
			conn.Close()
			return
		}
		s.conns[conn] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			srv.ServeConn(conn) // returns once the calls it started have answered
			s.mu.Lock()
			delete(s.conns, conn)
			s.mu.Unlock()
		}()
	}
}

// close stops accepting, closes every connection and waits for the
// server's goroutines, calls in service included.
func (s *server) close() {
	s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.conns = nil
	s.mu.Unlock()
	s.wg.Wait()
}

func stopServers(ss []*server) {
	for _, s := range ss {
		s.close()
	}
}
