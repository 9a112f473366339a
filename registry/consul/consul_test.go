package consul_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lbrpc/lbrpc/registry"
	"github.com/lbrpc/lbrpc/registry/consul"
	"github.com/lbrpc/lbrpc/registry/consul/internal/fakeconsul"
)

func TestNewValidates(t *testing.T) {
	_, c := newAgent(t)
	tests := []struct {
		name    string
		client  *api.Client
		service string
		opts    []consul.Option
	}{
		{"nil client", nil, "web", nil},
		{"empty service", c, "", nil},
		{"slash in service", c, "a/b", nil},
		{"space in service", c, "a b", nil},
		{"zero wait", c, "web", []consul.Option{consul.WithWaitTime(0)}},
		{"negative wait", c, "web", []consul.Option{consul.WithWaitTime(-time.Second)}},
		{"zero backoff", c, "web", []consul.Option{consul.WithBackoff(0, time.Second)}},
		{"backoff max below base", c, "web", []consul.Option{consul.WithBackoff(time.Second, time.Millisecond)}},
		{"query with wait index", c, "web", []consul.Option{consul.WithQueryOptions(api.QueryOptions{WaitIndex: 7})}},
		{"query with wait time", c, "web", []consul.Option{consul.WithQueryOptions(api.QueryOptions{WaitTime: time.Second})}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if r, err := consul.New(tt.client, tt.service, tt.opts...); err == nil {
				t.Errorf("New = %v, nil; want an error", r)
			}
		})
	}
	if _, err := consul.New(c, "web", nil, consul.WithTag(""), consul.WithQueryOptions(api.QueryOptions{AllowStale: true})); err != nil {
		t.Errorf("New with valid options: %v", err)
	}
}

// TestMapping checks how health entries become Nodes: address fallback,
// weights, metadata and tags, sorting, and skipped entries.
func TestMapping(t *testing.T) {
	a, c := newAgent(t)
	regs := []api.AgentServiceRegistration{
		{ID: "b", Name: "web", Address: "10.0.0.2", Port: 80,
			Weights: &api.AgentWeights{Passing: 5, Warning: 1},
			Meta:    map[string]string{"zone": "eu-1"}, Tags: []string{"primary", "v2"}},
		{ID: "a", Name: "web", Port: 81}, // no address: the node's
		{ID: "c", Name: "web", Address: "::1", Port: 82, Tags: []string{"v1"}},
		{ID: "d", Name: "web", Address: "10.0.0.4"},                                                   // no port: skipped
		{ID: "e", Name: "web", Address: "10.0.0.2", Port: 80, Weights: &api.AgentWeights{Passing: 9}}, // same Addr as b, higher ID
		{ID: "f", Name: "other", Address: "10.0.0.6", Port: 80},
	}
	for _, r := range regs {
		if err := a.Register(r); err != nil {
			t.Fatal(err)
		}
	}
	w := watch(t, c, "web")
	got, err := next(t, w)
	if err != nil {
		t.Fatal(err)
	}
	want := []registry.Node{
		node("10.0.0.2:80", 5, map[string]string{"zone": "eu-1", consul.TagsMetaKey: "primary,v2"}),
		node("127.0.0.1:81", 1, nil),
		node("[::1]:82", 1, map[string]string{consul.TagsMetaKey: "v1"}),
	}
	if !equal(got, want) {
		t.Errorf("Next = %v\nwant   %v", got, want)
	}
}

func TestOnlyPassing(t *testing.T) {
	a, c := newAgent(t)
	for i, status := range []string{api.HealthPassing, api.HealthWarning, api.HealthCritical} {
		r := instance("web", i+1)
		r.Check = &api.AgentServiceCheck{CheckID: "chk-" + strconv.Itoa(i+1), TTL: "1h", Status: status}
		if err := a.Register(r); err != nil {
			t.Fatal(err)
		}
	}
	w := watch(t, c, "web")
	await(t, w, []registry.Node{node("10.0.0.1:4000", 1, nil)})

	if err := a.SetCheckStatus("chk-3", api.HealthPassing); err != nil {
		t.Fatal(err)
	}
	await(t, w, []registry.Node{node("10.0.0.1:4000", 1, nil), node("10.0.0.3:4000", 1, nil)})

	if err := a.SetCheckStatus("chk-1", api.HealthCritical); err != nil {
		t.Fatal(err)
	}
	await(t, w, []registry.Node{node("10.0.0.3:4000", 1, nil)})

	for _, r := range healthRequests(a, "web") {
		if !r.Query.Has("passing") {
			t.Fatalf("health query without passing filter: %v", r.Query)
		}
	}
}

