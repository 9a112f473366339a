package health_test

import (
	"errors"
	"net"
	"net/rpc"
	"net/rpc/jsonrpc"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/lbrpc/lbrpc/health"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestCheck(t *testing.T) {
	s := health.New()
	s.SetServiceServing("Orders", true)
	s.SetServiceServing("Payments", false)
	for _, tc := range []struct {
		name      string
		setup     func()
		service   string
		want      health.Status
		wantErrIs error
	}{
		{"server", nil, "", health.Serving, nil},
		{"serving service", nil, "Orders", health.Serving, nil},
		{"not serving service", nil, "Payments", health.NotServing, nil},
		{"unknown service", nil, "Nope", health.Unknown, health.ErrUnknownService},
		{"server down", func() { s.SetServing(false) }, "", health.NotServing, nil},
		{"server down wins over service", nil, "Orders", health.NotServing, nil},
		{"server back", func() { s.SetServiceServing("", true) }, "", health.Serving, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup()
			}
			var resp health.Response
			err := s.Check(health.Request{Service: tc.service}, &resp)
			if !errors.Is(err, tc.wantErrIs) {
				t.Fatalf("err = %v, want %v", err, tc.wantErrIs)
			}
			if resp.Status != tc.want {
				t.Fatalf("status = %v, want %v", resp.Status, tc.want)
			}
		})
	}
}

// serve serves srv on a loopback listener with the given connection
// handler and returns the address and a function that stops it.
func serve(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() { defer wg.Done(); handle(c) }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// Health.Check is a standard net/rpc method: gob and JSON-RPC clients call
// it, and the status follows SetServing.
func TestRegisterServesCheck(t *testing.T) {
	srv := rpc.NewServer()
	hs, err := health.Register(srv)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		handle func(net.Conn)
		dial   func(addr string) (*rpc.Client, error)
	}{
		{"gob", func(c net.Conn) { srv.ServeConn(c) }, func(a string) (*rpc.Client, error) { return rpc.Dial("tcp", a) }},
		{"jsonrpc", func(c net.Conn) { srv.ServeCodec(jsonrpc.NewServerCodec(c)) }, func(a string) (*rpc.Client, error) { return jsonrpc.Dial("tcp", a) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tc.dial(serve(t, tc.handle))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			check := func() health.Status {
				t.Helper()
				var resp health.Response
				if err := c.Call(health.Name+".Check", health.Request{}, &resp); err != nil {
					t.Fatalf("Health.Check: %v", err)
				}
				return resp.Status
			}
			if got := check(); got != health.Serving {
				t.Fatalf("status = %v, want serving", got)
			}
			hs.SetServing(false)
			defer hs.SetServing(true)
			if got := check(); got != health.NotServing {
				t.Fatalf("status after SetServing(false) = %v, want not serving", got)
			}
			var resp health.Response
			err = c.Call(health.Name+".Check", health.Request{Service: "Nope"}, &resp)
			if se, ok := errors.AsType[rpc.ServerError](err); !ok || string(se) != health.ErrUnknownService.Error() {
				t.Fatalf("unknown service: err = %v, want rpc.ServerError(%q)", err, health.ErrUnknownService)
			}
		})
	}
}

func TestRegisterErrors(t *testing.T) {
	if _, err := health.Register(nil); err == nil {
		t.Fatal("Register(nil) succeeded")
	}
	srv := rpc.NewServer()
	if _, err := health.Register(srv); err != nil {
		t.Fatal(err)
	}
	if _, err := health.Register(srv); err == nil {
		t.Fatal("second Register on one server succeeded, want net/rpc's duplicate error")
	}
}

func TestStatusString(t *testing.T) {
	for s, want := range map[health.Status]string{
		health.Unknown: "unknown", health.Serving: "serving", health.NotServing: "not serving", 7: "unknown",
	} {
		if got := s.String(); got != want {
			t.Errorf("Status(%d).String() = %q, want %q", int(s), got, want)
		}
	}
}
