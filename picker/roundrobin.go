package picker

import (
	"context"
	"math/rand/v2"
	"slices"
	"sync/atomic"

	"github.com/lbrpc/lbrpc/registry"
)

// RoundRobin returns a picker that takes the nodes in turn. It starts at a
// random offset, so that many clients do not all hit the first node, and an
// update of the node set does not reset the turn.
func RoundRobin() Picker {
	p := &roundRobin{}
	p.next.Store(rand.Uint64())
	p.nodes.Store(&[]registry.Node{})
	return p
}

type roundRobin struct {
	nodes atomic.Pointer[[]registry.Node]
	next  atomic.Uint64
}

func (p *roundRobin) Update(nodes []registry.Node) {
	ns := slices.Clone(nodes)
	p.nodes.Store(&ns)
}

func (p *roundRobin) Pick(_ context.Context, info Info) (Result, error) {
	nodes := *p.nodes.Load()
	n := uint64(len(nodes))
	if n == 0 {
		return Result{}, ErrNoNodes
	}
	i := p.next.Add(1)
	for k := uint64(0); k < n; k++ {
		node := nodes[(i+k)%n]
		if len(info.Tried) == 0 || !tried(info.Tried, node.Addr) {
			return Result{Node: node}, nil
		}
	}
	return Result{Node: nodes[i%n]}, nil
}

// Random returns a picker that chooses a node uniformly at random.
func Random() Picker {
	p := &random{}
	p.nodes.Store(&[]registry.Node{})
	return p
}

type random struct {
	nodes atomic.Pointer[[]registry.Node]
}

func (p *random) Update(nodes []registry.Node) {
	ns := slices.Clone(nodes)
	p.nodes.Store(&ns)
}

func (p *random) Pick(_ context.Context, info Info) (Result, error) {
	nodes := *p.nodes.Load()
	n := len(nodes)
	if n == 0 {
		return Result{}, ErrNoNodes
	}
	i := rand.IntN(n)
	for k := 0; k < n; k++ {
		node := nodes[(i+k)%n]
		if len(info.Tried) == 0 || !tried(info.Tried, node.Addr) {
			return Result{Node: node}, nil
		}
	}
	return Result{Node: nodes[i]}, nil
}
