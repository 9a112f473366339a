package sim_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/lbrpc/lbrpc/internal/sim"
	"github.com/lbrpc/lbrpc/picker"
	"github.com/lbrpc/lbrpc/registry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// turns is a picker for tests: node i%n for the i-th pick. It records what
// it is told.
type turns struct {
	nodes   []registry.Node
	picks   int
	keys    []string
	dones   int
	latency []time.Duration
	errs    int
	now     func() time.Duration
	starts  []time.Duration
	fail    bool
}

func (p *turns) Update(nodes []registry.Node) { p.nodes = append([]registry.Node(nil), nodes...) }

func (p *turns) Pick(ctx context.Context, _ picker.Info) (picker.Result, error) {
	if p.fail {
		return picker.Result{}, picker.ErrNoNodes
	}
	if k, ok := picker.KeyFrom(ctx); ok {
		p.keys = append(p.keys, k)
	}
	n := p.nodes[p.picks%len(p.nodes)]
	p.picks++
	start := p.now()
	return picker.Result{Node: n, Done: func(d picker.DoneInfo) {
		p.dones++
		if got := p.now() - start; got != d.Latency {
			panic("Done latency is not the time since the pick")
		}
		p.latency = append(p.latency, d.Latency)
		if d.Err != nil {
			p.errs++
		}
	}}, nil
}

// fixed serves every call in d.
func fixed(d time.Duration) func(int, *rand.Rand) sim.Outcome {
	return func(int, *rand.Rand) sim.Outcome { return sim.Outcome{Service: d} }
}

func run(s sim.Scenario, p *turns) sim.Report {
	return sim.Run(s, func(now func() time.Duration, _ uint64) picker.Picker {
		p.now = now
		return p
	})
}

func TestRun(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name string
		s    sim.Scenario
		fail bool
		want sim.Report
	}{
		{
			name: "idle node: latency is service time",
			s:    sim.Scenario{Nodes: 1, Rate: 0.1, Calls: 100, Serve: fixed(10 * time.Millisecond)},
			want: sim.Report{Calls: 100, P50: 10 * time.Millisecond, P99: 10 * time.Millisecond, P999: 10 * time.Millisecond, Max: 10 * time.Millisecond, Share: []float64{1}},
		},
		{
			name: "warm-up left out, shares per node",
			s:    sim.Scenario{Nodes: 4, Rate: 0.1, Calls: 100, Warmup: 20, Serve: fixed(time.Millisecond)},
			want: sim.Report{Calls: 80, P50: time.Millisecond, P99: time.Millisecond, P999: time.Millisecond, Max: time.Millisecond, Share: []float64{0.25, 0.25, 0.25, 0.25}},
		},
		{
			name: "errors are counted, not timed",
			s: sim.Scenario{Nodes: 2, Rate: 0.1, Calls: 10, Serve: func(node int, _ *rand.Rand) sim.Outcome {
				if node == 1 {
					return sim.Outcome{Service: time.Second, Err: boom}
				}
				return sim.Outcome{Service: time.Millisecond}
			}},
			want: sim.Report{Calls: 10, Errors: 5, P50: time.Millisecond, P99: time.Millisecond, P999: time.Millisecond, Max: time.Millisecond, Share: []float64{0.5, 0.5}},
		},
		{
			name: "failed picks are errors",
			s:    sim.Scenario{Nodes: 2, Rate: 1, Calls: 10, Serve: fixed(time.Millisecond)},
			fail: true,
			want: sim.Report{Calls: 10, Errors: 10, Share: []float64{0, 0}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := &turns{fail: tc.fail}
			got := run(tc.s, p)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Run = %+v\nwant  %+v", got, tc.want)
			}
			if !tc.fail && (p.dones != tc.s.Calls || p.picks != tc.s.Calls) {
				t.Fatalf("%d picks and %d Done calls, want %d each", p.picks, p.dones, tc.s.Calls)
			}
		})
	}
}

func TestQueueing(t *testing.T) {
	// One worker serving 10 ms calls, asked for 200 a second: twice what
	// it can serve, so the queue and the latency grow through the run.
	p := &turns{}
	r := run(sim.Scenario{Nodes: 1, Workers: 1, Rate: 200, Calls: 2000, Serve: fixed(10 * time.Millisecond)}, p)
	if r.Max < 9*time.Second || r.P50 < 2*time.Second {
		t.Fatalf("overloaded node: %v, max %v; want the queue to build up to ~10 s", r, r.Max)
	}
	// First come, first served: a later call never finishes earlier.
	for i := 1; i < len(p.latency); i++ {
		if p.latency[i] < p.latency[i-1]-100*time.Millisecond {
			t.Fatalf("latency fell from %v to %v: not FIFO", p.latency[i-1], p.latency[i])
		}
	}

	// Four workers serve it all without queueing to speak of.
	r = run(sim.Scenario{Nodes: 1, Workers: 4, Rate: 200, Calls: 2000, Serve: fixed(10 * time.Millisecond)}, &turns{})
	if r.P50 != 10*time.Millisecond || r.Max > 100*time.Millisecond {
		t.Fatalf("node with spare workers: %v, max %v; want 10 ms and little queueing", r, r.Max)
	}
}

func TestRejectSkipsQueue(t *testing.T) {
	// A rejected call comes back after its own time even when the workers
	// are busy.
	p := &turns{}
	run(sim.Scenario{Nodes: 1, Workers: 1, Rate: 1000, Calls: 500, Serve: func(_ int, r *rand.Rand) sim.Outcome {
		if r.IntN(2) == 0 {
			return sim.Outcome{Service: time.Millisecond, Err: errors.New("refused"), Reject: true}
		}
		return sim.Outcome{Service: 10 * time.Millisecond}
	}}, p)
	if p.errs == 0 {
		t.Fatal("no rejected calls")
	}
	rejected := 0
	for _, l := range p.latency {
		if l == time.Millisecond {
			rejected++
		}
	}
	if rejected != p.errs {
		t.Fatalf("%d of %d rejected calls took exactly their 1 ms", rejected, p.errs)
	}
}

func TestKeys(t *testing.T) {
	p := &turns{}
	run(sim.Scenario{Nodes: 2, Rate: 1, Calls: 4, Serve: fixed(time.Millisecond), Key: func(i int, _ *rand.Rand) (string, bool) {
		return []string{"a", "b", "", "d"}[i], i != 2
	}}, p)
	if want := []string{"a", "b", "d"}; !reflect.DeepEqual(p.keys, want) {
		t.Fatalf("keys seen by the picker = %q, want %q", p.keys, want)
	}
}

func TestDeterministic(t *testing.T) {
	s := sim.Scenario{Nodes: 3, Workers: 2, Rate: 300, Calls: 3000, Seed: 7, Serve: func(node int, r *rand.Rand) sim.Outcome {
		return sim.Outcome{Service: time.Duration(r.ExpFloat64() * float64(5*time.Millisecond))}
	}}
	a, b := run(s, &turns{}), run(s, &turns{})
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("same seed, different reports:\n%v\n%v", a, b)
	}
	s.Seed = 8
	if c := run(s, &turns{}); reflect.DeepEqual(a, c) {
		t.Fatalf("seeds 7 and 8 gave the same report %v", a)
	}
}

func TestAddr(t *testing.T) {
	if got := sim.Addr(12); got != "node-12" {
		t.Fatalf("Addr(12) = %q", got)
	}
}
