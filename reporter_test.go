package lbrpc_test

import (
	"context"
	"sync"
	"testing"

	"github.com/lbrpc/lbrpc"
	"github.com/lbrpc/lbrpc/internal/rpctest"
	"github.com/lbrpc/lbrpc/registry"
)

// reportingRegistry is a static set whose watcher wants to hear of
// failures, as the DNS registry does to re-resolve early.
type reportingRegistry struct {
	nodes []registry.Node
	mu    sync.Mutex
	addrs []string
}

func (r *reportingRegistry) Watch(context.Context) (registry.Watcher, error) {
	return &reportingWatcher{r: r, stop: make(chan struct{})}, nil
}

func (r *reportingRegistry) reported() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.addrs...)
}

type reportingWatcher struct {
	r    *reportingRegistry
	sent bool
	stop chan struct{}
	once sync.Once
}

func (w *reportingWatcher) Next() ([]registry.Node, error) {
	if !w.sent {
		w.sent = true
		return w.r.nodes, nil
	}
	<-w.stop
	return nil, registry.ErrStopped
}

func (w *reportingWatcher) Stop() error { w.once.Do(func() { close(w.stop) }); return nil }

func (w *reportingWatcher) ReportFailure(addr string, _ error) {
	w.r.mu.Lock()
	w.r.addrs = append(w.r.addrs, addr)
	w.r.mu.Unlock()
}

// The client tells a watcher that implements registry.FailureReporter
// which node it failed to reach, and says nothing of answers.
func TestFailuresReportedToRegistry(t *testing.T) {
	servers := rpctest.Start(t, 2, rpctest.Gob)
	reg := &reportingRegistry{nodes: nodes(servers...)}
	c, err := lbrpc.New(lbrpc.WithRegistry(reg), lbrpc.WithRetry(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var reply string
	for i := 0; i < 4; i++ {
		if err := c.Call(context.Background(), "Hello.Say", "x", &reply); err != nil {
			t.Fatal(err)
		}
	}
	c.Call(context.Background(), "Hello.Fail", "x", &reply) // an answer, not a failure
	if got := reg.reported(); len(got) != 0 {
		t.Fatalf("reported %v while every node answered", got)
	}
	dead := servers[0].Addr
	servers[0].Kill()
	rpctest.Eventually(t, "a failure to be reported", func() bool {
		if err := c.Call(context.Background(), "Hello.Say", "x", &reply); err != nil {
			t.Fatalf("call with one node left: %v", err)
		}
		return len(reg.reported()) > 0
	})
	for _, a := range reg.reported() {
		if a != dead {
			t.Fatalf("reported %s, want only the dead node %s", a, dead)
		}
	}
}
