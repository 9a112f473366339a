package picker

import (
	"context"
	"sync/atomic"

	"github.com/lbrpc/lbrpc/registry"
)

// PickFirst returns a picker that sends every call to the first node of
// the set, in the registry's order, and fails over in that order: since the
// client gives the picker only the nodes fit to serve, the calls move to
// the second node while the first is out, and back when it returns. Use it
// for a primary with standbys, or to keep one connection busy. Drained
// nodes (Weight 0) are skipped unless every node is drained. A retry goes
// to the first node not in Info.Tried; when every node was tried, to the
// first.
//
// Pick does not block or allocate; the picker is safe for concurrent use.
func PickFirst() Picker {
	p := &pickFirst{}
	p.nodes.Store(&[]registry.Node{})
	return p
}

type pickFirst struct {
	nodes atomic.Pointer[[]registry.Node] // the serving nodes; never changed once stored
}

func (p *pickFirst) Update(nodes []registry.Node) {
	ns := serving(nodes)
	p.nodes.Store(&ns)
}

func (p *pickFirst) Pick(_ context.Context, info Info) (Result, error) {
	nodes := *p.nodes.Load()
	if len(nodes) == 0 {
		return Result{}, ErrNoNodes
	}
	for _, n := range nodes {
		if len(info.Tried) == 0 || !tried(info.Tried, n.Addr) {
			return Result{Node: n}, nil
		}
	}
	return Result{Node: nodes[0]}, nil
}
