package picker_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"net/rpc"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/lbrpc/lbrpc/internal/sim"
	"github.com/lbrpc/lbrpc/picker"
	"github.com/lbrpc/lbrpc/registry"
)

// clock is virtual time for the pickers that read it.
type clock struct{ t time.Duration }

func (c *clock) now() time.Duration { return c.t }

// virtualLeastLoaded returns a LeastLoaded on c's time with seeded picks.
func virtualLeastLoaded(c *clock, opts ...picker.LeastLoadedOption) picker.Picker {
	return picker.Virtualize(picker.LeastLoaded(opts...), c.now, 1)
}

// serveAll runs n calls one after the other, each on the node p picks,
// ending as outcome says and advancing c by the call's latency. It returns
// the calls per node.
func serveAll(t *testing.T, p picker.Picker, c *clock, n int, outcome func(addr string, i int) picker.DoneInfo) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for i := range n {
		res, err := p.Pick(context.Background(), picker.Info{ServiceMethod: "HelloService.Say"})
		if err != nil {
			t.Fatal(err)
		}
		d := outcome(res.Node.Addr, i)
		c.t += d.Latency
		res.Done(d)
		counts[res.Node.Addr]++
	}
	return counts
}

func TestLeastLoadedOutcomes(t *testing.T) {
	// Two nodes; node 0 behaves as the case says, node 1 answers in 10 ms.
	// After 200 calls to learn, the next 1000 go mostly to the preferred
	// node. With two nodes the power of two choices always compares both.
	refused := errors.New("connection refused")
	tests := []struct {
		name  string
		node0 func(i int) picker.DoneInfo
		want  string // the node that should get at least 90% of the calls
	}{
		{"faster node", func(int) picker.DoneInfo { return picker.DoneInfo{Latency: time.Millisecond} }, addr(0)},
		{"slower node", func(int) picker.DoneInfo { return picker.DoneInfo{Latency: 50 * time.Millisecond} }, addr(1)},
		{"node failing fast", func(int) picker.DoneInfo {
			return picker.DoneInfo{Err: refused, Latency: 100 * time.Microsecond}
		}, addr(1)},
		{"node failing fast half the time", func(i int) picker.DoneInfo {
			if i%2 == 0 {
				return picker.DoneInfo{Err: refused, Latency: 100 * time.Microsecond}
			}
			return picker.DoneInfo{Latency: time.Millisecond}
		}, addr(1)},
		{"rpc.ServerError is a fast answer", func(int) picker.DoneInfo {
			return picker.DoneInfo{Err: rpc.ServerError("not found"), Latency: time.Millisecond}
		}, addr(0)},
		{"wrapped rpc.ServerError too", func(int) picker.DoneInfo {
			return picker.DoneInfo{Err: fmt.Errorf("call: %w", rpc.ServerError("not found")), Latency: time.Millisecond}
		}, addr(0)},
		{"timeouts count their latency", func(int) picker.DoneInfo {
			return picker.DoneInfo{Err: context.DeadlineExceeded, Latency: 100 * time.Millisecond}
		}, addr(1)},
		{"cancelled calls say nothing", func(i int) picker.DoneInfo {
			if i < 3 {
				return picker.DoneInfo{Latency: time.Millisecond}
			}
			return picker.DoneInfo{Err: fmt.Errorf("declined: %w", context.Canceled), Latency: time.Second}
		}, addr(0)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &clock{}
			p := virtualLeastLoaded(c)
			p.Update(nodes(2))
			calls := 0
			outcome := func(a string, _ int) picker.DoneInfo {
				if a == addr(0) {
					calls++
					return tc.node0(calls - 1)
				}
				return picker.DoneInfo{Latency: 10 * time.Millisecond}
			}
			serveAll(t, p, c, 200, outcome)
			counts := serveAll(t, p, c, 1000, outcome)
			if counts[tc.want] < 900 {
				t.Fatalf("calls per node = %v, want at least 900 of 1000 on %s", counts, tc.want)
			}
		})
	}
}

