package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"go.uber.org/goleak"

	"github.com/lbrpc/lbrpc/registry"
	"github.com/lbrpc/lbrpc/registry/registrytest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	hostTarget = "svc.test.:8080"
	srvName    = "_rpc._tcp.svc.test."
)

func TestConstructorsValidate(t *testing.T) {
	tests := []struct {
		name string
		make func() (*Registry, error)
		ok   bool
	}{
		{"host name", func() (*Registry, error) { return Host("svc.test:8080") }, true},
		{"rooted host name", func() (*Registry, error) { return Host("svc.test.:8080") }, true},
		{"IPv6 literal", func() (*Registry, error) { return Host("[2001:db8::1]:8080") }, true},
		{"empty", func() (*Registry, error) { return Host("") }, false},
		{"no port", func() (*Registry, error) { return Host("svc.test") }, false},
		{"empty port", func() (*Registry, error) { return Host("svc.test:") }, false},
		{"empty host", func() (*Registry, error) { return Host(":8080") }, false},
		{"port 0", func() (*Registry, error) { return Host("svc.test:0") }, false},
		{"port too big", func() (*Registry, error) { return Host("svc.test:65536") }, false},
		{"named port", func() (*Registry, error) { return Host("svc.test:http") }, false},
		{"URL", func() (*Registry, error) { return Host("http://svc.test:8080") }, false},
		{"SRV", func() (*Registry, error) { return SRV("_rpc._tcp.svc.test") }, true},
		{"empty SRV", func() (*Registry, error) { return SRV("") }, false},
		{"SRV with port", func() (*Registry, error) { return SRV("_rpc._tcp.svc.test:8080") }, false},
		{"SRV empty label", func() (*Registry, error) { return SRV("_rpc..svc.test") }, false},
		{"nil resolver", func() (*Registry, error) { return Host("svc.test:1", WithResolver(nil)) }, true},
		{"interval at minimum", func() (*Registry, error) { return Host("svc.test:1", WithInterval(time.Second)) }, true},
		{"interval below minimum", func() (*Registry, error) { return Host("svc.test:1", WithInterval(time.Second-1)) }, false},
		{"min interval below minimum", func() (*Registry, error) { return SRV("svc.test", WithMinInterval(0)) }, false},
		{"zero timeout", func() (*Registry, error) { return SRV("svc.test", WithTimeout(0)) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := tt.make()
			if tt.ok && (err != nil || r == nil) {
				t.Errorf("got %v, %v; want a registry", r, err)
			}
			if !tt.ok && (err == nil || r != nil) {
				t.Errorf("got %v, %v; want an error", r, err)
			}
		})
	}
}

