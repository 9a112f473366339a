package picker

import (
	"context"
	"sync/atomic"

	"github.com/lbrpc/lbrpc/registry"
)

// RoundRobin returns a picker that takes the nodes in turn, in the order of
// the set. Its turn is one atomic counter that starts at a random offset, so
// that many clients do not all hit the first node, and that an update of the
// node set does not reset: there is no hot spot after each update, and a new
// node gets calls from the next round on. Drained nodes (Weight 0) are
// skipped unless every node is drained. A retry goes to the next node not in
// Info.Tried; when every node was tried, to the node whose turn it is.
//
// Use it when the nodes are alike and calls cost about the same. Pick does
// not block or allocate; the picker is safe for concurrent use.
func RoundRobin() Picker {
	p := &roundRobin{}
	p.next.v.Store(p.rand.uint64())
	p.nodes.Store(&[]registry.Node{})
	return p
}

type roundRobin struct {
	nodes atomic.Pointer[[]registry.Node] // the serving nodes; never changed once stored
	rand  source
	next  alone[atomic.Uint64]
}

func (p *roundRobin) Update(nodes []registry.Node) {
	ns := serving(nodes)
	p.nodes.Store(&ns)
}

func (p *roundRobin) Pick(_ context.Context, info Info) (Result, error) {
	nodes := *p.nodes.Load()
	n := uint64(len(nodes))
	if n == 0 {
		return Result{}, ErrNoNodes
	}
	i := p.next.v.Add(1)
	if len(info.Tried) == 0 {
		return Result{Node: nodes[i%n]}, nil
	}
	for k := uint64(0); k < n; k++ {
		if node := nodes[(i+k)%n]; !tried(info.Tried, node.Addr) {
			return Result{Node: node}, nil
		}
	}
	return Result{Node: nodes[i%n]}, nil
}

// Random returns a picker that chooses a node uniformly at random. Drained
// nodes (Weight 0) are skipped unless every node is drained. A retry goes to
// a random node not in Info.Tried; when every node was tried, to any node.
//
// Use it where round robin's lockstep matters: many clients that start
// together and send in bursts. Pick does not block or allocate; the picker
// is safe for concurrent use.
func Random() Picker {
	p := &random{}
	p.nodes.Store(&[]registry.Node{})
	return p
}

type random struct {
	nodes atomic.Pointer[[]registry.Node] // the serving nodes; never changed once stored
	rand  source
}

func (p *random) Update(nodes []registry.Node) {
	ns := serving(nodes)
	p.nodes.Store(&ns)
}

func (p *random) Pick(_ context.Context, info Info) (Result, error) {
	nodes := *p.nodes.Load()
	n := len(nodes)
	if n == 0 {
		return Result{}, ErrNoNodes
	}
	i := below(p.rand.uint64(), n)
	if len(info.Tried) == 0 {
		return Result{Node: nodes[i]}, nil
	}
	// Draw again a few times before scanning, so that the node after a
	// tried one is not favoured.
	for k := 0; k < 4; k++ {
		if node := nodes[i]; !tried(info.Tried, node.Addr) {
			return Result{Node: node}, nil
		}
		i = below(p.rand.uint64(), n)
	}
	for k := 0; k < n; k++ {
		if node := nodes[(i+k)%n]; !tried(info.Tried, node.Addr) {
			return Result{Node: node}, nil
		}
	}
	return Result{Node: nodes[i]}, nil
}
