package transport_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/lbrpc/lbrpc/internal/rpctest"
	"github.com/lbrpc/lbrpc/transport"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newPool(t *testing.T, opts ...transport.Option) *transport.Pool {
	t.Helper()
	p, err := transport.New(opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func state(p *transport.Pool, addr string) transport.NodeState {
	for _, s := range p.State() {
		if s.Addr == addr {
			return s
		}
	}
	return transport.NodeState{}
}

// countingDialer counts dial attempts.
type countingDialer struct{ n atomic.Int64 }

func (d *countingDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d.n.Add(1)
	var nd net.Dialer
	return nd.DialContext(ctx, network, addr)
}

func TestCallAndReplyCopy(t *testing.T) {
	s := rpctest.Start(t, 1, rpctest.Gob)[0]
	p := newPool(t)
	var reply string
	if err := p.Call(context.Background(), s.Addr, "Hello.Say", "x", &reply); err != nil {
		t.Fatal(err)
	}
	if reply != "hello, x" {
		t.Fatalf("reply = %q", reply)
	}
	for _, bad := range []any{nil, "not a pointer", (*string)(nil)} {
		if err := p.Call(context.Background(), s.Addr, "Hello.Say", "x", bad); !errors.Is(err, transport.ErrBadReply) {
			t.Errorf("reply %#v: err = %v, want ErrBadReply", bad, err)
		}
	}
}

// Many callers on a fresh node share one dial and one connection.
func TestOneConnectionPerNode(t *testing.T) {
	s := rpctest.Start(t, 1, rpctest.Gob)[0]
	p := newPool(t, transport.WithLazyDial())
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var reply string
			if err := p.Call(context.Background(), s.Addr, "Hello.Say", "x", &reply); err != nil {
				t.Errorf("call: %v", err)
			}
		}()
	}
	wg.Wait()
	if got := s.Accepts(); got != 1 {
		t.Fatalf("server accepted %d connections, want 1", got)
	}
}

// A dead node is not dialled in a tight loop: with a long backoff, a burst
// of calls costs one dial, and each fails fast without being sent.
func TestDeadNodeBacksOff(t *testing.T) {
	s := rpctest.Start(t, 1, rpctest.Gob)[0]
	addr := s.Addr
	s.Kill()
	var d countingDialer
	p := newPool(t, transport.WithDialer(d.dial), transport.WithBackoff(time.Hour, time.Hour), transport.WithLazyDial())
	for i := 0; i < 200; i++ {
		var reply string
		err := p.Call(context.Background(), addr, "Hello.Say", "x", &reply)
		var te *transport.Error
		if !errors.As(err, &te) || te.Op != transport.OpDial || !te.Unsent() || te.Addr != addr {
			t.Fatalf("call %d: err = %v, want an unsent dial error for %s", i, err, addr)
		}
		if i > 0 && !errors.Is(err, transport.ErrNodeDown) {
			t.Fatalf("call %d: err = %v, want ErrNodeDown while backing off", i, err)
		}
	}
	if got := d.n.Load(); got != 1 {
		t.Fatalf("%d dials for 200 calls, want 1", got)
	}
	if p.Reachable(addr) {
		t.Fatal("dead node reported reachable")
	}
}

// A broken connection is dropped, never cached dead, and the node is re-dialled
// in the background once it is back.
func TestBrokenConnectionRedials(t *testing.T) {
	s := rpctest.Start(t, 1, rpctest.Gob)[0]
	p := newPool(t, transport.WithBackoff(time.Millisecond, 5*time.Millisecond))
	p.Update([]string{s.Addr})
	var changes atomic.Int64
	p.Notify(func() { changes.Add(1) })
	var reply string
	if err := p.Call(context.Background(), s.Addr, "Hello.Say", "x", &reply); err != nil {
		t.Fatal(err)
	}
	s.SetLatency(time.Hour)
	errc := make(chan error, 1)
	go func() {
		var r string
		errc <- p.Call(context.Background(), s.Addr, "Hello.Say", "x", &r)
	}()
	rpctest.Eventually(t, "the call to reach the server", func() bool { return s.Calls() == 2 })
	s.Kill()
	err := <-errc
	var te *transport.Error
	if !errors.As(err, &te) || te.Op != transport.OpCall || te.Unsent() {
		t.Fatalf("err = %v, want a call error that may have been sent", err)
	}
	rpctest.Eventually(t, "the node to be marked down", func() bool { return !p.Reachable(s.Addr) })
	s.SetLatency(0)
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	// No call is made: the background redial alone brings it back.
	rpctest.Eventually(t, "the node to be reachable again", func() bool { return p.Reachable(s.Addr) && state(p, s.Addr).Connected })
	if err := p.Call(context.Background(), s.Addr, "Hello.Say", "x", &reply); err != nil {
		t.Fatalf("call after restart: %v", err)
	}
	if changes.Load() < 2 {
		t.Fatalf("Notify called %d times, want down and up", changes.Load())
	}
}