func TestLeastLoadedInFlight(t *testing.T) {
	// Equal latency: the node with calls in flight costs more.
	c := &clock{}
	p := virtualLeastLoaded(c)
	p.Update(nodes(2))
	serveAll(t, p, c, 50, func(string, int) picker.DoneInfo { return picker.DoneInfo{Latency: time.Millisecond} })
	var held []func(picker.DoneInfo)
	for range 10 {
		res, _ := p.Pick(context.Background(), picker.Info{})
		held = append(held, res.Done)
	}
	// Ten calls held: the picker spread them, five and five.
	loads := p.(picker.LoadReporter).Loads()
	if loads[0].InFlight != 5 || loads[1].InFlight != 5 {
		t.Fatalf("loads = %+v, want 5 calls in flight on each node", loads)
	}
	for _, done := range held {
		done(picker.DoneInfo{Latency: time.Millisecond})
	}
}

func TestLeastLoadedPeakAndDecay(t *testing.T) {
	c := &clock{}
	p := virtualLeastLoaded(c)
	lr := p.(picker.LoadReporter)
	p.Update(nodes(1))
	latency := func() time.Duration { return lr.Loads()[0].Latency }
	lat := 10 * time.Millisecond
	serve := func(n int) {
		serveAll(t, p, c, n, func(string, int) picker.DoneInfo { return picker.DoneInfo{Latency: lat} })
	}

	serve(1)
	if got := latency(); got != 10*time.Millisecond {
		t.Fatalf("after the first answer, in 10ms: latency %v, want 10ms", got)
	}
	lat = 200 * time.Millisecond
	serve(1)
	if got := latency(); got != 200*time.Millisecond {
		t.Fatalf("after a slower answer: latency %v, want the peak at once, 200ms", got)
	}
	// Faster answers bring it down over the decay window (10 s), not at
	// once: 1 s of 10 ms answers leaves it near 200ms × e^-0.1 + 10ms.
	lat = 10 * time.Millisecond
	serve(100)
	if got := latency(); got < 150*time.Millisecond || got > 190*time.Millisecond {
		t.Fatalf("after 1 s of 10ms answers: latency %v, want about 180ms", got)
	}
	serve(2000) // 20 s more
	if got := latency(); got > 40*time.Millisecond {
		t.Fatalf("after 21 s of 10ms answers: latency %v, want near 10ms", got)
	}
}

func TestLeastLoadedSlowNodeRetried(t *testing.T) {
	// A node that was slow is shunned, and tried again once its estimate
	// has decayed while the other node kept answering: sooner with a
	// shorter decay window.
	for _, tc := range []struct {
		decay   time.Duration
		retried bool // within 20 s
	}{
		{0, false}, // the default, 10 s: 250ms × e^-2 is still above 1ms
		{time.Second, true},
	} {
		t.Run(fmt.Sprint("decay ", tc.decay), func(t *testing.T) {
			c := &clock{}
			p := virtualLeastLoaded(c, picker.WithDecay(tc.decay))
			p.Update(nodes(2))
			outcome := func(a string, _ int) picker.DoneInfo {
				if a == addr(1) {
					return picker.DoneInfo{Latency: 250 * time.Millisecond}
				}
				return picker.DoneInfo{Latency: time.Millisecond}
			}
			serveAll(t, p, c, 10, outcome)
			counts := serveAll(t, p, c, 20000, outcome) // 20 s of 1ms calls
			if got := counts[addr(1)] > 0; got != tc.retried {
				t.Fatalf("slow node retried in 20 s: %v (calls %v), want %v", got, counts, tc.retried)
			}
		})
	}
}

func TestLeastLoadedNewNode(t *testing.T) {
	// A node without an answer yet is tried at once, but gets no second
	// call before its first answer, unless the penalty is made small.
	for _, tc := range []struct {
		name    string
		opts    []picker.LeastLoadedOption
		maxHeld int // most calls the new node gets before it answers
	}{
		{"default penalty", nil, 1},
		{"penalty 0 keeps the default", []picker.LeastLoadedOption{picker.WithNewNodePenalty(0)}, 1},
		{"small penalty", []picker.LeastLoadedOption{picker.WithNewNodePenalty(time.Microsecond)}, 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &clock{}
			p := virtualLeastLoaded(c, tc.opts...)
			p.Update(nodes(3))
			fast := func(string, int) picker.DoneInfo { return picker.DoneInfo{Latency: time.Millisecond} }
			serveAll(t, p, c, 100, fast)
			p.Update(nodes(4))
			// The new node's calls are held; the others answer in 1ms.
			held := 0
			for range 1000 {
				res, _ := p.Pick(context.Background(), picker.Info{})
				if res.Node.Addr == addr(3) {
					held++
					continue
				}
				c.t += time.Millisecond
				res.Done(picker.DoneInfo{Latency: time.Millisecond})
			}
			if held == 0 || held > tc.maxHeld {
				t.Fatalf("new node got %d calls before answering, want 1 to %d", held, tc.maxHeld)
			}
		})
	}
}