func TestLookup(t *testing.T) {
	tests := []struct {
		name     string
		srv      bool
		records  []string
		rcode    int
		want     []registry.Node
		fail     bool // want a *LookupError
		notFound bool // and errors.Is(err, ErrNotFound)
	}{{
		name:    "A records",
		records: []string{"svc.test. 0 IN A 192.0.2.2", "svc.test. 0 IN A 192.0.2.1"},
		want:    []registry.Node{{Addr: "192.0.2.1:8080", Weight: 1}, {Addr: "192.0.2.2:8080", Weight: 1}},
	}, {
		name:    "A and AAAA records",
		records: []string{"svc.test. 0 IN A 192.0.2.1", "svc.test. 0 IN AAAA 2001:db8::1"},
		want:    []registry.Node{{Addr: "192.0.2.1:8080", Weight: 1}, {Addr: "[2001:db8::1]:8080", Weight: 1}},
	}, {
		name:    "repeated A record",
		records: []string{"svc.test. 0 IN A 192.0.2.1", "svc.test. 0 IN A 192.0.2.1"},
		want:    []registry.Node{{Addr: "192.0.2.1:8080", Weight: 1}},
	}, {
		name: "NXDOMAIN", fail: true, notFound: true,
	}, {
		name:    "no address records",
		records: []string{`svc.test. 0 IN TXT "not an address"`},
		fail:    true, notFound: true,
	}, {
		name:    "SERVFAIL",
		records: []string{"svc.test. 0 IN A 192.0.2.1"},
		rcode:   mdns.RcodeServerFailure,
		fail:    true,
	}, {
		name: "SRV weights and ports",
		srv:  true,
		records: []string{
			"_rpc._tcp.svc.test. 0 IN SRV 10 30 9090 b.svc.test.",
			"_rpc._tcp.svc.test. 0 IN SRV 10 10 8080 a.svc.test.",
		},
		want: []registry.Node{{Addr: "a.svc.test:8080", Weight: 10}, {Addr: "b.svc.test:9090", Weight: 30}},
	}, {
		name: "SRV weight 0 gets a small share",
		srv:  true,
		records: []string{
			"_rpc._tcp.svc.test. 0 IN SRV 10 0 8080 a.svc.test.",
			"_rpc._tcp.svc.test. 0 IN SRV 10 100 8080 b.svc.test.",
		},
		want: []registry.Node{{Addr: "a.svc.test:8080", Weight: 1}, {Addr: "b.svc.test:8080", Weight: 100}},
	}, {
		name: "SRV lowest priority number only",
		srv:  true,
		records: []string{
			"_rpc._tcp.svc.test. 0 IN SRV 20 10 8080 backup.svc.test.",
			"_rpc._tcp.svc.test. 0 IN SRV 10 10 8080 a.svc.test.",
		},
		want: []registry.Node{{Addr: "a.svc.test:8080", Weight: 10}},
	}, {
		name: "SRV repeated target keeps the heaviest",
		srv:  true,
		records: []string{
			"_rpc._tcp.svc.test. 0 IN SRV 10 5 8080 a.svc.test.",
			"_rpc._tcp.svc.test. 0 IN SRV 10 7 8080 a.svc.test.",
		},
		want: []registry.Node{{Addr: "a.svc.test:8080", Weight: 7}},
	}, {
		name:    "SRV decidedly not available",
		srv:     true,
		records: []string{"_rpc._tcp.svc.test. 0 IN SRV 0 0 0 ."},
		want:    []registry.Node{},
	}, {
		name: "SRV NXDOMAIN", srv: true, fail: true, notFound: true,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startServer(t, tt.records...)
			s.setRcode(tt.rcode)
			w, _ := start(t, s, tt.srv)
			got, err := next(t, w)
			if !tt.fail {
				if err != nil || got == nil || !slices.EqualFunc(got, tt.want, sameNode) {
					t.Fatalf("Next = %v, %v; want %v", got, err, tt.want)
				}
				return
			}
			var le *LookupError
			if got != nil || !errors.As(err, &le) {
				t.Fatalf("Next = %v, %v; want nil, *LookupError", got, err)
			}
			var de *net.DNSError
			if !errors.As(err, &de) {
				t.Errorf("%v does not wrap a *net.DNSError", err)
			}
			if errors.Is(err, ErrNotFound) != tt.notFound {
				t.Errorf("errors.Is(%v, ErrNotFound) = %v; want %v", err, !tt.notFound, tt.notFound)
			}
		})
	}
}

func TestChanges(t *testing.T) {
	const (
		a      = "_rpc._tcp.svc.test. 0 IN SRV 10 10 8080 a.svc.test."
		b      = "_rpc._tcp.svc.test. 0 IN SRV 10 10 8080 b.svc.test."
		bHeavy = "_rpc._tcp.svc.test. 0 IN SRV 10 50 8080 b.svc.test."
		c      = "_rpc._tcp.svc.test. 0 IN SRV 10 10 8080 c.svc.test."
		backup = "_rpc._tcp.svc.test. 0 IN SRV 20 10 8080 backup.svc.test."
	)
	na, nb, nc := node("a.svc.test:8080", 10), node("b.svc.test:8080", 10), node("c.svc.test:8080", 10)
	nbHeavy, nbackup := node("b.svc.test:8080", 50), node("backup.svc.test:8080", 10)
	steps := []struct {
		name    string
		records []string
		want    []registry.Node // nil: no news
	}{
		{"a node joins", []string{a, b, c}, []registry.Node{na, nb, nc}},
		{"a node leaves", []string{b, c}, []registry.Node{nb, nc}},
		{"a weight changes", []string{bHeavy, c}, []registry.Node{nbHeavy, nc}},
		{"same records in another order", []string{c, bHeavy}, nil},
		{"backup group takes over", []string{backup}, []registry.Node{nbackup}},
		{"lower group is back", []string{backup, a}, []registry.Node{na}},
		{"a backup record goes", []string{a}, nil},
	}

	s := startServer(t, a, b)
	w, clk := start(t, s, true)
	if got, err := next(t, w); err != nil || !slices.EqualFunc(got, []registry.Node{na, nb}, sameNode) {
		t.Fatalf("first Next = %v, %v", got, err)
	}
	for _, step := range steps {
		s.set(step.records...)
		tick(t, clk)
		if step.want == nil {
			noNews(t, w, step.name)
			continue
		}
		if got, err := next(t, w); err != nil || !slices.EqualFunc(got, step.want, sameNode) {
			t.Fatalf("%s: Next = %v, %v; want %v", step.name, got, err, step.want)
		}
	}
}

