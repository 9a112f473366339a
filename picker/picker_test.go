package picker_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/lbrpc/lbrpc/picker"
	"github.com/lbrpc/lbrpc/registry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// addr is the address of test node i.
func addr(i int) string { return fmt.Sprintf("127.0.0.1:%d", 10000+i) }

// nodes returns n test nodes of weight 1.
func nodes(n int) []registry.Node {
	ns := make([]registry.Node, n)
	for i := range ns {
		ns[i] = registry.Node{Addr: addr(i), Weight: 1}
	}
	return ns
}

// pick returns the node p picks for a first attempt, and ends the attempt
// at once with success.
func pick(t *testing.T, p picker.Picker) registry.Node {
	t.Helper()
	return pickCtx(t, p, context.Background())
}

// hold picks n first attempts and returns them, their Dones not called.
func hold(t *testing.T, p picker.Picker, n int) []picker.Result {
	t.Helper()
	out := make([]picker.Result, 0, n)
	for range n {
		res, err := p.Pick(context.Background(), picker.Info{})
		if err != nil {
			t.Fatalf("Pick: %v", err)
		}
		out = append(out, res)
	}
	return out
}

func pickCtx(t *testing.T, p picker.Picker, ctx context.Context, tried ...string) registry.Node {
	t.Helper()
	res, err := p.Pick(ctx, picker.Info{ServiceMethod: "HelloService.Say", Tried: tried})
	if err != nil {
		t.Fatalf("Pick: %v", err)
	}
	if res.Done != nil {
		res.Done(picker.DoneInfo{Latency: time.Millisecond})
	}
	return res.Node
}

// builtins are the pickers of the package, as users build them.
var builtins = []struct {
	name string
	new  func() picker.Picker
}{
	{"RoundRobin", picker.RoundRobin},
	{"Random", picker.Random},
	{"LeastLoaded", func() picker.Picker { return picker.LeastLoaded() }},
	{"LeastRequest", picker.LeastRequest},
	{"WeightedRoundRobin", picker.WeightedRoundRobin},
	{"ConsistentHash", func() picker.Picker { return picker.ConsistentHash() }},
	{"PickFirst", picker.PickFirst},
}

// seeded returns the built-in pickers with seeded randomness, so that the
// tests that use them pick the same nodes on every run. Each serves one
// goroutine.
func seeded(seed uint64) []struct {
	name string
	new  func() picker.Picker
} {
	out := slices.Clone(builtins)
	for i := range out {
		mk := out[i].new
		out[i].new = func() picker.Picker { return picker.Virtualize(mk(), nil, seed) }
	}
	return out
}

// keyed is a context with a ConsistentHash key; the other pickers ignore it.
var keyed = picker.WithKey(context.Background(), "user-42")

func TestEmpty(t *testing.T) {
	for _, bp := range builtins {
		t.Run(bp.name, func(t *testing.T) {
			p := bp.new()
			for _, when := range []string{"before Update", "after Update(nil)"} {
				if when != "before Update" {
					p.Update(nodes(3))
					p.Update(nil)
				}
				for _, ctx := range []context.Context{context.Background(), keyed} {
					_, err := p.Pick(ctx, picker.Info{ServiceMethod: "HelloService.Say", Tried: []string{addr(0)}})
					if !errors.Is(err, picker.ErrNoNodes) {
						t.Fatalf("%s: Pick error = %v, want ErrNoNodes", when, err)
					}
				}
			}
		})
	}
}

// A nil context is a call without a key, not a panic, for every picker.
func TestNilContext(t *testing.T) {
	for _, bp := range builtins {
		p := bp.new()
		p.Update(nodes(3))
		//lint:ignore SA1012 a nil context is what is tested
		res, err := p.Pick(nil, picker.Info{}) //nolint:staticcheck
		if err != nil {
			t.Fatalf("%s: Pick(nil, …): %v", bp.name, err)
		}
		res.Finish(picker.DoneInfo{})
	}
	//lint:ignore SA1012 a nil context is what is tested
	if k, ok := picker.KeyFrom(nil); ok || k != "" { //nolint:staticcheck
		t.Fatalf("KeyFrom(nil) = %q, %v; want no key", k, ok)
	}
}

