package lbrpc_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/lbrpc/lbrpc"
	"github.com/lbrpc/lbrpc/internal/rpctest"
	"github.com/lbrpc/lbrpc/picker"
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
	c, err := lbrpc.New(lbrpc.WithRegistry(reg), lbrpc.WithRetry(1), lbrpc.WithPicker(picker.RoundRobin()))
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
	// Round robin: of two calls at once, one is held by servers[0], which
	// dies under it; that call fails there and is retried on servers[1].
	dead := servers[0].Addr
	servers[0].SetLatency(time.Hour)
	base := servers[0].Calls()
	errs := make(chan error, 2)
	for i := 0; i < 2; i++ {
		go func() {
			var reply string
			errs <- c.Call(context.Background(), "Hello.Say", "x", &reply)
		}()
	}
	rpctest.Eventually(t, "a call held by servers[0]", func() bool { return servers[0].Calls() == base+1 })
	servers[0].Kill()
	for i := 0; i < 2; i++ {
		if err := <-errs; err != nil {
			t.Fatalf("call with one node left: %v", err)
		}
	}
	if len(reg.reported()) == 0 {
		t.Fatal("the failed attempt was not reported")
	}
	for _, a := range reg.reported() {
		if a != dead {
			t.Fatalf("reported %s, want only the dead node %s", a, dead)
		}
	}
}

// A node the transport loses while no call is made to it (it closes its
// idle connection, and the redial fails) is reported too.
func TestIdleNodeLossReportedToRegistry(t *testing.T) {
	servers := rpctest.Start(t, 2, rpctest.Gob)
	reg := &reportingRegistry{nodes: nodes(servers...)}
	c, err := lbrpc.New(lbrpc.WithRegistry(reg), lbrpc.WithPicker(picker.RoundRobin()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var reply string
	for i := 0; i < 2; i++ {
		if err := c.Call(context.Background(), "Hello.Say", "x", &reply); err != nil {
			t.Fatal(err)
		}
	}
	servers[0].Kill()
	rpctest.Eventually(t, "the idle node's loss to be reported", func() bool { return len(reg.reported()) > 0 })
	if got := reg.reported(); got[0] != servers[0].Addr {
		t.Fatalf("reported %v, want the dead node %s", got, servers[0].Addr)
	}
	if s := stateOf(t, c, servers[0].Addr); s.Ready || s.Reachable {
		t.Fatalf("state = %+v, want the lost node out of the ready set", s)
	}
}
