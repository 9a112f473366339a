package sim

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/lbrpc/lbrpc/picker"
	"github.com/lbrpc/lbrpc/registry"
)

// Scenario describes one simulated service and the load on it.
type Scenario struct {
	// Nodes is the number of nodes, with addresses Addr(0), Addr(1), ...
	// and weight 1.
	Nodes int
	// Workers is how many calls a node serves at once; the others wait in
	// its queue, first come first served. Zero means 1.
	Workers int
	// Rate is the mean number of calls per second.
	Rate float64
	// Calls is the number of calls to make.
	Calls int
	// Warmup is the number of first calls left out of the report, while
	// the pickers learn.
	Warmup int
	// Serve returns what one call to node does. It must use only r for
	// randomness.
	Serve func(node int, r *rand.Rand) Outcome
	// Key, if not nil, returns the key of call i for picker.WithKey, and
	// whether it has one.
	Key func(i int, r *rand.Rand) (string, bool)
	// Seed seeds the scenario's randomness: arrivals, Serve and Key.
	Seed uint64
}

// Outcome is what a node does with one call.
type Outcome struct {
	// Service is how long the call takes once a worker has it; for a
	// rejected call, how long the error takes to come back.
	Service time.Duration
	// Err is the call's error, nil on success.
	Err error
	// Reject fails the call at once, without a worker: a node failing fast.
	Reject bool
}

// Report is the result of one run. Latencies are of successful calls and
// include queueing.
type Report struct {
	Calls  int // calls counted (after the warm-up)
	Errors int // counted calls that failed, including failed picks
	P50    time.Duration
	P99    time.Duration
	P999   time.Duration
	Max    time.Duration
	// Share is each node's fraction of the counted calls.
	Share []float64
}

// String formats the report as one table row.
func (r Report) String() string {
	return fmt.Sprintf("p50 %8v  p99 %8v  p999 %8v  errors %5d/%d", r.P50, r.P99, r.P999, r.Errors, r.Calls)
}

// Addr is the address of node i.
func Addr(i int) string { return "node-" + strconv.Itoa(i) }

// NewPicker builds the picker to simulate: it must read the time only from
// now and draw its random numbers only from a generator seeded with seed.
type NewPicker func(now func() time.Duration, seed uint64) picker.Picker

// Run simulates s through the picker newPicker returns.
func Run(s Scenario, newPicker NewPicker) Report {
	workers := max(s.Workers, 1)
	r := rand.New(rand.NewPCG(s.Seed, 1))
	var now time.Duration
	p := newPicker(func() time.Duration { return now }, s.Seed)
	nodes := make([]registry.Node, s.Nodes)
	index := make(map[string]int, s.Nodes)
	for i := range nodes {
		nodes[i] = registry.Node{Addr: Addr(i), Weight: 1}
		index[nodes[i].Addr] = i
	}
	p.Update(nodes)

	var (
		events  eventQueue
		seq     int
		busy    = make([]int, s.Nodes)
		queues  = make([][]*call, s.Nodes)
		picks   = make([]int, s.Nodes)
		lat     []time.Duration
		rep     Report
		arrived int
	)
	push := func(at time.Duration, c *call) {
		seq++
		events.push(event{at: at, seq: seq, call: c})
	}
	gap := func() time.Duration { return time.Duration(r.ExpFloat64() / s.Rate * float64(time.Second)) }
	if s.Calls > 0 {
		push(gap(), nil)
	}
	for len(events) > 0 {
		ev := events.pop()
		now = ev.at
		c := ev.call
		if c == nil { // an arrival
			i := arrived
			arrived++
			if arrived < s.Calls {
				push(now+gap(), nil)
			}
			counted := i >= s.Warmup
			ctx := context.Background()
			if s.Key != nil {
				if k, ok := s.Key(i, r); ok {
					ctx = picker.WithKey(ctx, k)
				}
			}
			res, err := p.Pick(ctx, picker.Info{ServiceMethod: "Sim.Call"})
			if counted {
				rep.Calls++
			}
			if err != nil {
				if counted {
					rep.Errors++
				}
				continue
			}
			n, ok := index[res.Node.Addr]
			if !ok {
				panic("sim: picker chose unknown node " + res.Node.Addr)
			}
			c = &call{node: n, start: now, res: res, out: s.Serve(n, r), counted: counted}
			if counted {
				picks[n]++
			}
			switch {
			case c.out.Reject:
				push(now+c.out.Service, c)
			case busy[n] < workers:
				busy[n]++
				push(now+c.out.Service, c)
			default:
				queues[n] = append(queues[n], c)
			}
			continue
		}
		// A completion.
		if c.res.Done != nil {
			c.res.Finish(picker.DoneInfo{Err: c.out.Err, Latency: now - c.start})
		}
		if c.counted {
			if c.out.Err != nil {
				rep.Errors++
			} else {
				lat = append(lat, now-c.start)
			}
		}
		if !c.out.Reject {
			if q := queues[c.node]; len(q) > 0 {
				next := q[0]
				q[0] = nil
				queues[c.node] = q[1:]
				push(now+next.out.Service, next)
			} else {
				busy[c.node]--
			}
		}
	}
	slices.Sort(lat)
	rep.P50, rep.P99, rep.P999 = quantile(lat, 0.5), quantile(lat, 0.99), quantile(lat, 0.999)
	if len(lat) > 0 {
		rep.Max = lat[len(lat)-1]
	}
	rep.Share = make([]float64, s.Nodes)
	for i, n := range picks {
		if rep.Calls > 0 {
			rep.Share[i] = float64(n) / float64(rep.Calls)
		}
	}
	return rep
}

// quantile returns the q-quantile of sorted (nearest rank), 0 if empty.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

type call struct {
	node    int
	start   time.Duration
	res     picker.Result
	out     Outcome
	counted bool
}

// event is an arrival (call nil) or a call's completion, ordered by time
// and then by the order it was scheduled in, so that runs are repeatable.
type event struct {
	at   time.Duration
	seq  int
	call *call
}

// eventQueue is a binary min-heap of events.
type eventQueue []event

func (e event) before(f event) bool { return e.at < f.at || e.at == f.at && e.seq < f.seq }

func (q *eventQueue) push(e event) {
	h := append(*q, e)
	for i := len(h) - 1; i > 0; {
		parent := (i - 1) / 2
		if !h[i].before(h[parent]) {
			break
		}
		h[i], h[parent] = h[parent], h[i]
		i = parent
	}
	*q = h
}

func (q *eventQueue) pop() event {
	h := *q
	top := h[0]
	last := len(h) - 1
	h[0] = h[last]
	h = h[:last]
	for i := 0; ; {
		c := 2*i + 1
		if c >= len(h) {
			break
		}
		if r := c + 1; r < len(h) && h[r].before(h[c]) {
			c = r
		}
		if !h[c].before(h[i]) {
			break
		}
		h[i], h[c] = h[c], h[i]
		i = c
	}
	*q = h
	return top
}