func TestTried(t *testing.T) {
	tests := []struct {
		name  string
		n     int
		tried []string
		want  []string // the nodes a pick may return
	}{
		{"one node, tried", 1, []string{addr(0)}, []string{addr(0)}},
		{"two of three tried", 3, []string{addr(0), addr(1)}, []string{addr(2)}},
		{"two of three tried, in other order", 3, []string{addr(2), addr(0)}, []string{addr(1)}},
		{"all tried", 3, []string{addr(0), addr(1), addr(2)}, []string{addr(0), addr(1), addr(2)}},
		{"tried but gone", 3, []string{addr(7)}, []string{addr(0), addr(1), addr(2)}},
		{"99 of 100 tried", 100, addrs(0, 99), []string{addr(99)}},
		{"97 of 100 tried", 100, append(addrs(0, 50), addrs(53, 100)...), addrs(50, 53)},
	}
	for _, bp := range seeded(1) {
		for _, tc := range tests {
			t.Run(bp.name+"/"+tc.name, func(t *testing.T) {
				p := bp.new()
				p.Update(nodes(tc.n))
				for _, ctx := range []context.Context{context.Background(), keyed} {
					for range 50 {
						if got := pickCtx(t, p, ctx, tc.tried...).Addr; !slices.Contains(tc.want, got) {
							t.Fatalf("picked %s with %d tried, want one of %v", got, len(tc.tried), tc.want)
						}
					}
				}
			})
		}
	}
}

// addrs returns the addresses of nodes from to below to.
func addrs(from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, addr(i))
	}
	return out
}

func TestDrain(t *testing.T) {
	weighted := func(ws ...int) []registry.Node {
		ns := nodes(len(ws))
		for i, w := range ws {
			ns[i].Weight = w
		}
		return ns
	}
	tests := []struct {
		name  string
		nodes []registry.Node
		want  []string // the nodes picks may go to; all of them must be picked but for PickFirst
	}{
		{"one drained", weighted(1, 0, 1), []string{addr(0), addr(2)}},
		{"first drained", weighted(0, 1, 1), []string{addr(1), addr(2)}},
		{"negative is drained", weighted(-1, 1, 1), []string{addr(1), addr(2)}},
		{"all but one drained", weighted(0, 0, 5), []string{addr(2)}},
		{"all drained: all serve", weighted(0, 0, 0), []string{addr(0), addr(1), addr(2)}},
	}
	for _, bp := range seeded(2) {
		for _, tc := range tests {
			t.Run(bp.name+"/"+tc.name, func(t *testing.T) {
				p := bp.new()
				p.Update(tc.nodes)
				seen := map[string]bool{}
				for i := range 300 {
					ctx := context.Background()
					if bp.name == "ConsistentHash" && i%2 == 0 {
						ctx = picker.WithKey(ctx, fmt.Sprint("key-", i))
					}
					got := pickCtx(t, p, ctx).Addr
					if !slices.Contains(tc.want, got) {
						t.Fatalf("picked %s, want one of %v", got, tc.want)
					}
					seen[got] = true
				}
				if bp.name == "PickFirst" {
					if !seen[tc.want[0]] || len(seen) != 1 {
						t.Fatalf("PickFirst picked %v, want only %s", seen, tc.want[0])
					}
				} else if len(seen) != len(tc.want) {
					t.Fatalf("picked %v in 300 picks, want each of %v", seen, tc.want)
				}
			})
		}
	}
}

func TestNewNodesGetCalls(t *testing.T) {
	// A node added by Update is picked within a few rounds, also by the
	// pickers that have learned about the others. PickFirst is left out:
	// a node added last is a standby.
	for _, bp := range seeded(3) {
		if bp.name == "PickFirst" {
			continue
		}
		t.Run(bp.name, func(t *testing.T) {
			p := bp.new()
			p.Update(nodes(4))
			for range 1000 {
				pick(t, p)
			}
			p.Update(nodes(5))
			for i := range 5 * 10 {
				if pick(t, p).Addr == addr(4) {
					t.Logf("new node picked after %d picks", i+1)
					return
				}
			}
			t.Fatalf("new node %s not picked in 50 picks", addr(4))
		})
	}
}

func TestUpdateCopiesNodes(t *testing.T) {
	// The slice given to Update stays the caller's.
	for _, bp := range seeded(4) {
		t.Run(bp.name, func(t *testing.T) {
			p := bp.new()
			ns := nodes(3)
			p.Update(ns)
			for i := range ns {
				ns[i] = registry.Node{Addr: "changed:1", Weight: 1}
			}
			for range 30 {
				if got := pickCtx(t, p, keyed).Addr; got == "changed:1" {
					t.Fatal("picker uses the caller's slice after Update")
				}
			}
		})
	}
}

