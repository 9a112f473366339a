package transport_test

import (
	"context"
	"errors"
	"net/rpc"
	"strings"
	"testing"
	"time"

	"github.com/lbrpc/lbrpc/internal/rpctest"
	"github.com/lbrpc/lbrpc/transport"
)

// A connection that the server closed while it was idle is dropped as soon
// as its reader sees it, and replaced: the next call is not failed by the
// dead connection (which net/rpc would refuse, nothing written, with
// rpc.ErrShutdown).
func TestIdleConnectionClosedByServer(t *testing.T) {
	s := rpctest.Start(t, 1, rpctest.Gob)[0]
	p := newPool(t)
	p.Update([]string{s.Addr})
	var reply string
	if err := p.Call(context.Background(), s.Addr, "Hello.Say", "x", &reply); err != nil {
		t.Fatal(err)
	}
	s.Kill()
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	rpctest.Eventually(t, "the pool to redial the restarted node", func() bool { return state(p, s.Addr).Dials == 2 })
	if err := p.Call(context.Background(), s.Addr, "Hello.Say", "x", &reply); err != nil {
		var te *transport.Error
		if errors.As(err, &te) && !te.Unsent() && errors.Is(err, rpc.ErrShutdown) {
			t.Fatalf("first call after the node restarted while idle: %v: refused by the dead connection", err)
		}
		t.Fatalf("first call after restart: %v", err)
	}
}

// A call whose args gob cannot encode (here nil) is the caller's error,
// ErrBadArgs, not the node's: not a *transport.Error, and the node, whose
// connection had not answered yet, is neither marked down nor backed off,
// so the next, good, call works.
func TestBadArgsLeaveNodeUp(t *testing.T) {
	s := rpctest.Start(t, 1, rpctest.Gob)[0]
	p := newPool(t)
	p.Update([]string{s.Addr})
	rpctest.Eventually(t, "the warm dial", func() bool { return state(p, s.Addr).Connected })
	var reply string
	err := p.Call(context.Background(), s.Addr, "Hello.Say", nil, &reply)
	if err == nil {
		t.Fatal("nil args: no error")
	}
	var te *transport.Error
	if errors.As(err, &te) || !errors.Is(err, transport.ErrBadArgs) {
		t.Errorf("nil args: err = %v, want ErrBadArgs, not a *transport.Error (a node failure)", err)
	}
	if err := p.Call(context.Background(), s.Addr, "Hello.Say", "x", &reply); err != nil {
		t.Fatalf("good call right after a bad-args call: %v (node reachable: %v)", err, p.Reachable(s.Addr))
	}
}

// A call whose context has already ended is not sent: the method does not
// run.
func TestEndedContextNotSent(t *testing.T) {
	s := rpctest.Start(t, 1, rpctest.Gob)[0]
	p := newPool(t)
	var reply string
	if err := p.Call(context.Background(), s.Addr, "Hello.Say", "x", &reply); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for i := 0; i < 10; i++ {
		err := p.Call(ctx, s.Addr, "Hello.Say", "x", &reply)
		if te, ok := errors.AsType[*transport.Error](err); !ok || !te.Unsent() || !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want an unsent *transport.Error of context.Canceled", err)
		}
	}
	// A call made after them reaches the server after them, on the same
	// connection: had one been sent, the server would count it first.
	if err := p.Call(context.Background(), s.Addr, "Hello.Say", "x", &reply); err != nil {
		t.Fatal(err)
	}
	if got := s.Calls(); got != 2 {
		t.Fatalf("server ran %d calls whose context was cancelled before Call", got-2)
	}
}

// Calls made with an already expired deadline are not timeouts of the
// connection: MaxTimeouts of them do not recycle a healthy connection.
func TestExpiredDeadlinesLeaveConnection(t *testing.T) {
	s := rpctest.Start(t, 1, rpctest.Gob)[0]
	p := newPool(t)
	var reply string
	if err := p.Call(context.Background(), s.Addr, "Hello.Say", "x", &reply); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	for i := 0; i < 5; i++ {
		p.Call(ctx, s.Addr, "Hello.Say", "x", &reply)
	}
	if err := p.Call(context.Background(), s.Addr, "Hello.Say", "x", &reply); err != nil {
		t.Fatalf("good call after 5 calls with an expired deadline: %v (recycles %d)", err, state(p, s.Addr).Recycles)
	}
}

// A peer that stops reading does not hold a call past its deadline, nor a
// later call behind it: with coalescing no write waits for the peer; without
// it, the connection is closed when a call's context ends in net/rpc's
// write.
func TestStuckPeerDeadlines(t *testing.T) {
	for _, coalesce := range []bool{true, false} {
		t.Run(map[bool]string{true: "coalescing", false: "plain"}[coalesce], func(t *testing.T) {
			s := rpctest.Start(t, 1, rpctest.Gob)[0]
			s.Hang(true)
			p, err := transport.New(transport.WithWriteCoalescing(coalesce))
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			big := strings.Repeat("x", 16<<20) // more than loopback's socket buffers
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			errc := make(chan error, 2)
			go func() {
				var reply string
				errc <- p.Call(ctx, s.Addr, "Hello.Say", big, &reply)
			}()
			time.Sleep(50 * time.Millisecond)
			go func() { // a small call, with its own deadline
				ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
				defer cancel()
				var reply string
				errc <- p.Call(ctx, s.Addr, "Hello.Say", "small", &reply)
			}()
			timeout := time.After(3 * time.Second)
			for i := 0; i < 2; i++ {
				select {
				case <-errc:
				case <-timeout:
					p.Close() // frees them, so the test does not leak
					t.Fatalf("%d of 2 calls still blocked 3s after their 200ms deadline", 2-i)
				}
			}
		})
	}
}

// The client applies a removal as Update(old ∪ new), Update(new), and an
// addition as Update(new). A call picked before the removal (a straggler)
// that reaches the pool after a later addition is still refused with
// ErrNodeRemoved, and dials nothing.
func TestStragglerAfterLaterUpdate(t *testing.T) {
	servers := rpctest.Start(t, 3, rpctest.Gob)
	a, b, c := servers[0], servers[1], servers[2]
	p := newPool(t, transport.WithLazyDial())
	p.Update([]string{a.Addr, b.Addr})
	// Registry: {a, b} -> {b}
	p.Update([]string{b.Addr, a.Addr})
	p.Update([]string{b.Addr})
	// Registry: {b} -> {b, c}
	p.Update([]string{b.Addr, c.Addr})
	var reply string
	err := p.Call(context.Background(), a.Addr, "Hello.Say", "x", &reply)
	if !errors.Is(err, transport.ErrNodeRemoved) {
		t.Errorf("straggler call to removed a: err = %v, want ErrNodeRemoved", err)
	}
	if a.Accepts() != 0 || len(p.State()) != 2 {
		t.Fatalf("a removed node was dialled again (accepts %d) and is held by the pool (%d nodes)", a.Accepts(), len(p.State()))
	}
}
