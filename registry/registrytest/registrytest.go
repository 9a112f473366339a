package registrytest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lbrpc/lbrpc/registry"
)

const (
	// wait bounds every wait for news, generously, so slow CI is not flaky.
	wait = 10 * time.Second
	// quiet is how long the suite watches a failing or empty source for a
	// wrong report. It checks that something does not happen, so it cannot
	// end on an event.
	quiet = time.Second
)

// Source is a registry under test plus the controls the suite needs.
//
// The suite calls Set, Fail and Restore from the test goroutine only. It may
// end a subtest with the source still failing: the cleanup that newSource
// registers must cope.
type Source struct {
	// Registry is the registry under test. Required.
	Registry registry.Registry
	// Set makes the source hold exactly these nodes (empty means all
	// deregistered). Nodes may repeat an address: the source stores them as
	// it can, and its Watchers must report each address once. Required.
	Set func(ctx context.Context, nodes []registry.Node) error
	// Fail makes the source unreachable or failing (server down); Restore
	// undoes it. Optional (nil skips those checks).
	Fail    func(ctx context.Context) error
	Restore func(ctx context.Context) error

	// Addr gives the address of the suite's i-th node (i counts from 0 and
	// stays below 8), for sources that only store some kinds of address,
	// such as DNS SRV targets, which must be host names. Nil means
	// "192.0.2.<i+1>:8080": IPv4 hosts on one port, which DNS A records can
	// also store. The addresses are never dialled.
	Addr func(i int) string
	// NoWeight says the source cannot carry weights. The suite then gives
	// every node weight 1 and still expects 1 back, since registry.Node's
	// zero weight means "drain".
	NoWeight bool
	// NoMeta says the source cannot carry Meta; the suite then sets none and
	// ignores what the registry reports.
	NoMeta bool
	// NoEmpty says the source cannot tell holding no nodes from failing
	// (a DNS name without records looks like an outage), so its registry
	// reports an empty source as an error or not at all. The suite then
	// checks that it never reports an empty set with a nil error.
	NoEmpty bool
	// Fixed says the registry reports only the set the source held when
	// Watch was called, as registry.Static does. The suite then calls Set
	// only before Watch and skips the checks of changes.
	Fixed bool
}

// Run runs the conformance tests as subtests of t. newSource is called once
// per subtest and must give a fresh, independent source; it registers its
// own cleanup with t.Cleanup.
func Run(t *testing.T, newSource func(t *testing.T) Source) {
	t.Helper()
	tests := []struct {
		name string
		run  func(s *suite)
	}{
		{"FirstNext", testFirstNext},
		{"Changes", testChanges},
		{"Duplicates", testDuplicates},
		{"Empty", testEmpty},
		{"Fail", testFail},
		{"StopWhileFailing", testStopWhileFailing},
		{"Stop", testStop},
		{"CancelledContext", testCancelledContext},
		{"NilContext", testNilContext},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := newSource(t)
			if src.Registry == nil || src.Set == nil {
				t.Fatal("registrytest: Source needs Registry and Set")
			}
			tt.run(&suite{t: t, src: src})
		})
	}
}

func testFirstNext(s *suite) {
	want := []registry.Node{s.node(0, 1, "a"), s.node(1, 2, "b")}
	s.set(want...)
	s.watch().first(want...)
}

func testChanges(s *suite) {
	if s.src.Fixed {
		s.t.Skip("the source is Fixed")
	}
	a, b, c, d := s.node(0, 1, "a"), s.node(1, 1, "a"), s.node(2, 1, "a"), s.node(3, 1, "a")
	s.set(a)
	w := s.watch()
	w.first(a)
	steps := [][]registry.Node{
		{a, b},                 // a node joins
		{b},                    // a node leaves
		{b, c},                 // another joins
		{s.node(1, 3, "a"), c}, // a weight changes
		{s.node(1, 3, "b"), c}, // metadata changes
		{d},                    // everything is replaced at once
	}
	prev := []registry.Node{a}
	for _, step := range steps {
		if same(step, prev) {
			continue // the source does not carry what this step changes
		}
		s.set(step...)
		w.waitFor(step...)
		prev = step
	}
}

func testDuplicates(s *suite) {
	a, b, c := s.node(0, 1, "a"), s.node(1, 1, "a"), s.node(2, 1, "a")
	s.set(a, a, b, a)
	w := s.watch()
	w.first(a, b)
	if s.src.Fixed {
		return
	}
	s.set(c, a, c)
	w.waitFor(a, c)
}

func testEmpty(s *suite) {
	a, b := s.node(0, 1, "a"), s.node(1, 1, "a")
	s.set()
	w := s.watch()
	if s.src.NoEmpty {
		w.observe("holding no nodes")
	} else {
		w.first()
	}
	if s.src.Fixed {
		return
	}
	s.set(a)
	w.waitFor(a)
	s.set()
	if s.src.NoEmpty {
		w.observe("holding no nodes")
	} else {
		w.waitFor()
	}
	s.set(b)
	w.waitFor(b)
}