func TestPickDoneDoesNotAllocate(t *testing.T) {
	for _, bp := range builtins {
		for _, n := range []int{3, 1000} {
			t.Run(fmt.Sprint(bp.name, "/", n), func(t *testing.T) {
				p := bp.new()
				p.Update(nodes(n))
				info := picker.Info{ServiceMethod: "HelloService.Say"}
				retry := picker.Info{ServiceMethod: "HelloService.Say", Tried: []string{addr(0), addr(1)}}
				fail := errors.New("connection refused")
				allocs := testing.AllocsPerRun(1000, func() {
					for _, in := range []picker.Info{info, retry} {
						for _, ctx := range []context.Context{context.Background(), keyed} {
							res, err := p.Pick(ctx, in)
							if err != nil {
								t.Fatal(err)
							}
							if res.Done != nil {
								res.Done(picker.DoneInfo{Latency: time.Millisecond})
							}
							res, _ = p.Pick(ctx, in)
							res.Finish(picker.DoneInfo{Err: fail, Latency: time.Millisecond})
						}
					}
				})
				if allocs != 0 {
					t.Fatalf("Pick, Done and Finish: %v allocations, want 0", allocs)
				}
			})
		}
	}
}

func TestConcurrentPickUpdate(t *testing.T) {
	// Picks and Done race Update (run with -race). Every pick is of a node
	// of some set given to Update, and once every Done has run a load
	// reporter counts no call in flight.
	sets := [][]registry.Node{nodes(3), nodes(10)[5:], nodes(1), nodes(8)}
	valid := map[string]bool{}
	for _, s := range sets {
		for _, n := range s {
			valid[n.Addr] = true
		}
	}
	for _, bp := range builtins {
		t.Run(bp.name, func(t *testing.T) {
			p := bp.new()
			p.Update(sets[0])
			var wg sync.WaitGroup
			stop := make(chan struct{})
			errs := make(chan error, 4)
			for g := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ctx := context.Background()
					if g%2 == 1 {
						ctx = picker.WithKey(ctx, fmt.Sprint("key-", g))
					}
					var tried []string
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						res, err := p.Pick(ctx, picker.Info{ServiceMethod: "HelloService.Say", Tried: tried})
						if err != nil {
							errs <- err
							return
						}
						if !valid[res.Node.Addr] {
							errs <- fmt.Errorf("picked %q, in no set", res.Node.Addr)
							return
						}
						if res.Done != nil {
							var err error
							if i%5 == 0 {
								err = errors.New("broken pipe")
							}
							res.Done(picker.DoneInfo{Err: err, Latency: time.Duration(i%7) * time.Millisecond})
						}
						tried = append(tried[:0], res.Node.Addr)[:i%2]
					}
				}()
			}
			for i := range 300 {
				p.Update(sets[i%len(sets)])
			}
			close(stop)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			if lr, ok := p.(picker.LoadReporter); ok {
				p.Update(sets[3])
				for _, l := range lr.Loads() {
					if l.InFlight != 0 {
						t.Fatalf("after every Done: %+v, want no call in flight", l)
					}
				}
			}
		})
	}
}

// loadPickers make the pickers that count calls in flight (LoadReporters).
var loadPickers = []func() picker.Picker{
	func() picker.Picker { return picker.LeastLoaded() },
	picker.LeastRequest,
	func() picker.Picker { return picker.ConsistentHash() },
}

func TestLoadReporters(t *testing.T) {
	for _, bp := range builtins {
		_, ok := bp.new().(picker.LoadReporter)
		want := bp.name == "LeastLoaded" || bp.name == "LeastRequest" || bp.name == "ConsistentHash"
		if ok != want {
			t.Errorf("%s implements LoadReporter: %v, want %v", bp.name, ok, want)
		}
	}
}