func TestTagFilter(t *testing.T) {
	a, c := newAgent(t)
	r1, r2 := instance("web", 1), instance("web", 2)
	r1.Tags = []string{"canary"}
	r2.Tags = []string{"stable"}
	for _, r := range []api.AgentServiceRegistration{r1, r2} {
		if err := a.Register(r); err != nil {
			t.Fatal(err)
		}
	}
	w := watch(t, c, "web", consul.WithTag("canary"))
	await(t, w, []registry.Node{node("10.0.0.1:4000", 1, map[string]string{consul.TagsMetaKey: "canary"})})
	if q := healthRequests(a, "web")[0].Query; q.Get("tag") != "canary" {
		t.Errorf("tag parameter = %q, want canary", q.Get("tag"))
	}
}

// TestBlockingQuery checks that after the first answer the watcher waits in
// blocking queries carrying index and wait, that answers without a change
// (the index moved for another service) cost one query each and are not
// reported, and that a change is.
func TestBlockingQuery(t *testing.T) {
	a, c := newAgent(t)
	if err := a.Register(instance("web", 1)); err != nil {
		t.Fatal(err)
	}
	if err := a.Register(api.AgentServiceRegistration{ID: "o", Name: "other", Port: 1,
		Check: &api.AgentServiceCheck{CheckID: "o-chk", TTL: "1h", Status: api.HealthPassing}}); err != nil {
		t.Fatal(err)
	}
	w := watch(t, c, "web", consul.WithWaitTime(time.Minute))
	if _, err := next(t, w); err != nil {
		t.Fatal(err)
	}
	first := healthRequests(a, "web")
	if len(first) != 1 || first[0].Query.Has("index") {
		t.Fatalf("first query: %v, want one without index", first)
	}

	ch := nextAsync(w)
	// blockedAtCurrentIndex reports whether the latest query carries the
	// agent's current index, that is, the watcher is blocked and idle.
	blockedAtCurrentIndex := func() bool {
		reqs := healthRequests(a, "web")
		last := reqs[len(reqs)-1].Query
		return last.Get("index") == strconv.FormatUint(a.Index(), 10)
	}
	poll(t, "blocking query at the current index", blockedAtCurrentIndex)
	last := healthRequests(a, "web")[1].Query
	if last.Get("wait") != "60000ms" {
		t.Errorf("wait parameter = %q, want 60000ms", last.Get("wait"))
	}

	const wakes = 3
	for i := range wakes {
		status := []string{api.HealthWarning, api.HealthPassing}[i%2]
		if err := a.SetCheckStatus("o-chk", status); err != nil {
			t.Fatal(err)
		}
		poll(t, "re-blocked after a change elsewhere", blockedAtCurrentIndex)
	}
	select {
	case r := <-ch:
		t.Fatalf("Next returned %v, %v without a change to the set", r.nodes, r.err)
	default:
	}
	if n := len(healthRequests(a, "web")); n != 2+wakes {
		t.Errorf("%d health queries after %d unrelated changes, want %d", n, wakes, 2+wakes)
	}

	if err := a.Register(instance("web", 2)); err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if want := []registry.Node{node("10.0.0.1:4000", 1, nil), node("10.0.0.2:4000", 1, nil)}; r.err != nil || !equal(r.nodes, want) {
		t.Errorf("Next = %v, %v; want %v", r.nodes, r.err, want)
	}
	if n := len(healthRequests(a, "web")); n != 2+wakes {
		t.Errorf("%d health queries in all, want %d (the change answers the last one)", n, 2+wakes)
	}
}

