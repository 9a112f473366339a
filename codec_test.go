package lbrpc_test

import (
	"context"
	"errors"
	"net/rpc"
	"testing"

	"github.com/lbrpc/lbrpc"
	"github.com/lbrpc/lbrpc/internal/rpctest"
	"github.com/lbrpc/lbrpc/transport"
)

// An argument the codec cannot encode fails the call without a retry (it
// would fail on every node alike), and the connection, whose encoder may
// hold half a request, is replaced.
func TestCodecErrorNotRetried(t *testing.T) {
	servers := rpctest.Start(t, 2, rpctest.Gob)
	c := newClient(t, servers, lbrpc.WithRetry(3))
	var reply string
	for i := 0; i < 2; i++ {
		if err := c.Call(context.Background(), "Hello.Say", "x", &reply); err != nil {
			t.Fatal(err)
		}
	}
	err := c.Call(context.Background(), "Hello.Say", make(chan int), &reply)
	var te *transport.Error
	if !errors.As(err, &te) || te.Op != transport.OpCall {
		t.Fatalf("err = %v, want a transport call error", err)
	}
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		t.Fatalf("codec error was retried: %v", joined.Unwrap())
	}
	// Every later call works, whichever connection it takes.
	for i := 0; i < 4; i++ {
		if err := c.Call(context.Background(), "Hello.Say", "y", &reply); err != nil {
			t.Fatalf("call after a codec error: %v", err)
		}
	}
	// A reply of the wrong type is the server's answer failing to decode.
	var wrong int
	err = c.Call(context.Background(), "Hello.Say", "x", &wrong)
	if _, ok := errors.AsType[rpc.ServerError](err); ok || err == nil {
		t.Fatalf("err = %v, want a decode failure", err)
	}
}