func TestLoads(t *testing.T) {
	// Loads lists every node of the set, drained ones too, in set order,
	// and its counts survive an Update for the nodes that stay.
	for _, mk := range loadPickers {
		p := mk()
		lr := p.(picker.LoadReporter)
		t.Run(fmt.Sprintf("%T", p), func(t *testing.T) {
			ns := nodes(3)
			ns[1].Weight = 0
			p.Update(ns)
			var pending []func(picker.DoneInfo)
			for range 4 {
				res, err := p.Pick(context.Background(), picker.Info{})
				if err != nil {
					t.Fatal(err)
				}
				pending = append(pending, res.Done)
			}
			pending[0](picker.DoneInfo{Err: errors.New("reset"), Latency: time.Millisecond})
			pending[1](picker.DoneInfo{Err: context.Canceled})
			pending = pending[2:]

			p.Update(append(nodes(4)[2:], ns[1], ns[0])) // reordered, 3 added
			got := lr.Loads()
			if want := []string{addr(2), addr(3), addr(1), addr(0)}; !slices.Equal(addrsOf(got), want) {
				t.Fatalf("Loads addresses = %v, want %v", addrsOf(got), want)
			}
			var inFlight, failures int64
			for _, l := range got {
				inFlight += l.InFlight
				failures += l.Failures
				if l.Addr == addr(1) && (l.InFlight != 0 || l.Failures != 0) {
					t.Fatalf("drained node: %+v, want no calls", l)
				}
			}
			if inFlight != 2 || failures != 1 {
				t.Fatalf("Loads = %+v: %d in flight and %d failures, want 2 and 1", got, inFlight, failures)
			}
			for _, done := range pending {
				done(picker.DoneInfo{Latency: time.Millisecond})
			}
			for _, l := range lr.Loads() {
				if l.InFlight != 0 {
					t.Fatalf("after every Done: %+v", l)
				}
			}
		})
	}
}

// A node that leaves the set with calls in flight and comes back (the
// client takes a node out when a health check fails, an ejection or an open
// breaker, and puts it back when it recovers) finds its calls in flight
// counted, and their Dones land on it; its latency and failures start
// afresh, as a new node's.
func TestRejoinKeepsCallsInFlight(t *testing.T) {
	for _, mk := range loadPickers {
		p := mk()
		lr := p.(picker.LoadReporter)
		t.Run(fmt.Sprintf("%T", p), func(t *testing.T) {
			ns := nodes(2)
			p.Update(ns[:1])
			first, _ := p.Pick(context.Background(), picker.Info{})
			first.Finish(picker.DoneInfo{Err: errors.New("reset"), Latency: time.Millisecond})
			held := hold(t, p, 10)
			p.Update(ns[1:]) // node 0 out, its 10 calls in flight
			p.Update(ns[1:]) // a second update while it is out keeps it
			p.Update(ns)     // and back
			got := lr.Loads()
			if got[0].Addr != addr(0) || got[0].InFlight != 10 || got[0].Failures != 0 || got[0].Latency != 0 {
				t.Fatalf("node 0 back in the set: %+v, want 10 in flight, no failures, no latency yet", got[0])
			}
			// With 10 calls in flight it is the busier node: calls go to
			// node 1 until they end.
			for range 20 {
				if n := pick(t, p); n.Addr != addr(1) {
					t.Fatalf("a pick went to node 0, with 10 calls in flight against none")
				}
			}
			for _, res := range held {
				res.Finish(picker.DoneInfo{Latency: time.Millisecond})
			}
			if n := inFlight(lr); n != 0 {
				t.Fatalf("after every Done, %d calls in flight", n)
			}
		})
	}
}

// A node that left with no call in flight comes back as a new node.
func TestRejoinIdleIsNew(t *testing.T) {
	p := picker.LeastRequest()
	ns := nodes(2)
	p.Update(ns)
	for range 4 {
		res, _ := p.Pick(context.Background(), picker.Info{})
		res.Finish(picker.DoneInfo{Err: errors.New("reset")})
	}
	p.Update(ns[1:])
	p.Update(ns)
	for _, l := range p.(picker.LoadReporter).Loads() {
		if l.Addr == addr(0) && l.Failures != 0 {
			t.Fatalf("node 0 back after leaving idle: %+v, want no failures", l)
		}
	}
}

func addrsOf(ls []picker.Load) []string {
	out := make([]string, len(ls))
	for i, l := range ls {
		out[i] = l.Addr
	}
	return out
}

// share returns the fraction of picks each node gets over n picks.
func share(t *testing.T, p picker.Picker, ctx func(i int) context.Context, n int) map[string]float64 {
	t.Helper()
	counts := map[string]float64{}
	for i := range n {
		counts[pickCtx(t, p, ctx(i)).Addr]++
	}
	for k, v := range counts {
		counts[k] = v / float64(n)
	}
	return counts
}

func near(got, want, tol float64) bool { return math.Abs(got-want) <= tol }

