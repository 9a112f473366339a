package lbrpc_test

import (
	"context"
	"errors"
	"fmt"
	"net/rpc"
	"testing"
	"time"

	"github.com/lbrpc/lbrpc"
	"github.com/lbrpc/lbrpc/internal/rpctest"
	"github.com/lbrpc/lbrpc/transport"
)

// An argument the codec cannot encode fails the call with ErrBadArgs,
// without a retry (it would fail on every node alike) and without counting
// against the node. The connection, whose encoder may hold half a request,
// is replaced, but the calls in flight on it are still answered.
func TestCodecErrorNotRetried(t *testing.T) {
	for _, args := range []any{make(chan int), nil} {
		t.Run(fmt.Sprintf("%T", args), func(t *testing.T) {
			servers := rpctest.Start(t, 1, rpctest.Gob)
			c := newClient(t, servers, lbrpc.WithRetry(3))
			var reply string
			if err := c.Call(context.Background(), "Hello.Say", "x", &reply); err != nil {
				t.Fatal(err)
			}
			servers[0].SetLatency(100 * time.Millisecond)
			inFlight := make(chan error, 1)
			go func() {
				var reply string
				inFlight <- c.Call(context.Background(), "Hello.Say", "in flight", &reply)
			}()
			rpctest.Eventually(t, "the call in flight to reach the server", func() bool { return servers[0].Calls() == 2 })
			servers[0].SetLatency(0)

			err := c.Call(context.Background(), "Hello.Say", args, &reply)
			if !errors.Is(err, lbrpc.ErrBadArgs) {
				t.Fatalf("err = %v, want ErrBadArgs", err)
			}
			if _, ok := errors.AsType[*transport.Error](err); ok {
				t.Fatalf("err = %v is a *transport.Error: the node would be blamed", err)
			}
			if joined, ok := err.(interface{ Unwrap() []error }); ok && len(joined.Unwrap()) > 2 {
				t.Fatalf("codec error was retried: %v", joined.Unwrap())
			}
			if err := <-inFlight; err != nil {
				t.Fatalf("call in flight on the connection: %v", err)
			}
			if s := c.State()[0]; s.Failures != 0 || !s.Ready || s.LastErr != nil {
				t.Fatalf("state = %+v after the caller's encoding error, want the node unblamed", s)
			}
			for i := 0; i < 4; i++ {
				if err := c.Call(context.Background(), "Hello.Say", "y", &reply); err != nil {
					t.Fatalf("call after a codec error: %v", err)
				}
			}
			if got := servers[0].Accepts(); got != 2 {
				t.Fatalf("%d connections accepted, want 2 (the first, retired, and its replacement)", got)
			}
		})
	}
}

// A reply of the wrong type is the server's answer failing to decode.
func TestReplyDecodeError(t *testing.T) {
	servers := rpctest.Start(t, 1, rpctest.Gob)
	c := newClient(t, servers)
	var reply string
	if err := c.Call(context.Background(), "Hello.Say", "x", &reply); err != nil {
		t.Fatal(err)
	}
	var wrong int
	err := c.Call(context.Background(), "Hello.Say", "x", &wrong)
	if _, ok := errors.AsType[rpc.ServerError](err); ok || err == nil {
		t.Fatalf("err = %v, want a decode failure", err)
	}
}