func TestFailureKeepsLastGoodSet(t *testing.T) {
	tests := []struct {
		name        string
		break_, fix func(s *server)
		notFound    bool
	}{
		{"server down", (*server).down, (*server).up, false},
		{"SERVFAIL", func(s *server) { s.setRcode(mdns.RcodeServerFailure) }, func(s *server) { s.setRcode(mdns.RcodeSuccess) }, false},
		{"REFUSED", func(s *server) { s.setRcode(mdns.RcodeRefused) }, func(s *server) { s.setRcode(mdns.RcodeSuccess) }, false},
		{"timeout", func(s *server) { s.setMute(true) }, func(s *server) { s.setMute(false) }, false},
		{"NXDOMAIN", func(s *server) { s.set() }, func(s *server) { s.set("svc.test. 0 IN A 192.0.2.1") }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startServer(t, "svc.test. 0 IN A 192.0.2.1")
			w, clk := start(t, s, false, WithTimeout(100*time.Millisecond))
			want := []registry.Node{node("192.0.2.1:8080", 1)}
			if got, err := next(t, w); err != nil || !slices.EqualFunc(got, want, sameNode) {
				t.Fatalf("first Next = %v, %v; want %v", got, err, want)
			}
			tick(t, clk) // unchanged: nothing to say
			noNews(t, w, "healthy")

			tt.break_(s)
			tick(t, clk)
			got, err := next(t, w)
			var le *LookupError
			if got != nil || !errors.As(err, &le) || le.Name != "svc.test." {
				t.Fatalf("Next after failure = %v, %v; want nil, *LookupError for svc.test.", got, err)
			}
			if errors.Is(err, ErrNotFound) != tt.notFound {
				t.Errorf("errors.Is(%v, ErrNotFound) = %v; want %v", err, !tt.notFound, tt.notFound)
			}
			tick(t, clk)
			tick(t, clk)
			noNews(t, w, "still failing") // once per streak

			tt.fix(s)
			tick(t, clk)
			if got, err := next(t, w); err != nil || !slices.EqualFunc(got, want, sameNode) {
				t.Fatalf("Next after recovery = %v, %v; want the set again: %v", got, err, want)
			}
			tick(t, clk)
			noNews(t, w, "recovered")
		})
	}
}