func TestLeastLoadedErrorPenalty(t *testing.T) {
	// A failure counts as at least the penalty, averaged in: a small
	// penalty makes a node that fails fast look fast again.
	refused := errors.New("connection refused")
	for _, tc := range []struct {
		name    string
		opts    []picker.LeastLoadedOption
		avoided bool
	}{
		{"default", nil, true},
		{"zero keeps the default", []picker.LeastLoadedOption{picker.WithErrorPenalty(0), picker.WithDecay(-time.Second)}, true},
		{"tiny", []picker.LeastLoadedOption{picker.WithErrorPenalty(time.Microsecond)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &clock{}
			p := virtualLeastLoaded(c, tc.opts...)
			p.Update(nodes(2))
			outcome := func(a string, i int) picker.DoneInfo {
				if a == addr(0) && i%2 == 0 {
					return picker.DoneInfo{Err: refused, Latency: 100 * time.Microsecond}
				}
				return picker.DoneInfo{Latency: 5 * time.Millisecond}
			}
			serveAll(t, p, c, 200, outcome)
			counts := serveAll(t, p, c, 1000, outcome)
			if got := counts[addr(0)] < 100; got != tc.avoided {
				t.Fatalf("calls %v: failing node avoided = %v, want %v", counts, got, tc.avoided)
			}
			if f := p.(picker.LoadReporter).Loads()[0].Failures; f == 0 {
				t.Fatal("no failures counted")
			}
		})
	}
}

func TestLeastLoadedStateSurvivesUpdate(t *testing.T) {
	c := &clock{}
	p := virtualLeastLoaded(c)
	lr := p.(picker.LoadReporter)
	p.Update(nodes(3))
	serveAll(t, p, c, 300, func(a string, _ int) picker.DoneInfo {
		if a == addr(2) {
			return picker.DoneInfo{Latency: 80 * time.Millisecond}
		}
		return picker.DoneInfo{Latency: 2 * time.Millisecond}
	})
	res, _ := p.Pick(context.Background(), picker.Info{}) // one call left in flight
	before := map[string]picker.Load{}
	for _, l := range lr.Loads() {
		before[l.Addr] = l
	}
	// Node 0 leaves, node 3 joins, the order changes, node 2's weight too.
	ns := []registry.Node{{Addr: addr(3), Weight: 1}, {Addr: addr(2), Weight: 3}, {Addr: addr(1), Weight: 1}}
	p.Update(ns)
	for _, l := range lr.Loads() {
		want, ok := before[l.Addr]
		if !ok {
			want = picker.Load{Addr: l.Addr} // the new node
		}
		if l != want {
			t.Errorf("after Update: %+v, want %+v", l, want)
		}
	}
	res.Done(picker.DoneInfo{Latency: 2 * time.Millisecond})
	// The slow node stays shunned: nothing was forgotten.
	counts := serveAll(t, p, c, 100, func(a string, _ int) picker.DoneInfo { return picker.DoneInfo{Latency: 2 * time.Millisecond} })
	if counts[addr(2)] > 5 {
		t.Fatalf("calls after Update = %v: the slow node's latency was forgotten", counts)
	}
}

func TestLeastLoadedOptionsDefaults(t *testing.T) {
	// Non-positive values and nil options keep the defaults: the picks are
	// those of LeastLoaded().
	run := func(opts ...picker.LeastLoadedOption) []string {
		c := &clock{}
		p := virtualLeastLoaded(c, opts...)
		p.Update(nodes(5))
		var seq []string
		serveAll(t, p, c, 500, func(a string, i int) picker.DoneInfo {
			seq = append(seq, a)
			if i%7 == 0 {
				return picker.DoneInfo{Err: errors.New("reset"), Latency: time.Millisecond}
			}
			return picker.DoneInfo{Latency: time.Duration(len(a)+i%5) * time.Millisecond}
		})
		return seq
	}
	want := run()
	got := run(nil, picker.WithDecay(0), picker.WithDecay(-1), picker.WithNewNodePenalty(-1), picker.WithErrorPenalty(0))
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatal("non-positive options changed the picks")
	}
	if other := run(picker.WithDecay(time.Millisecond)); fmt.Sprint(other) == fmt.Sprint(want) {
		t.Fatal("WithDecay(1ms) did not change the picks")
	}
}

