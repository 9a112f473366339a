package lbrpc_test

import (
	"context"
	"testing"

	"go.uber.org/goleak"

	"github.com/lbrpc/lbrpc"
	"github.com/lbrpc/lbrpc/internal/rpctest"
	"github.com/lbrpc/lbrpc/picker"
	"github.com/lbrpc/lbrpc/registry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newClient builds a client over servers and closes it when the test ends.
func newClient(t *testing.T, servers []*rpctest.Server, opts ...lbrpc.Option) *lbrpc.Client {
	t.Helper()
	opts = append([]lbrpc.Option{lbrpc.WithRegistry(registry.Static(rpctest.Addrs(servers)...))}, opts...)
	c, err := lbrpc.New(opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestRoundRobinSpreadsEvenly(t *testing.T) {
	servers := rpctest.Start(t, 3, rpctest.Gob)
	c := newClient(t, servers, lbrpc.WithPicker(picker.RoundRobin()), lbrpc.WithRetry(3))
	ctx := context.Background()
	for i := 0; i < 300; i++ {
		var reply string
		if err := c.Call(ctx, "Hello.Say", "world", &reply); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if reply != "hello, world" {
			t.Fatalf("reply = %q", reply)
		}
	}
	for _, s := range servers {
		if got := s.Calls(); got != 100 {
			t.Errorf("%v got %d calls, want 100", s, got)
		}
	}
}