// TestNewsWhileNextIsNotCalled proves what a slow consumer gets when several
// resolutions end before it calls Next: a set that a failure follows is
// returned first and the failure after it, so the client's last good set
// during the outage is the newest one; a set that follows an unread failure
// replaces it, since the failure is over.
func TestNewsWhileNextIsNotCalled(t *testing.T) {
	const (
		a = "svc.test. 0 IN A 192.0.2.1"
		b = "svc.test. 0 IN A 192.0.2.2"
	)
	na, nb := node("192.0.2.1:8080", 1), node("192.0.2.2:8080", 1)
	var (
		fail  = func(s *server) { s.setRcode(mdns.RcodeServerFailure) }
		fix   = func(s *server) { s.setRcode(mdns.RcodeSuccess) }
		setB  = func(s *server) { s.set(a, b) }
		onlyB = func(s *server) { s.set(b) }
	)
	type want struct {
		nodes []registry.Node // when fail is false
		fail  bool            // a *LookupError
	}
	tests := []struct {
		name  string
		steps []func(*server) // one resolution after each
		want  []want          // what Next then returns, in order
	}{
		{"set then failure", []func(*server){setB, fail}, []want{{nodes: []registry.Node{na, nb}}, {fail: true}}},
		{"set, failure, still failing", []func(*server){setB, fail, func(*server) {}}, []want{{nodes: []registry.Node{na, nb}}, {fail: true}}},
		{"failure then a new set", []func(*server){fail, func(s *server) { fix(s); setB(s) }}, []want{{nodes: []registry.Node{na, nb}}}},
		{"failure then the same set", []func(*server){fail, fix}, []want{{nodes: []registry.Node{na}}}},
		{"set, failure, another set", []func(*server){setB, fail, func(s *server) { fix(s); onlyB(s) }}, []want{{nodes: []registry.Node{nb}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startServer(t, a)
			w, clk := start(t, s, false)
			if got, err := next(t, w); err != nil || !slices.EqualFunc(got, []registry.Node{na}, sameNode) {
				t.Fatalf("first Next = %v, %v; want %v", got, err, []registry.Node{na})
			}
			for _, step := range tt.steps {
				step(s)
				tick(t, clk) // the consumer is busy: nothing takes the news
			}
			for i, want := range tt.want {
				got, err := next(t, w)
				var le *LookupError
				switch {
				case want.fail && (got != nil || !errors.As(err, &le)):
					t.Fatalf("Next #%d = %v, %v; want nil, *LookupError", i+1, got, err)
				case !want.fail && (err != nil || !slices.EqualFunc(got, want.nodes, sameNode)):
					t.Fatalf("Next #%d = %v, %v; want %v", i+1, got, err, want.nodes)
				}
			}
			noNews(t, w, "after the news")
		})
	}
}

func TestReportFailureResolvesEarlyAtMostOncePerMinInterval(t *testing.T) {
	const (
		a = "svc.test. 0 IN A 192.0.2.1"
		b = "svc.test. 0 IN A 192.0.2.2"
	)
	s := startServer(t, a)
	w, clk := start(t, s, false, WithInterval(30*time.Second), WithMinInterval(5*time.Second))
	t0 := clk.Now()
	resolutions := func() int { return s.count(mdns.TypeA) }
	if _, err := next(t, w); err != nil {
		t.Fatal(err)
	}
	clk.waitSleep(t, t0.Add(30*time.Second))

	// A burst of failures right after a resolution: one early resolution,
	// held back until the min interval has passed.
	s.set(a, b)
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() { w.ReportFailure("192.0.2.1:8080", errors.New("connection refused")) })
	}
	wg.Wait()
	clk.waitSleep(t, t0.Add(5*time.Second))
	if n := resolutions(); n != 1 {
		t.Fatalf("%d resolutions before the min interval passed; want 1", n)
	}
	clk.advance(5 * time.Second)
	clk.waitSleep(t, t0.Add(35*time.Second))
	want := []registry.Node{node("192.0.2.1:8080", 1), node("192.0.2.2:8080", 1)}
	if got, err := next(t, w); err != nil || !slices.EqualFunc(got, want, sameNode) {
		t.Fatalf("Next = %v, %v; want %v", got, err, want)
	}
	if n := resolutions(); n != 2 {
		t.Fatalf("%d resolutions after the burst; want 2", n)
	}

	// Long enough after the last resolution, a report resolves at once.
	clk.advance(10 * time.Second)
	w.ReportFailure("192.0.2.2:8080", errors.New("connection refused"))
	clk.waitSleep(t, t0.Add(45*time.Second))
	if n := resolutions(); n != 3 {
		t.Fatalf("%d resolutions after a late report; want 3", n)
	}

	w.Stop()
	w.ReportFailure("192.0.2.2:8080", errors.New("late")) // must not block after Stop
}