func testFail(s *suite) {
	s.needFail()
	a, b := s.node(0, 1, "a"), s.node(1, 1, "a")
	s.set(a, b)
	w := s.watch()
	w.first(a, b)
	s.control("Fail", s.src.Fail)
	errs := w.observe("failing")
	s.control("Restore", s.src.Restore)
	if errs > 0 {
		// The client heard of the failure, so it must hear that it is over.
		w.waitFor(a, b)
	}
	if s.src.Fixed {
		return
	}
	s.set(a)
	w.waitFor(a)
}

func testStopWhileFailing(s *suite) {
	s.needFail()
	a := s.node(0, 1, "a")
	s.set(a)
	w := s.watch()
	w.first(a)
	s.control("Fail", s.src.Fail)
	within(s.t, "Stop", func() { _ = w.w.Stop() })
	w.waitStopped()
}

func testStop(s *suite) {
	a := s.node(0, 1, "a")
	s.set(a)

	// Stop before the first Next.
	early, err := s.src.Registry.Watch(s.t.Context())
	if err != nil {
		s.t.Fatalf("Watch: %v", err)
	}
	within(s.t, "Stop", func() {
		if err := early.Stop(); err != nil {
			s.t.Errorf("Stop: %v", err)
		}
	})
	within(s.t, "Next after Stop", func() {
		if _, err := early.Next(); !errors.Is(err, registry.ErrStopped) {
			s.t.Errorf("Next after Stop: %v; want ErrStopped", err)
		}
	})

	// Stop while Next is blocked, then again.
	w := s.watch()
	w.first(a)
	within(s.t, "Stop", func() {
		if err := w.w.Stop(); err != nil {
			s.t.Errorf("Stop: %v", err)
		}
	})
	w.waitStopped()
	within(s.t, "second Stop", func() { _ = w.w.Stop() })
}

func testCancelledContext(s *suite) {
	a := s.node(0, 1, "a")
	s.set(a)
	ctx, cancel := context.WithCancel(s.t.Context())
	cancel()
	w, err := s.src.Registry.Watch(ctx)
	if err != nil {
		if w != nil {
			s.t.Errorf("Watch returned a Watcher with error %v; want nil", err)
			_ = w.Stop()
		}
		return
	}
	// ctx bounds only the setting up, so the Watcher must work.
	s.pump(w).first(a)
}

// A nil ctx is an error, registry.ErrNilContext, not a panic.
func testNilContext(s *suite) {
	s.set(s.node(0, 1, "a"))
	var ctx context.Context // nil, as a caller's mistake would pass it
	w, err := s.src.Registry.Watch(ctx)
	if !errors.Is(err, registry.ErrNilContext) {
		s.t.Errorf("Watch(nil) = %v; want registry.ErrNilContext", err)
	}
	if w != nil {
		s.t.Errorf("Watch(nil) returned a Watcher; want nil")
		_ = w.Stop()
	}
}

// suite is one subtest's view of its source.
type suite struct {
	t   *testing.T
	src Source
}

// node returns the suite's i-th node, carrying weight and a zone label only
// where the source can.
func (s *suite) node(i, weight int, zone string) registry.Node {
	n := registry.Node{Addr: fmt.Sprintf("192.0.2.%d:8080", i+1), Weight: 1}
	if s.src.Addr != nil {
		n.Addr = s.src.Addr(i)
	}
	if !s.src.NoWeight {
		n.Weight = weight
	}
	if !s.src.NoMeta {
		n.Meta = map[string]string{"zone": zone}
	}
	return n
}

func (s *suite) set(nodes ...registry.Node) {
	s.t.Helper()
	if err := s.src.Set(s.t.Context(), nodes); err != nil {
		s.t.Fatalf("Set(%s): %v", show(nodes), err)
	}
}

func (s *suite) needFail() {
	if s.src.Fail == nil || s.src.Restore == nil {
		s.t.Skip("the source has no Fail and Restore")
	}
}

func (s *suite) control(name string, f func(context.Context) error) {
	s.t.Helper()
	if err := f(s.t.Context()); err != nil {
		s.t.Fatalf("%s: %v", name, err)
	}
}

func (s *suite) watch() *watch {
	s.t.Helper()
	w, err := s.src.Registry.Watch(s.t.Context())
	if err != nil {
		s.t.Fatalf("Watch: %v", err)
	}
	return s.pump(w)
}

// pump calls Next in a goroutine of its own, because Next blocks, and hands
// each report to the test goroutine. The cleanup stops the Watcher and waits
// for the goroutine, so none outlives the test.
func (s *suite) pump(w registry.Watcher) *watch {
	p := &watch{t: s.t, w: w, out: make(chan report), quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			nodes, err := w.Next()
			select {
			case p.out <- report{nodes, err}:
			case <-p.quit:
				return
			}
			if errors.Is(err, registry.ErrStopped) {
				return
			}
		}
	}()
	s.t.Cleanup(func() {
		close(p.quit)
		_ = w.Stop()
		select {
		case <-p.done:
		case <-time.After(wait):
			s.t.Errorf("Next still blocked %v after Stop", wait)
		}
	})
	return p
}

