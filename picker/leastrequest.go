package picker

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/lbrpc/lbrpc/registry"
)

// LeastRequest returns a picker that sends each attempt to the node with
// fewer calls in flight of two drawn at random (the power of two choices,
// as grpc-go's least_request). It balances load without timing anything,
// but cannot tell a fast node from one that fails fast: a node that answers
// every call at once with an error has few calls in flight and draws more
// of them. Prefer LeastLoaded unless that trade is wanted.
//
// What the picker counts survives Update for the nodes that stay, and so do
// the calls in flight of a node that leaves and returns. Drained
// nodes (Weight 0) get no calls unless every node is drained; other weights
// are not used. A retry prefers the nodes not in Info.Tried. The picker
// implements LoadReporter (in-flight calls and failures).
//
// Pick and Done do not block or allocate; the picker is safe for concurrent
// use.
func LeastRequest() Picker {
	p := &leastRequest{}
	p.snap.Store(&loadSnapshot{})
	return p
}

type leastRequest struct {
	snap atomic.Pointer[loadSnapshot]
	mu   sync.Mutex // serialises Update
	rand source
}

func (p *leastRequest) Update(nodes []registry.Node) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.snap.Store(newLoadSnapshot(p.snap.Load(), nodes, freshCounted))
}

func freshCounted(addr string) *nodeState { return newNodeState(addr, nil) }

func (p *leastRequest) Pick(_ context.Context, info Info) (Result, error) {
	s := p.snap.Load()
	if len(s.nodes) == 0 {
		return Result{}, ErrNoNodes
	}
	i, j := p2c(s, p.rand.uint64(), info.Tried)
	if i != j && fewer(s.states[j], s.states[i]) {
		i = j
	}
	st := s.states[i]
	st.pick()
	return Result{Node: s.nodes[i], Done: st.done, st: st}, nil
}

// fewer reports whether a has fewer calls in flight than b.
func fewer(a, b *nodeState) bool { return a.load() < b.load() }

func (p *leastRequest) Loads() []Load { return p.snap.Load().loads() }
