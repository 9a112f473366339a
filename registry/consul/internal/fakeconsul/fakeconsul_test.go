package fakeconsul_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"go.uber.org/goleak"

	"github.com/lbrpc/lbrpc/registry/consul/internal/fakeconsul"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newAgent(t *testing.T) (*fakeconsul.Agent, *api.Client) {
	t.Helper()
	a := fakeconsul.New()
	t.Cleanup(a.Close)
	return a, a.Client()
}

// TestRoundTrip checks that what the api client sends comes back in the
// shapes the api client decodes.
func TestRoundTrip(t *testing.T) {
	a, c := newAgent(t)
	reg := &api.AgentServiceRegistration{
		ID: "web-1", Name: "web", Address: "10.0.0.1", Port: 80,
		Tags: []string{"Primary"}, Meta: map[string]string{"zone": "a"},
		Weights: &api.AgentWeights{Passing: 3, Warning: 1},
		Check:   &api.AgentServiceCheck{TTL: "1m", Status: api.HealthPassing},
	}
	if err := c.Agent().ServiceRegister(reg); err != nil {
		t.Fatal(err)
	}
	entries, meta, err := c.Health().Service("web", "primary", true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if meta.LastIndex != a.Index() {
		t.Errorf("LastIndex = %d, want %d", meta.LastIndex, a.Index())
	}
	if len(entries) != 1 {
		t.Fatalf("got %d entries, want 1", len(entries))
	}
	e := entries[0]
	if e.Node.Address != fakeconsul.NodeAddress || e.Service.ID != "web-1" || e.Service.Port != 80 ||
		e.Service.Weights.Passing != 3 || e.Service.Meta["zone"] != "a" || len(e.Service.Tags) != 1 {
		t.Errorf("entry = node %+v service %+v", e.Node, e.Service)
	}
	if got := e.Checks.AggregatedStatus(); got != api.HealthPassing {
		t.Errorf("aggregated status = %q, want passing", got)
	}
	if _, ok := a.CheckStatus("service:web-1"); !ok {
		t.Error("check not registered under its default ID service:web-1")
	}

	err = c.Agent().UpdateTTL("service:web-1", "", api.HealthCritical)
	if err != nil {
		t.Fatal(err)
	}
	if entries, _, _ := c.Health().Service("web", "", true, nil); len(entries) != 0 {
		t.Errorf("critical instance returned with passing filter")
	}
	if entries, _, _ := c.Health().Service("web", "", false, nil); len(entries) != 1 {
		t.Errorf("critical instance missing without passing filter")
	}
	if err := c.Agent().ServiceDeregister("web-1"); err != nil {
		t.Fatal(err)
	}
	var se api.StatusError
	if err := c.Agent().ServiceDeregister("web-1"); !errors.As(err, &se) || se.Code != 404 {
		t.Errorf("second deregister: %v, want a 404 StatusError", err)
	}
	if err := c.Agent().UpdateTTL("service:web-1", "", api.HealthPassing); !errors.As(err, &se) || se.Code != 404 {
		t.Errorf("update of removed check: %v, want a 404 StatusError", err)
	}
}

// TestBlocking checks that a query blocks while its index is current and
// returns when the index moves.
func TestBlocking(t *testing.T) {
	a, c := newAgent(t)
	_, meta, err := c.Health().Service("web", "", true, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan uint64, 1)
	go func() {
		_, m, err := c.Health().Service("web", "", true, &api.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: time.Minute})
		if err != nil {
			done <- 0
			return
		}
		done <- m.LastIndex
	}()
	waitFor(t, func() bool { return len(a.Requests()) == 2 })
	select {
	case <-done:
		t.Fatal("blocking query returned before any change")
	default:
	}
	if err := a.Register(api.AgentServiceRegistration{Name: "web", Port: 1}); err != nil {
		t.Fatal(err)
	}
	if got := <-done; got <= meta.LastIndex {
		t.Errorf("index after change = %d, want > %d", got, meta.LastIndex)
	}
}

// TestBlockingWaitElapses checks the wait parameter and that an index ahead
// of the agent's (after SetIndex went back) is answered when wait elapses.
func TestBlockingWaitElapses(t *testing.T) {
	a, c := newAgent(t)
	old := a.Index()
	a.SetIndex(5)
	_, m, err := c.Health().Service("web", "", true, &api.QueryOptions{WaitIndex: old, WaitTime: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if m.LastIndex != 5 {
		t.Errorf("LastIndex = %d, want 5", m.LastIndex)
	}
}

func TestTTLExpiry(t *testing.T) {
	a, c := newAgent(t)
	err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: "w", Name: "web", Port: 1,
		Check: &api.AgentServiceCheck{CheckID: "w-ttl", TTL: "50ms", Status: api.HealthPassing},
	})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { s, _ := a.CheckStatus("w-ttl"); return s == api.HealthCritical })
}

func TestFaults(t *testing.T) {
	a, c := newAgent(t)
	a.SetDown(true)
	if _, _, err := c.Health().Service("web", "", true, nil); err == nil {
		t.Error("query while down succeeded")
	}
	a.SetDown(false)
	a.SetErrorStatus(500)
	var se api.StatusError
	if _, _, err := c.Health().Service("web", "", true, nil); !errors.As(err, &se) || se.Code != 500 {
		t.Errorf("query with error status: %v, want a 500 StatusError", err)
	}
	a.SetErrorStatus(0)
	if _, _, err := c.Health().Service("web", "", true, (&api.QueryOptions{}).WithContext(context.Background())); err != nil {
		t.Errorf("query after faults cleared: %v", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