type report struct {
	nodes []registry.Node
	err   error
}

func (r report) String() string {
	if r.err != nil {
		return fmt.Sprintf("%s, error %v", show(r.nodes), r.err)
	}
	return show(r.nodes)
}

// watch is a Watcher whose reports arrive on a channel.
type watch struct {
	t    *testing.T
	w    registry.Watcher
	out  chan report
	quit chan struct{}
	done chan struct{}
}

// check stops the test at a report that breaks the Watcher contract.
func (p *watch) check(r report) {
	p.t.Helper()
	switch {
	case errors.Is(r.err, registry.ErrStopped):
		p.t.Fatalf("Next: %v before Stop", r.err)
	case r.err != nil && r.nodes != nil:
		p.t.Fatalf("Next = %v; an error must come with a nil set", r)
	case r.err != nil:
		p.t.Logf("Next: %v (allowed between snapshots)", r.err)
	case hasDup(r.nodes):
		p.t.Fatalf("Next = %v; want each address once", r)
	}
}

// first checks the very first report: the set the source holds.
func (p *watch) first(want ...registry.Node) {
	p.t.Helper()
	select {
	case r := <-p.out:
		if r.err != nil || !same(r.nodes, want) {
			p.t.Fatalf("first Next = %v; want %s", r, show(want))
		}
		p.check(r)
	case <-time.After(wait):
		p.t.Fatalf("first Next did not return within %v; want %s", wait, show(want))
	}
}

// waitFor waits until Next reports want, skipping intermediate reports.
func (p *watch) waitFor(want ...registry.Node) {
	p.t.Helper()
	deadline := time.After(wait)
	last := "nothing"
	for {
		select {
		case r := <-p.out:
			p.check(r)
			if r.err == nil && same(r.nodes, want) {
				return
			}
			last = r.String()
		case <-deadline:
			p.t.Fatalf("Next did not report %s within %v; last report: %s", show(want), wait, last)
		}
	}
}

// observe watches reports for the quiet period while the source is in a
// state that must never be reported as an empty set with a nil error. It
// returns how many errors Next reported.
func (p *watch) observe(state string) (errs int) {
	p.t.Helper()
	deadline := time.After(quiet)
	for {
		select {
		case r := <-p.out:
			p.check(r)
			if r.err != nil {
				errs++
			} else if len(r.nodes) == 0 {
				p.t.Errorf("Next reported an empty set with a nil error while the source was %s; want an error or no report", state)
			}
		case <-deadline:
			return errs
		}
	}
}

// waitStopped waits, after Stop, for the blocked Next to return ErrStopped,
// and then checks that a later Next does too.
func (p *watch) waitStopped() {
	p.t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case r := <-p.out:
			if errors.Is(r.err, registry.ErrStopped) {
				if r.nodes != nil {
					p.t.Errorf("Next = %v after Stop; want a nil set", r)
				}
				<-p.done
				within(p.t, "Next after Stop", func() {
					if _, err := p.w.Next(); !errors.Is(err, registry.ErrStopped) {
						p.t.Errorf("Next after Stop: %v; want ErrStopped", err)
					}
				})
				return
			}
			// A report from before Stop may still be on its way.
		case <-deadline:
			p.t.Fatalf("Next did not return ErrStopped within %v of Stop", wait)
		}
	}
}

// within runs f and fails the test if it has not returned in time, so that a
// registry that blocks fails the suite instead of hanging it.
func within(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(wait):
		t.Fatalf("%s still blocked after %v", what, wait)
	}
}

// same reports whether got is want as a set. Meta is compared only where
// want has some, so that registries which cannot carry it still pass.
func same(got, want []registry.Node) bool {
	if len(got) != len(want) {
		return false
	}
	got, want = sorted(got), sorted(want)
	for i, w := range want {
		g := got[i]
		if g.Addr != w.Addr || g.Weight != w.Weight {
			return false
		}
		if len(w.Meta) > 0 && !maps.Equal(g.Meta, w.Meta) {
			return false
		}
	}
	return true
}

func sorted(nodes []registry.Node) []registry.Node {
	return slices.SortedFunc(slices.Values(nodes), func(a, b registry.Node) int {
		return cmp.Compare(a.Addr, b.Addr)
	})
}

func hasDup(nodes []registry.Node) bool {
	seen := make(map[string]bool, len(nodes))
	for _, n := range nodes {
		if seen[n.Addr] {
			return true
		}
		seen[n.Addr] = true
	}
	return false
}

func show(nodes []registry.Node) string {
	if nodes == nil {
		return "nil"
	}
	parts := make([]string, 0, len(nodes))
	for _, n := range sorted(nodes) {
		s := fmt.Sprintf("%s w%d", n.Addr, n.Weight)
		if len(n.Meta) > 0 {
			s += fmt.Sprint(" ", n.Meta)
		}
		parts = append(parts, s)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}