// TestIndexReset checks that an index that goes backwards restarts the
// chain from index 0, so later changes are not missed.
func TestIndexReset(t *testing.T) {
	a, c := newAgent(t)
	if err := a.Register(instance("web", 1)); err != nil {
		t.Fatal(err)
	}
	w := watch(t, c, "web", consul.WithWaitTime(100*time.Millisecond))
	if _, err := next(t, w); err != nil {
		t.Fatal(err)
	}
	ch := nextAsync(w)
	old := strconv.FormatUint(a.Index(), 10)
	poll(t, "blocking query", func() bool { return len(healthRequests(a, "web")) >= 2 })

	a.SetIndex(5) // a snapshot restore
	poll(t, "query at the reset index", func() bool {
		for _, r := range healthRequests(a, "web") {
			if r.Query.Get("index") == "5" {
				return true
			}
		}
		return false
	})
	reqs := healthRequests(a, "web")
	var sawZero bool
	for _, r := range reqs[1:] {
		switch r.Query.Get("index") {
		case "":
			sawZero = true
		case old, "5":
		default:
			t.Errorf("query with index %q, want only %s, none or 5", r.Query.Get("index"), old)
		}
		if r.Query.Get("index") == "5" && !sawZero {
			t.Error("watcher moved to index 5 without restarting from 0")
		}
	}

	if err := a.Register(instance("web", 2)); err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if want := []registry.Node{node("10.0.0.1:4000", 1, nil), node("10.0.0.2:4000", 1, nil)}; r.err != nil || !equal(r.nodes, want) {
		t.Errorf("Next = %v, %v; want %v", r.nodes, r.err, want)
	}
}

// TestBrokenIndexNoBusyLoop checks that an agent answering at once with
// index 0 (a bug Consul's documentation warns of) does not make the watcher
// spin: its queries start at least 100ms apart.
func TestBrokenIndexNoBusyLoop(t *testing.T) {
	a, c := newAgent(t)
	if err := a.Register(instance("web", 1)); err != nil {
		t.Fatal(err)
	}
	w := watch(t, c, "web", consul.WithWaitTime(time.Minute))
	if _, err := next(t, w); err != nil {
		t.Fatal(err)
	}
	ch := nextAsync(w)
	poll(t, "blocking query", func() bool { return len(healthRequests(a, "web")) >= 2 })

	start := time.Now()
	a.BreakBlocking(0)
	before := len(healthRequests(a, "web"))
	poll(t, "queries against the broken agent", func() bool { return len(healthRequests(a, "web")) >= before+4 })
	a.FixBlocking()
	elapsed := time.Since(start)
	n := len(healthRequests(a, "web")) - before
	// Queries start at least 100ms apart, so a window of elapsed holds at
	// most elapsed/100ms + 1 starts, plus the one in flight at the break.
	if limit := int(elapsed/(100*time.Millisecond)) + 2; n > limit {
		t.Errorf("%d queries in %v against an agent that never blocks; want at most %d", n, elapsed, limit)
	}
	select {
	case r := <-ch:
		t.Fatalf("Next returned %v, %v without a change", r.nodes, r.err)
	default:
	}
	if err := a.Register(instance("web", 2)); err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if want := []registry.Node{node("10.0.0.1:4000", 1, nil), node("10.0.0.2:4000", 1, nil)}; r.err != nil || !equal(r.nodes, want) {
		t.Errorf("Next = %v, %v; want %v", r.nodes, r.err, want)
	}
}

