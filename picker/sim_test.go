package picker_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lbrpc/lbrpc/internal/sim"
	"github.com/lbrpc/lbrpc/picker"
)

// The simulations below run in virtual time with seeded randomness: the
// same code gives the same numbers on every machine and every run, so the
// margins they assert cannot flake; they only move when the code does.

// errFailFast is the error of a simulated node that fails fast.
var errFailFast = errors.New("sim: node failed")

// Scenarios: 100 nodes of 4 workers each (40,000 calls/s of capacity)
// loaded at half that; a healthy call takes 5 ms plus an exponential 5 ms.
var simScenarios = []struct {
	name    string
	slow    int // the node 10 times slower, -1 for none
	failing int // the node failing failPct% of calls after 0.5 ms, -1 for none
	failPct int
}{
	{"healthy", -1, -1, 0},
	{"one node 10x slow", 0, -1, 0},
	{"one node fails 50% fast", -1, 0, 50},
	{"one node fails 5% fast", -1, 0, 5},
}

const simNodes = 100

func simScenario(slow, failing, failPct int) sim.Scenario {
	return sim.Scenario{
		Nodes: simNodes, Workers: 4, Rate: 20000, Calls: 50000, Warmup: 5000, Seed: 42,
		Serve: func(node int, r *rand.Rand) sim.Outcome {
			d := 5*time.Millisecond + time.Duration(r.ExpFloat64()*float64(5*time.Millisecond))
			switch {
			case node == slow:
				d *= 10
			case node == failing && r.IntN(100) < failPct:
				return sim.Outcome{Service: 500 * time.Microsecond, Err: errFailFast, Reject: true}
			}
			return sim.Outcome{Service: d}
		},
	}
}

// simPickers are the pickers simulated; PickFirst is left out, as it does
// not balance.
var simPickers = []struct {
	name string
	new  func() picker.Picker
	keys bool // calls carry keys of 10,000 users
}{
	{"RoundRobin", picker.RoundRobin, false},
	{"Random", picker.Random, false},
	{"WeightedRoundRobin", picker.WeightedRoundRobin, false},
	{"LeastRequest", picker.LeastRequest, false},
	{"LeastLoaded", func() picker.Picker { return picker.LeastLoaded() }, false},
	{"ConsistentHash", func() picker.Picker { return picker.ConsistentHash() }, true},
}

var (
	simMu    sync.Mutex
	simCache = map[[2]string]sim.Report{}
)

// simulate runs picker pk in scenario sc, once per test binary.
func simulate(t *testing.T, sc, pk string) sim.Report {
	t.Helper()
	simMu.Lock()
	defer simMu.Unlock()
	if r, ok := simCache[[2]string{sc, pk}]; ok {
		return r
	}
	r := runSim(t, sc, pk)
	simCache[[2]string{sc, pk}] = r
	return r
}

func runSim(t *testing.T, sc, pk string) sim.Report {
	t.Helper()
	for _, s := range simScenarios {
		if s.name != sc {
			continue
		}
		for _, p := range simPickers {
			if p.name != pk {
				continue
			}
			scen := simScenario(s.slow, s.failing, s.failPct)
			if p.keys {
				scen.Key = func(_ int, r *rand.Rand) (string, bool) {
					return fmt.Sprint("user-", r.IntN(10000)), true
				}
			}
			return sim.Run(scen, func(now func() time.Duration, seed uint64) picker.Picker {
				return picker.Virtualize(p.new(), now, seed)
			})
		}
	}
	t.Fatalf("no scenario %q or picker %q", sc, pk)
	return sim.Report{}
}

func TestSimulationSlowNode(t *testing.T) {
	healthy := simulate(t, "healthy", "LeastLoaded")
	slow := simulate(t, "one node 10x slow", "LeastLoaded")
	rr := simulate(t, "one node 10x slow", "RoundRobin")
	t.Logf("LeastLoaded healthy: %v", healthy)
	t.Logf("LeastLoaded slow:    %v, slow node's share %.5f", slow, slow.Share[0])
	t.Logf("RoundRobin slow:     %v, slow node's share %.5f", rr, rr.Share[0])
	if slow.P99 > healthy.P99*3/2 {
		t.Errorf("LeastLoaded p99 with a slow node = %v, want at most 1.5 × the healthy p99 %v", slow.P99, healthy.P99)
	}
	if max := 0.1 / simNodes; slow.Share[0] > max {
		t.Errorf("LeastLoaded sent the slow node %.5f of the calls, want at most %.5f (a tenth of 1/N)", slow.Share[0], max)
	}
	// The scenario bites: round robin keeps feeding the slow node's queue.
	if rr.P999 < 10*slow.P999 {
		t.Errorf("RoundRobin p999 = %v, want it far above LeastLoaded's %v: the scenario does not test anything", rr.P999, slow.P999)
	}
}

func TestSimulationFailingNode(t *testing.T) {
	const sc = "one node fails 50% fast"
	ll := simulate(t, sc, "LeastLoaded")
	lr := simulate(t, sc, "LeastRequest")
	t.Logf("LeastLoaded:  %v, failing node's share %.5f", ll, ll.Share[0])
	t.Logf("LeastRequest: %v, failing node's share %.5f", lr, lr.Share[0])
	// LeastRequest sees a node that fails fast as idle and feeds it more
	// than 1/N; the error penalty makes LeastLoaded feed it less, and less
	// as the run goes on (the penalty builds up over the decay window).
	if lr.Share[0] <= 1.0/simNodes {
		t.Errorf("LeastRequest sent the failing node %.5f of the calls, want more than 1/N: the scenario does not test anything", lr.Share[0])
	}
	if ll.Share[0] > lr.Share[0]*3/4 || ll.Share[0] > 1.0/simNodes {
		t.Errorf("LeastLoaded sent the failing node %.5f of the calls, want below 1/N and below 3/4 of LeastRequest's %.5f", ll.Share[0], lr.Share[0])
	}
	if ll.Errors > lr.Errors*2/3 {
		t.Errorf("LeastLoaded errors = %d, want at most 2/3 of LeastRequest's %d", ll.Errors, lr.Errors)
	}
}

func TestSimulationDeterministic(t *testing.T) {
	a := simulate(t, "one node 10x slow", "LeastLoaded")
	b := runSim(t, "one node 10x slow", "LeastLoaded")
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("two runs of one simulation differ:\n%v\n%v", a, b)
	}
}

// TestSimulationTable reports every picker in every scenario (see it with
// go test -v -run Simulation).
func TestSimulationTable(t *testing.T) {
	var b strings.Builder
	fmt.Fprintf(&b, "\n%-24s %-19s %10s %10s %10s %7s %8s\n", "scenario", "picker", "p50", "p99", "p999", "errors", "node 0")
	for _, sc := range simScenarios {
		for _, p := range simPickers {
			r := simulate(t, sc.name, p.name)
			fmt.Fprintf(&b, "%-24s %-19s %10v %10v %10v %7d %7.3f%%\n", sc.name, p.name,
				r.P50.Round(10*time.Microsecond), r.P99.Round(10*time.Microsecond), r.P999.Round(10*time.Microsecond), r.Errors, 100*r.Share[0])
		}
	}
	t.Log(b.String())
}
