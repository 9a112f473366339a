package picker

import (
	"context"
	"sync/atomic"

	"github.com/lbrpc/lbrpc/registry"
)

// WeightedRoundRobin returns a picker that takes the nodes in turn in
// proportion to Node.Weight, spread out rather than in runs: nginx's smooth
// weighted round robin, so weights 5, 1, 1 give a a b a c a a. Use it when
// nodes differ in capacity and the registry knows by how much; when it does
// not, LeastLoaded finds out.
//
// Weight 0 means drain: the node gets no new calls, unless every node has
// weight 0, in which case the nodes take equal turns. Update computes one
// cycle of the schedule, and Pick indexes it with an atomic counter that
// starts at a random offset and that Update does not reset. Weights are
// divided by their greatest common divisor; a set whose cycle would pass
// 2^20 picks has its weights scaled down to fit (shares then hold to about
// one part in 2^20 per node), and a large set with a long cycle is
// scheduled earliest-deadline-first, which keeps the shares and a like
// spread while costing Update O(cycle × log nodes) rather than nginx's
// O(cycle × nodes). A retry takes the next turn whose node is not in
// Info.Tried.
//
// Pick does not block or allocate; the picker is safe for concurrent use.
func WeightedRoundRobin() Picker {
	p := &weightedRoundRobin{}
	p.next.v.Store(p.rand.uint64())
	p.snap.Store(&wrrSnapshot{})
	return p
}

type weightedRoundRobin struct {
	snap atomic.Pointer[wrrSnapshot]
	rand source
	next alone[atomic.Uint64]
}

// wrrSnapshot is one node set and its schedule; never changed once stored.
type wrrSnapshot struct {
	nodes []registry.Node
	seq   []int32 // one cycle: indices into nodes
}

const (
	// maxCycle caps the schedule's length (4 MiB of indices).
	maxCycle = 1 << 20
	// smoothBudget caps the work of nginx's algorithm (cycle × nodes steps)
	// at Update; past it the schedule is earliest-deadline-first.
	smoothBudget = 1 << 24
)

func (p *weightedRoundRobin) Update(nodes []registry.Node) {
	s := &wrrSnapshot{nodes: serving(nodes)}
	w := make([]int, len(s.nodes))
	for i, n := range s.nodes {
		w[i] = max(n.Weight, 1) // all drained: equal turns
	}
	s.seq = schedule(w)
	p.snap.Store(s)
}

func (p *weightedRoundRobin) Pick(_ context.Context, info Info) (Result, error) {
	s := p.snap.Load()
	n := uint64(len(s.seq))
	if n == 0 {
		return Result{}, ErrNoNodes
	}
	i := p.next.v.Add(1)
	node := s.nodes[s.seq[i%n]]
	if len(info.Tried) == 0 || !tried(info.Tried, node.Addr) {
		return Result{Node: node}, nil
	}
	// The next turns first, then any node: heavy nodes can fill many turns.
	for k := uint64(1); k < min(n, 64); k++ {
		if nd := s.nodes[s.seq[(i+k)%n]]; !tried(info.Tried, nd.Addr) {
			return Result{Node: nd}, nil
		}
	}
	start := int(s.seq[i%n])
	for k := range s.nodes {
		if nd := s.nodes[(start+k)%len(s.nodes)]; !tried(info.Tried, nd.Addr) {
			return Result{Node: nd}, nil
		}
	}
	return Result{Node: node}, nil
}

// schedule returns one cycle of the weighted turns for positive weights w:
// node i appears w[i]/g times (g their greatest common divisor), unless the
// cycle had to be scaled down to maxCycle.
func schedule(w []int) []int32 {
	if len(w) == 0 {
		return nil
	}
	g := 0
	for _, x := range w {
		g = gcd(g, x)
	}
	var sum float64
	for i := range w {
		w[i] /= g
		sum += float64(w[i])
	}
	if sum > maxCycle {
		for i := range w {
			w[i] = max(1, int(float64(w[i])*maxCycle/sum))
		}
	}
	total := 0
	for _, x := range w {
		total += x
	}
	if uint64(total)*uint64(len(w)) <= smoothBudget { // no overflow where int has 32 bits
		return smooth(w, total)
	}
	return edf(w, total)
}

// smooth is nginx's smooth weighted round robin: each turn, every node
// gains its weight, the richest is chosen (the first on ties) and pays the
// total.
func smooth(w []int, total int) []int32 {
	seq := make([]int32, total)
	cur := make([]int, len(w))
	for t := range seq {
		best := 0
		for i, x := range w {
			cur[i] += x
			if cur[i] > cur[best] {
				best = i
			}
		}
		cur[best] -= total
		seq[t] = int32(best)
	}
	return seq
}

// edf schedules the k-th turn of node i (k from 0) at time (k+½)/w[i],
// earliest first, the lower index first on ties.
func edf(w []int, total int) []int32 {
	seq := make([]int32, 0, total)
	k := make([]int, len(w))          // turns given so far
	h := make([]int32, len(w))        // a binary min-heap of node indices
	before := func(a, b int32) bool { // a's next deadline is earlier
		l, r := (2*k[a]+1)*w[b], (2*k[b]+1)*w[a]
		return l < r || l == r && a < b
	}
	for i := range h {
		h[i] = int32(i)
	}
	for i := len(h)/2 - 1; i >= 0; i-- {
		down(h, i, before)
	}
	for len(seq) < total {
		i := h[0]
		seq = append(seq, i)
		k[i]++
		down(h, 0, before)
	}
	return seq
}

// down restores the heap property below position i.
func down(h []int32, i int, before func(a, b int32) bool) {
	for {
		l := 2*i + 1
		if l >= len(h) {
			return
		}
		c := l
		if r := l + 1; r < len(h) && before(h[r], h[l]) {
			c = r
		}
		if !before(h[c], h[i]) {
			return
		}
		h[i], h[c] = h[c], h[i]
		i = c
	}
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