// TestAgentFailure checks that while the agent fails, Next returns errors
// with a nil set, and that the set is reported again once it recovers.
func TestAgentFailure(t *testing.T) {
	tests := []struct {
		name    string
		fail    func(*fakeconsul.Agent)
		restore func(*fakeconsul.Agent)
		check   func(*testing.T, error)
	}{
		{
			name:    "unreachable",
			fail:    func(a *fakeconsul.Agent) { a.SetDown(true) },
			restore: func(a *fakeconsul.Agent) { a.SetDown(false) },
			check:   func(*testing.T, error) {},
		},
		{
			name:    "HTTP 500",
			fail:    func(a *fakeconsul.Agent) { a.SetErrorStatus(500) },
			restore: func(a *fakeconsul.Agent) { a.SetErrorStatus(0) },
			check: func(t *testing.T, err error) {
				var se api.StatusError
				if !errors.As(err, &se) || se.Code != 500 {
					t.Errorf("error %v does not wrap a 500 api.StatusError", err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, c := newAgent(t)
			if err := a.Register(instance("web", 1)); err != nil {
				t.Fatal(err)
			}
			w := watch(t, c, "web")
			good := []registry.Node{node("10.0.0.1:4000", 1, nil)}
			await(t, w, good)

			ch := nextAsync(w) // blocked in a query when the agent fails
			poll(t, "blocking query", func() bool { return len(healthRequests(a, "web")) >= 2 })
			tt.fail(a)
			for i := range 3 {
				r := <-ch
				if r.err == nil || r.nodes != nil {
					t.Fatalf("Next #%d while failing = %v, %v; want a nil set and an error", i, r.nodes, r.err)
				}
				if errors.Is(r.err, registry.ErrStopped) {
					t.Fatalf("Next while failing = %v", r.err)
				}
				tt.check(t, r.err)
				ch = nextAsync(w)
			}
			tt.restore(a)
			r := <-ch
			if r.err != nil || !equal(r.nodes, good) {
				t.Errorf("Next after recovery = %v, %v; want the unchanged set %v", r.nodes, r.err, good)
			}
			if err := a.Register(instance("web", 2)); err != nil {
				t.Fatal(err)
			}
			await(t, w, append(good, node("10.0.0.2:4000", 1, nil)))
		})
	}
}

func TestEmptySet(t *testing.T) {
	a, c := newAgent(t)
	w := watch(t, c, "web")
	got, err := next(t, w)
	if err != nil || got == nil || len(got) != 0 {
		t.Fatalf("first Next of an unknown service = %#v, %v; want an empty non-nil set", got, err)
	}
	if err := a.Register(instance("web", 1)); err != nil {
		t.Fatal(err)
	}
	await(t, w, []registry.Node{node("10.0.0.1:4000", 1, nil)})
	if err := c.Agent().ServiceDeregister("web-1"); err != nil {
		t.Fatal(err)
	}
	got, err = next(t, w)
	if err != nil || got == nil || len(got) != 0 {
		t.Fatalf("Next after the last instance left = %#v, %v; want an empty non-nil set", got, err)
	}
}

func TestStop(t *testing.T) {
	t.Run("while blocked", func(t *testing.T) {
		a, c := newAgent(t)
		w := watch(t, c, "web", consul.WithWaitTime(time.Minute))
		if _, err := next(t, w); err != nil {
			t.Fatal(err)
		}
		ch := nextAsync(w)
		poll(t, "blocking query", func() bool { return len(healthRequests(a, "web")) >= 2 })
		if err := w.Stop(); err != nil {
			t.Fatal(err)
		}
		if r := <-ch; !errors.Is(r.err, registry.ErrStopped) || r.nodes != nil {
			t.Errorf("blocked Next after Stop = %v, %v; want ErrStopped", r.nodes, r.err)
		}
		if err := w.Stop(); err != nil {
			t.Errorf("second Stop: %v", err)
		}
		if _, err := w.Next(); !errors.Is(err, registry.ErrStopped) {
			t.Errorf("Next after Stop: %v, want ErrStopped", err)
		}
	})
	t.Run("while backing off", func(t *testing.T) {
		a, c := newAgent(t)
		w := watch(t, c, "web", consul.WithBackoff(time.Hour, time.Hour))
		a.SetDown(true)
		if _, err := next(t, w); err == nil {
			t.Fatal("Next against a down agent succeeded")
		}
		ch := nextAsync(w) // sleeps for an hour
		w.Stop()
		if r := <-ch; !errors.Is(r.err, registry.ErrStopped) {
			t.Errorf("Next after Stop = %v, %v; want ErrStopped", r.nodes, r.err)
		}
	})
	t.Run("before the first Next", func(t *testing.T) {
		_, c := newAgent(t)
		w := watch(t, c, "web")
		w.Stop()
		if _, err := w.Next(); !errors.Is(err, registry.ErrStopped) {
			t.Errorf("Next after Stop: %v, want ErrStopped", err)
		}
	})
}

// TestWatchNilContext proves that Watch answers a nil ctx with
// registry.ErrNilContext instead of panicking.
func TestWatchNilContext(t *testing.T) {
	_, c := newAgent(t)
	r, err := consul.New(c, "web")
	if err != nil {
		t.Fatal(err)
	}
	var ctx context.Context
	if w, err := r.Watch(ctx); !errors.Is(err, registry.ErrNilContext) {
		if w != nil {
			w.Stop()
		}
		t.Fatalf("Watch(nil) = %v, %v; want registry.ErrNilContext", w, err)
	}
}

func TestWatchCanceledContext(t *testing.T) {
	_, c := newAgent(t)
	r, err := consul.New(c, "web")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if w, err := r.Watch(ctx); err == nil {
		w.Stop()
		t.Error("Watch with a canceled context succeeded")
	}
}
