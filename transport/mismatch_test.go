package transport_test

import (
	"context"
	"errors"
	"net/rpc/jsonrpc"
	"testing"
	"time"

	"github.com/lbrpc/lbrpc/health"
	"github.com/lbrpc/lbrpc/internal/rpctest"
	"github.com/lbrpc/lbrpc/transport"
)

// A reply of the wrong type fails its call with ErrReplyMismatch and
// leaves the reply alone; with the built-in codecs the connection goes on,
// and a call in flight beside it is answered.
func TestReplyMismatch(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode rpctest.Mode
		opts []transport.Option
	}{
		{"gob", rpctest.Gob, nil},
		{"JSON-RPC", rpctest.JSON, []transport.Option{transport.JSONRPC()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := rpctest.Start(t, 1, tc.mode)[0]
			p := newPool(t, tc.opts...)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var reply string
			if err := p.Call(ctx, s.Addr, "Hello.Say", "x", &reply); err != nil {
				t.Fatal(err)
			}

			s.SetLatency(100 * time.Millisecond)
			slow := make(chan error, 1)
			go func() { var r string; slow <- p.Call(ctx, s.Addr, "Hello.Say", "slow", &r) }()
			rpctest.Eventually(t, "the slow call in flight", func() bool { return s.Calls() == 2 })
			s.SetLatency(0)

			n := 42
			err := p.Call(ctx, s.Addr, "Hello.Say", "x", &n) // Say answers a string
			if !errors.Is(err, transport.ErrReplyMismatch) {
				t.Fatalf("err = %v, want ErrReplyMismatch", err)
			}
			if _, ok := errors.AsType[*transport.Error](err); ok {
				t.Errorf("err = %v is a *transport.Error: the node answered", err)
			}
			if n != 42 {
				t.Errorf("reply = %d, want it untouched", n)
			}
			if err := <-slow; err != nil {
				t.Fatalf("the call in flight beside it failed: %v", err)
			}
			if err := p.Call(ctx, s.Addr, "Hello.Say", "y", &reply); err != nil || reply != "hello, y" {
				t.Fatalf("next call: %q, %v", reply, err)
			}
			if st := state(p, s.Addr); st.Dials != 1 || !st.Reachable {
				t.Errorf("node state %+v, want its first connection still serving", st)
			}
		})
	}
}

// A codec of WithCodec may have read half an answer when its value does
// not fit: the connection ends, as net/rpc ends it, and the next call gets
// a new one.
func TestReplyMismatchUserCodec(t *testing.T) {
	s := rpctest.Start(t, 1, rpctest.JSON)[0]
	p := newPool(t, transport.WithCodec(jsonrpc.NewClientCodec))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var reply string
	if err := p.Call(ctx, s.Addr, "Hello.Say", "x", &reply); err != nil {
		t.Fatal(err)
	}
	n := 42
	if err := p.Call(ctx, s.Addr, "Hello.Say", "x", &n); err == nil || errors.Is(err, transport.ErrReplyMismatch) {
		t.Fatalf("err = %v, want the connection's read error", err)
	}
	rpctest.Eventually(t, "a new connection", func() bool {
		return p.Call(ctx, s.Addr, "Hello.Say", "y", &reply) == nil
	})
	if st := state(p, s.Addr); st.Dials != 2 {
		t.Errorf("node state %+v, want a second connection", st)
	}
}

// Every zero-size reply has the same address (reflect.New gives them one),
// and the codec keeps misfits by reply: the misfit of an abandoned call,
// whose answer came after it returned, must not fail a later call that
// fits. (Gob cannot encode a zero-size reply, so only JSON-RPC has them.)
func TestReplyMismatchZeroSize(t *testing.T) {
	s := rpctest.Start(t, 1, rpctest.JSON)[0]
	var d slowReader
	p := newPool(t, transport.JSONRPC(), transport.WithDialer(d.dial))
	ctx := safetyNet(t)
	var none struct{} // Health.Check's answer fits it: JSON drops the fields
	if err := p.Call(ctx, s.Addr, "Health.Check", health.Request{}, &none); err != nil {
		t.Fatal(err)
	}
	before := d.read.Load()
	s.SetLatency(200 * time.Millisecond)
	actx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- p.Call(actx, s.Addr, "Hello.Say", "x", &none) }() // Say answers a string: a misfit
	rpctest.Eventually(t, "the abandoned call to reach the server", func() bool { return s.Calls() == 1 })
	s.SetLatency(0)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("abandoned call: err = %v, want context.Canceled", err)
	}
	rpctest.Eventually(t, "the abandoned call's answer", func() bool { return d.read.Load() > before })
	if err := p.Call(ctx, s.Addr, "Health.Check", health.Request{}, &none); err != nil {
		t.Fatalf("a fitting call after an abandoned misfit: %v", err)
	}
}