// A hung node (accepts, never answers) has its connection recycled after
// MaxTimeouts timeouts in a row, so abandoned calls do not pile up.
func TestHungNodeRecycled(t *testing.T) {
	s := rpctest.Start(t, 1, rpctest.Gob)[0]
	s.Hang(true)
	p := newPool(t, transport.WithMaxTimeouts(3), transport.WithBackoff(time.Millisecond, 2*time.Millisecond))
	calls := 0
	rpctest.Eventually(t, "three recycles", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Millisecond)
		defer cancel()
		var reply string
		if err := p.Call(ctx, s.Addr, "Hello.Say", "x", &reply); err == nil {
			t.Fatal("a hung node answered")
		}
		calls++
		return state(p, s.Addr).Recycles >= 3
	})
	st := state(p, s.Addr)
	// Every recycle closed a connection with at most MaxTimeouts calls
	// abandoned on it, and a new one was dialled.
	if s.Accepts() < st.Recycles {
		t.Fatalf("server saw %d connections for %d recycles", s.Accepts(), st.Recycles)
	}
	if int64(calls) < 3*st.Recycles {
		t.Fatalf("%d recycles after only %d calls: recycled early", st.Recycles, calls)
	}
}

// A call waiting for a dial returns when its context ends; the dial goes on
// for the others.
func TestDialWaitHonoursContext(t *testing.T) {
	s := rpctest.Start(t, 1, rpctest.Gob)[0]
	release := make(chan struct{})
	slow := func(ctx context.Context, network, addr string) (net.Conn, error) {
		select {
		case <-release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	p := newPool(t, transport.WithDialer(slow), transport.WithLazyDial())
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		var reply string
		errc <- p.Call(ctx, s.Addr, "Hello.Say", "x", &reply)
	}()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	close(release)
	var reply string
	if err := p.Call(context.Background(), s.Addr, "Hello.Say", "x", &reply); err != nil {
		t.Fatalf("call after the dial: %v", err)
	}
}

// A removed node finishes its calls in flight, then its connection closes;
// past the drain timeout it closes regardless.
func TestDrain(t *testing.T) {
	servers := rpctest.Start(t, 2, rpctest.Gob)
	a, b := servers[0], servers[1]
	p := newPool(t, transport.WithDrainTimeout(time.Hour))
	p.Update([]string{a.Addr, b.Addr})
	a.SetLatency(50 * time.Millisecond)
	errc := make(chan error, 1)
	go func() {
		var reply string
		errc <- p.Call(context.Background(), a.Addr, "Hello.Say", "x", &reply)
	}()
	rpctest.Eventually(t, "the call to reach the server", func() bool { return a.Calls() == 1 })
	p.Update([]string{b.Addr})
	if err := <-errc; err != nil {
		t.Fatalf("call in flight on a removed node: %v", err)
	}
	rpctest.Eventually(t, "the drained node to leave the pool", func() bool { return len(p.State()) == 1 })

	t.Run("timeout", func(t *testing.T) {
		s := rpctest.Start(t, 1, rpctest.Gob)[0]
		p := newPool(t, transport.WithDrainTimeout(10*time.Millisecond))
		p.Update([]string{s.Addr})
		s.SetLatency(time.Hour)
		errc := make(chan error, 1)
		go func() {
			var reply string
			errc <- p.Call(context.Background(), s.Addr, "Hello.Say", "x", &reply)
		}()
		rpctest.Eventually(t, "the call to reach the server", func() bool { return s.Calls() == 1 })
		p.Update(nil)
		var te *transport.Error
		if err := <-errc; !errors.As(err, &te) {
			t.Fatalf("err = %v, want a transport error once the drain timed out", err)
		}
	})
}

// A call for a node the last Update removed (picked from an older set)
// fails as unsent and dials nothing, where it used to reopen a connection
// that only the next Update would close. Addresses never seen still dial on
// first use, and a node added back is served again.
func TestCallForRemovedNode(t *testing.T) {
	servers := rpctest.Start(t, 3, rpctest.Gob)
	a, b, c := servers[0], servers[1], servers[2]
	p := newPool(t, transport.WithLazyDial())
	ctx := context.Background()
	call := func(addr string) error {
		var reply string
		return p.Call(ctx, addr, "Hello.Say", "x", &reply)
	}
	p.Update([]string{a.Addr, b.Addr})
	if err := call(a.Addr); err != nil {
		t.Fatalf("call to a: %v", err)
	}
	p.Update([]string{b.Addr})
	rpctest.Eventually(t, "a to be drained", func() bool { return len(p.State()) == 1 })

	err := call(a.Addr)
	var te *transport.Error
	if !errors.Is(err, transport.ErrNodeRemoved) || !errors.As(err, &te) || !te.Unsent() {
		t.Fatalf("call to removed a: err = %v, want an unsent *transport.Error wrapping ErrNodeRemoved", err)
	}
	if got := a.Accepts(); got != 1 {
		t.Fatalf("a accepted %d connections, want 1: the call for the removed node dialled", got)
	}
	if got := len(p.State()); got != 1 {
		t.Fatalf("pool holds %d nodes after a call for a removed one, want 1", got)
	}

	if err := call(c.Addr); err != nil { // never seen: dialled on first use
		t.Fatalf("call to unseen c: %v", err)
	}
	p.Update([]string{a.Addr, b.Addr})
	if err := call(a.Addr); err != nil {
		t.Fatalf("call to a, added back: %v", err)
	}
}

func TestCloseFailsPendingCalls(t *testing.T) {
	s := rpctest.Start(t, 1, rpctest.Gob)[0]
	s.SetLatency(time.Hour)
	p, err := transport.New()
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 3)
	for i := 0; i < 3; i++ {
		go func() {
			var reply string
			errc <- p.Call(context.Background(), s.Addr, "Hello.Say", "x", &reply)
		}()
	}
	rpctest.Eventually(t, "calls to reach the server", func() bool { return s.Calls() == 3 })
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := <-errc; !errors.Is(err, transport.ErrClosed) {
			t.Errorf("err = %v, want ErrClosed", err)
		}
	}
	var reply string
	if err := p.Call(context.Background(), s.Addr, "Hello.Say", "x", &reply); !errors.Is(err, transport.ErrClosed) {
		t.Fatalf("call after Close: err = %v, want ErrClosed", err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestOptionsValidate(t *testing.T) {
	for name, opt := range map[string]transport.Option{
		"nil dialer":       transport.WithDialer(nil),
		"nil codec":        transport.WithCodec(nil),
		"zero dial time":   transport.WithDialTimeout(0),
		"backoff inverted": transport.WithBackoff(time.Second, time.Millisecond),
		"zero backoff":     transport.WithBackoff(0, time.Second),
		"zero timeouts":    transport.WithMaxTimeouts(0),
		"zero drain":       transport.WithDrainTimeout(0),
	} {
		if _, err := transport.New(opt); err == nil {
			t.Errorf("%s: New succeeded, want an error", name)
		}
	}
}

// The HTTP handshake fails cleanly against a server that is not net/rpc's
// HTTP handler.
func TestHTTPHandshakeRejectsGobServer(t *testing.T) {
	s := rpctest.Start(t, 1, rpctest.Gob)[0]
	p := newPool(t, transport.WithHTTP(""), transport.WithDialTimeout(200*time.Millisecond), transport.WithLazyDial())
	var reply string
	err := p.Call(context.Background(), s.Addr, "Hello.Say", "x", &reply)
	var te *transport.Error
	if !errors.As(err, &te) || te.Op != transport.OpDial {
		t.Fatalf("err = %v, want a dial error", err)
	}
}
