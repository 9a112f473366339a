package rpctest

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/rpc"
	"net/rpc/jsonrpc"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lbrpc/lbrpc/health"
)

// Mode is how a server speaks.
type Mode int

// The server modes.
const (
	Gob  Mode = iota // rpc.ServeConn
	JSON             // jsonrpc.ServeConn
	HTTP             // rpc.HandleHTTP at rpc.DefaultRPCPath
)

// Server is one net/rpc server on 127.0.0.1 serving the service "Hello"
// and the health service (package health). Its methods are safe for
// concurrent use.
type Server struct {
	Addr string
	mode Mode

	health *health.Service // kept across restarts

	calls   atomic.Int64
	latency atomic.Int64 // nanoseconds
	fail    atomic.Pointer[string]
	hangs   atomic.Bool // accept connections, never answer

	mu      sync.Mutex
	ln      net.Listener
	conns   map[net.Conn]struct{}
	release chan struct{} // closed to free hanging calls
	wg      sync.WaitGroup
	accepts atomic.Int64
}

// Start starts n servers and stops them when the test ends.
func Start(t testing.TB, n int, mode Mode) []*Server {
	t.Helper()
	out := make([]*Server, n)
	for i := range out {
		s := &Server{mode: mode, health: health.New()}
		if err := s.listen("127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Kill)
		out[i] = s
	}
	return out
}

// Addrs returns the servers' addresses.
func Addrs(servers []*Server) []string {
	out := make([]string, len(servers))
	for i, s := range servers {
		out[i] = s.Addr
	}
	return out
}

// Hello is the service the servers register.
type Hello struct{ s *Server }

// Say answers "hello, <args> from <addr>", after the server's latency.
func (h *Hello) Say(args string, reply *string) error {
	if err := h.s.serve(); err != nil {
		return err
	}
	*reply = "hello, " + args
	return nil
}

// Who answers the server's address.
func (h *Hello) Who(_ string, reply *string) error {
	if err := h.s.serve(); err != nil {
		return err
	}
	*reply = h.s.Addr
	return nil
}

// Fail always fails with an application error.
func (h *Hello) Fail(args string, _ *string) error {
	h.s.calls.Add(1)
	return errors.New("failed: " + args)
}

func (s *Server) serve() error {
	s.calls.Add(1)
	s.mu.Lock()
	release := s.release
	s.mu.Unlock()
	if d := time.Duration(s.latency.Load()); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-release:
			return errors.New("server killed")
		}
	}
	if f := s.fail.Load(); f != nil {
		return errors.New(*f)
	}
	return nil
}

// Calls returns how many calls the server has received.
func (s *Server) Calls() int64 { return s.calls.Load() }

// Accepts returns how many connections the server has accepted.
func (s *Server) Accepts() int64 { return s.accepts.Load() }

// SetLatency delays every answer by d.
func (s *Server) SetLatency(d time.Duration) { s.latency.Store(int64(d)) }

// SetError makes every call fail with an application error (rpc.ServerError
// at the client); "" restores success.
func (s *Server) SetError(msg string) {
	if msg == "" {
		s.fail.Store(nil)
		return
	}
	s.fail.Store(&msg)
}

// SetServing sets what the server's health service answers (serving at
// start). It does not change how Hello answers.
func (s *Server) SetServing(serving bool) { s.health.SetServing(serving) }

// Hang makes the server accept new connections and never read from them, as
// a hung process does. Existing connections keep working.
func (s *Server) Hang(on bool) { s.hangs.Store(on) }

// Kill closes the listener and every connection, and frees hanging calls.
// Kill is idempotent.
func (s *Server) Kill() {
	s.mu.Lock()
	if s.ln != nil {
		s.ln.Close()
		s.ln = nil
	}
	for c := range s.conns {
		c.Close()
	}
	s.conns = nil
	if s.release != nil {
		close(s.release)
		s.release = nil
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// Restart listens again on the same address after Kill.
func (s *Server) Restart() error {
	var err error
	for i := 0; i < 50; i++ { // the port may linger for a moment
		if err = s.listen(s.Addr); err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return err
}

func (s *Server) listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := rpc.NewServer()
	if err := srv.RegisterName("Hello", &Hello{s: s}); err != nil {
		ln.Close()
		return err
	}
	if err := srv.RegisterName(health.Name, s.health); err != nil {
		ln.Close()
		return err
	}
	s.mu.Lock()
	s.Addr = ln.Addr().String()
	s.ln = ln
	s.conns = map[net.Conn]struct{}{}
	s.release = make(chan struct{})
	s.mu.Unlock()
	s.wg.Add(1)
	go s.accept(ln, srv)
	return nil
}

func (s *Server) accept(ln net.Listener, srv *rpc.Server) {
	defer s.wg.Done()
	var handler http.Handler
	if s.mode == HTTP {
		mux := http.NewServeMux()
		mux.Handle(rpc.DefaultRPCPath, srv)
		handler = mux
	}
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		s.accepts.Add(1)
		s.mu.Lock()
		if s.conns == nil { // killed
			s.mu.Unlock()
			conn.Close()
			return
		}
		s.conns[conn] = struct{}{}
		s.mu.Unlock()
		if s.hangs.Load() {
			continue // held open, never read, closed by Kill
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			switch s.mode {
			case JSON:
				srv.ServeCodec(jsonrpc.NewServerCodec(conn))
			case HTTP:
				serveHTTP(conn, handler)
			default:
				srv.ServeConn(conn)
			}
		}()
	}
}

// serveHTTP serves one connection with an http.Server that stops when the
// connection closes.
func serveHTTP(conn net.Conn, h http.Handler) {
	l := &oneConn{conn: conn, done: make(chan struct{})}
	srv := &http.Server{Handler: h, ConnState: func(_ net.Conn, st http.ConnState) {
		if st == http.StateClosed || st == http.StateHijacked {
			l.Close()
		}
	}}
	srv.Serve(l)
	// A hijacked connection is served by net/rpc in the handler's goroutine,
	// which ends when Kill closes the connection.
}

// oneConn is a listener that yields one connection.
type oneConn struct {
	conn net.Conn
	once sync.Once
	done chan struct{}
	used atomic.Bool
}

func (l *oneConn) Accept() (net.Conn, error) {
	if !l.used.Swap(true) {
		return l.conn, nil
	}
	<-l.done
	return nil, net.ErrClosed
}
func (l *oneConn) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *oneConn) Addr() net.Addr { return l.conn.LocalAddr() }

// String names the server for test logs.
func (s *Server) String() string { return fmt.Sprintf("server %s", s.Addr) }

// Eventually polls cond until it holds, failing the test after a generous
// bound: waits in tests are bounded polls, never sleeps that hope.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