func TestExp(t *testing.T) {
	for _, x := range []float64{-800, -700, -20, -1, -1.0 / 16, -1e-3, -1e-9, 0, 1e-9, 1e-3, 1.0 / 16, 1, 20, 700, 800} {
		want := math.Exp(min(max(x, -700), 700))
		if got := picker.Exp(x); math.Abs(got-want) > 3e-7*want || got == 0 || math.IsInf(got, 0) {
			t.Errorf("Exp(%v) = %v, want %v", x, got, want)
		}
	}
	// The polynomial's range, edges included, where its error is largest.
	for x := -1.0/16 + 1e-12; x < 1.0/16; x += 1.0 / 4096 {
		for _, x := range []float64{x, math.Nextafter(1.0/16, 0)} {
			if got, want := picker.Exp(x), math.Exp(x); math.Abs(got-want) > 7e-7*want {
				t.Fatalf("Exp(%v) = %v, want %v within 7e-7", x, got, want)
			}
		}
	}
}

func TestLeastLoadedServersThatDoNotQueue(t *testing.T) {
	// Three nodes that serve every call at once, as the loopback benchmark's
	// servers do, so that calls in flight do not slow them down; node 0 is
	// 10 times slower. Open-loop arrivals keep about 16 calls in flight, so
	// a fast node often has 7 or more while node 0 is idle: measured with
	// no regard for calls in flight, 8 × 1.1 ms would outweigh 1 × 11 ms and
	// node 0 would get several percent of the calls, setting the p99. A
	// latency is measured at the calls in flight it ran with, so the slow
	// node stays shunned.
	run := func(slow int) sim.Report {
		return sim.Run(sim.Scenario{
			Nodes: 3, Workers: 1000, Rate: 14500, Calls: 30000, Warmup: 3000, Seed: 7,
			Serve: func(node int, r *rand.Rand) sim.Outcome {
				d := time.Millisecond + time.Duration(r.ExpFloat64()*float64(100*time.Microsecond))
				if node == slow {
					d *= 10
				}
				return sim.Outcome{Service: d}
			},
		}, func(now func() time.Duration, seed uint64) picker.Picker {
			return picker.Virtualize(picker.LeastLoaded(), now, seed)
		})
	}
	healthy, slow := run(-1), run(0)
	t.Logf("healthy: %v", healthy)
	t.Logf("slow:    %v, slow node's share %.5f", slow, slow.Share[0])
	if slow.P99 > healthy.P99*3/2 {
		t.Errorf("p99 with a slow node = %v, want at most 1.5 × the healthy p99 %v", slow.P99, healthy.P99)
	}
	if slow.Share[0] > 0.002 {
		t.Errorf("slow node's share = %.5f, want at most 0.002", slow.Share[0])
	}
}

// Dones that race to change a node's estimate never wait for each other
// (the loser's sample joins the batch), and none leaves the estimate locked:
// after a storm of concurrent Dones, a peak still sets every node's estimate.
func TestLeastLoadedConcurrentDonesLeaveEstimateFree(t *testing.T) {
	p := picker.LeastLoaded()
	p.Update(nodes(2))
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 5000 {
				res, err := p.Pick(context.Background(), picker.Info{})
				if err != nil {
					t.Error(err)
					return
				}
				var err2 error
				if (g+i)%7 == 0 {
					err2 = errors.New("broken pipe") // failures fold at once
				}
				res.Done(picker.DoneInfo{Err: err2, Latency: time.Duration(1+(g*i)%13) * time.Millisecond})
			}
		})
	}
	wg.Wait()
	const peak = 10 * time.Minute // above every estimate (and below the cap on samples): each node takes it at once
	seen := map[string]bool{}
	for len(seen) < 2 {
		res, err := p.Pick(context.Background(), picker.Info{Tried: slices.Collect(maps.Keys(seen))})
		if err != nil {
			t.Fatal(err)
		}
		res.Done(picker.DoneInfo{Latency: peak})
		seen[res.Node.Addr] = true
	}
	for _, l := range p.(picker.LoadReporter).Loads() {
		if l.InFlight != 0 || l.Latency != peak {
			t.Errorf("%s: %d in flight, estimate %v; want 0 and the peak, %v", l.Addr, l.InFlight, l.Latency, peak)
		}
	}
}