func TestStopEndsALookupInFlight(t *testing.T) {
	s := startServer(t, "svc.test. 0 IN A 192.0.2.1")
	s.setMute(true)
	r, err := Host(hostTarget, WithResolver(s.resolver()), WithTimeout(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	w, err := r.Watch(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := w.Next()
		errc <- err
	}()
	poll(t, func() bool { return s.count(mdns.TypeA) > 0 }, "the lookup to start")

	stopped := make(chan struct{})
	go func() {
		_ = w.Stop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(wait):
		t.Fatal("Stop blocked on a hung lookup")
	}
	if err := <-errc; !errors.Is(err, registry.ErrStopped) {
		t.Fatalf("blocked Next = %v; want ErrStopped", err)
	}
	if _, err := w.Next(); !errors.Is(err, registry.ErrStopped) {
		t.Fatalf("Next after Stop = %v; want ErrStopped", err)
	}
}

// TestWatchNilContext proves that Watch answers a nil ctx with
// registry.ErrNilContext instead of panicking.
func TestWatchNilContext(t *testing.T) {
	r, err := Host(hostTarget)
	if err != nil {
		t.Fatal(err)
	}
	var ctx context.Context
	w, err := r.Watch(ctx)
	if !errors.Is(err, registry.ErrNilContext) {
		if w != nil {
			w.Stop()
		}
		t.Fatalf("Watch(nil) = %v, %v; want registry.ErrNilContext", w, err)
	}
}

func TestConformance(t *testing.T) {
	t.Run("Host", func(t *testing.T) {
		registrytest.Run(t, func(t *testing.T) registrytest.Source {
			s := startServer(t)
			r, err := Host(hostTarget, WithResolver(s.resolver()))
			if err != nil {
				t.Fatal(err)
			}
			return registrytest.Source{
				Registry: fast(r),
				Set: func(_ context.Context, nodes []registry.Node) error {
					var records []string
					for _, n := range nodes {
						ap, err := netip.ParseAddrPort(n.Addr)
						if err != nil || ap.Port() != 8080 {
							return fmt.Errorf("A records cannot hold %q", n.Addr)
						}
						typ := "A"
						if ap.Addr().Is6() {
							typ = "AAAA"
						}
						records = append(records, fmt.Sprintf("svc.test. 0 IN %s %s", typ, ap.Addr()))
					}
					s.set(records...)
					return nil
				},
				Fail:     func(context.Context) error { s.down(); return nil },
				Restore:  func(context.Context) error { s.up(); return nil },
				NoWeight: true,
				NoMeta:   true,
				NoEmpty:  true, // no records is an outage, not an empty set
			}
		})
	})
	t.Run("SRV", func(t *testing.T) {
		registrytest.Run(t, func(t *testing.T) registrytest.Source {
			s := startServer(t)
			r, err := SRV(srvName, WithResolver(s.resolver()))
			if err != nil {
				t.Fatal(err)
			}
			return registrytest.Source{
				Registry: fast(r),
				Set: func(_ context.Context, nodes []registry.Node) error {
					records := []string{srvName + " 0 IN SRV 0 0 0 ."} // decidedly no nodes
					if len(nodes) > 0 {
						records = records[:0]
					}
					for _, n := range nodes {
						host, port, err := net.SplitHostPort(n.Addr)
						if err != nil {
							return err
						}
						records = append(records, fmt.Sprintf("%s 0 IN SRV 10 %d %s %s.", srvName, n.Weight, port, host))
					}
					s.set(records...)
					return nil
				},
				Fail:    func(context.Context) error { s.setRcode(mdns.RcodeServerFailure); return nil },
				Restore: func(context.Context) error { s.setRcode(mdns.RcodeSuccess); return nil },
				Addr:    func(i int) string { return fmt.Sprintf("node%d.svc.test:8080", i) },
				NoMeta:  true,
			}
		})
	})
}

// start watches a registry of s's records on a fake clock until the test
// ends. The SRV registry watches srvName, the Host one hostTarget.
func start(t *testing.T, s *server, srv bool, opts ...Option) (*watcher, *fakeClock) {
	t.Helper()
	clk := newFakeClock()
	opts = append([]Option{WithResolver(s.resolver()), withClock(clk)}, opts...)
	r, err := Host(hostTarget, opts...)
	if srv {
		r, err = SRV(srvName, opts...)
	}
	if err != nil {
		t.Fatal(err)
	}
	rw, err := r.Watch(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	w := rw.(*watcher)
	t.Cleanup(func() { _ = w.Stop() })
	return w, clk
}

// fast makes r poll in real time at a pace that suits the conformance
// suite, below the minimum that New enforces.
func fast(r *Registry) *Registry {
	r.cfg.interval, r.cfg.minInterval = 10*time.Millisecond, 10*time.Millisecond
	return r
}

// tick runs one scheduled resolution and waits for it to finish.
func tick(t *testing.T, clk *fakeClock) {
	t.Helper()
	clk.waitSleep(t, clk.Now().Add(defaultInterval))
	clk.advance(defaultInterval)
	clk.waitSleep(t, clk.Now().Add(defaultInterval))
}

// next calls Next, which should not block: news is expected.
func next(t *testing.T, w *watcher) ([]registry.Node, error) {
	t.Helper()
	type result struct {
		nodes []registry.Node
		err   error
	}
	c := make(chan result, 1)
	go func() {
		nodes, err := w.Next()
		c <- result{nodes, err}
	}()
	select {
	case r := <-c:
		return r.nodes, r.err
	case <-time.After(wait):
		_ = w.Stop() // lets the goroutine go
		t.Fatal("Next did not return")
		return nil, nil
	}
}

// noNews checks that Next has nothing to report; call it once the watcher
// sleeps, when nothing can change.
func noNews(t *testing.T, w *watcher, when string) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.hasSnap || w.failure != nil {
		t.Fatalf("%s: Next would report %v, %v; want no news", when, w.snap, w.failure)
	}
}

func node(addr string, weight int) registry.Node { return registry.Node{Addr: addr, Weight: weight} }