// TestNodeStateFitsACacheLine guards the layout the load-aware pickers'
// costs rest on: a node's hot state in one 64-byte object, so one cache line
// per candidate and no line shared by two nodes.
func TestNodeStateFitsACacheLine(t *testing.T) {
	if picker.NodeStateSize != 64 {
		t.Fatalf("node state is %d bytes, want 64: move what picks do not read to the cold part", picker.NodeStateSize)
	}
}

// Finish reports an attempt like Done: for every built-in picker, an attempt
// ended by either leaves nothing in flight, and a load reporter counts the
// failure it reported.
func TestFinish(t *testing.T) {
	fail := errors.New("connection refused")
	for _, bp := range builtins {
		for _, viaDone := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/done=%t", bp.name, viaDone), func(t *testing.T) {
				p := bp.new()
				p.Update(nodes(3))
				results := hold(t, p, 6)
				lr, counts := p.(picker.LoadReporter)
				if counts {
					if got := inFlight(lr); got != 6 {
						t.Fatalf("%d calls in flight after 6 picks, want 6", got)
					}
				}
				for _, res := range results {
					d := picker.DoneInfo{Err: fail, Latency: time.Millisecond}
					if viaDone {
						if res.Done != nil {
							res.Done(d)
						}
					} else {
						res.Finish(d)
					}
				}
				if !counts {
					return
				}
				if got := inFlight(lr); got != 0 {
					t.Fatalf("%d calls in flight after every attempt ended, want 0", got)
				}
				var failures int64
				for _, l := range lr.Loads() {
					failures += l.Failures
				}
				if failures != 6 {
					t.Fatalf("%d failures counted, want 6", failures)
				}
			})
		}
	}
}

func inFlight(lr picker.LoadReporter) (n int64) {
	for _, l := range lr.Loads() {
		n += l.InFlight
	}
	return n
}

// Finish calls a custom picker's Done, once, and does nothing without one.
func TestFinishCustom(t *testing.T) {
	var got []picker.DoneInfo
	res := picker.Result{Node: registry.Node{Addr: addr(0)}, Done: func(d picker.DoneInfo) { got = append(got, d) }}
	d := picker.DoneInfo{Latency: time.Millisecond}
	res.Finish(d)
	if len(got) != 1 || got[0] != d {
		t.Fatalf("Done got %v, want [%v]", got, d)
	}
	picker.Result{Node: registry.Node{Addr: addr(0)}}.Finish(d) // no Done: nothing to call, no panic
}

// decorating wraps a picker and replaces the Done of each result, as a
// picker that adds metrics would.
type decorating struct {
	picker.Picker
	dones int
}

func (p *decorating) Pick(ctx context.Context, info picker.Info) (picker.Result, error) {
	res, err := p.Picker.Pick(ctx, info)
	if err != nil || res.Done == nil {
		return res, err
	}
	inner := res.Done
	res.Done = func(d picker.DoneInfo) { p.dones++; inner(d) }
	return res, nil
}

// Finish calls a Done that a wrapping picker replaced, rather than going
// around it to the built-in picker's state.
func TestFinishCallsReplacedDone(t *testing.T) {
	for _, bp := range builtins {
		t.Run(bp.name, func(t *testing.T) {
			inner := bp.new()
			p := &decorating{Picker: inner}
			p.Update(nodes(3))
			res, err := p.Pick(context.Background(), picker.Info{})
			if err != nil {
				t.Fatal(err)
			}
			if res.Done == nil {
				return // a picker that tracks nothing: nothing to decorate
			}
			res.Finish(picker.DoneInfo{Latency: time.Millisecond})
			if p.dones != 1 {
				t.Fatalf("the wrapper's Done ran %d times, want 1", p.dones)
			}
			if lr, ok := inner.(picker.LoadReporter); ok {
				if got := inFlight(lr); got != 0 {
					t.Fatalf("%d calls in flight after Finish, want 0", got)
				}
			}
		})
	}
}

// A Done called twice (a caller's bug) does not leave the node's count one
// low for good: the next call in flight is counted.
func TestDoubleDoneDoesNotDrift(t *testing.T) {
	for _, mk := range loadPickers {
		p := mk()
		lr := p.(picker.LoadReporter)
		p.Update(nodes(1))
		res, _ := p.Pick(context.Background(), picker.Info{})
		res.Done(picker.DoneInfo{})
		res.Done(picker.DoneInfo{}) // caller bug
		held, _ := p.Pick(context.Background(), picker.Info{})
		if got := inFlight(lr); got != 1 {
			t.Errorf("%T: one call in flight after a double Done, Loads says %d", p, got)
		}
		held.Finish(picker.DoneInfo{})
	}
}
