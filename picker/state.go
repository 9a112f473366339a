package picker

import (
	"context"
	"errors"
	"net/rpc"
	"runtime"
	"sync/atomic"

	"github.com/lbrpc/lbrpc/registry"
)

// nodeState is what a load-aware picker knows of one node. It outlives
// snapshots: Update carries it over, by address, for the nodes that stay, so
// that neither in-flight counts nor latency are reset by a node-set change.
type nodeState struct {
	// Exactly what a pick and a successful Done touch, in 64 bytes: objects
	// of this size are 64-byte aligned, so each node's hot state is one
	// cache line of its own, and 10,000 nodes take 640 KB, not twice that.
	inflight atomic.Int64
	ewma     atomic.Uint64                // float64 bits of LeastLoaded's estimate in ns; 0 before the first sample
	stamp    atomic.Int64                 // clock reading of the estimate's last change, even; odd while a Done changes the estimate (see lockEstimate)
	batch    atomic.Uint64                // samples not folded in yet: sum of ns<<countBits | count
	done     func(DoneInfo)               // the finish method value, bound once so that Done does not allocate
	ll       *leastLoaded                 // nil unless the picker tracks latency (see leastloaded.go)
	total    atomic.Pointer[atomic.Int64] // the in-flight total the node counts in: its picker's, while the node takes calls; else nil
	*cold
}

// cold is the part of a node's state that picks do not read.
type cold struct {
	addr     string
	failures atomic.Int64
}

// lockEstimate takes the right to change ewma and stamp, which LeastLoaded's
// Dones share, without waiting: it fails if another Done holds it. The lock
// is stamp's lowest bit, so that taking it touches no line but the node's
// own, and readers that ignore it see the stamp 1ns late at most. It
// returns the stamp to store (with the lock released) if nothing changes.
func (s *nodeState) lockEstimate() (stamp int64, ok bool) {
	st := s.stamp.Load()
	return st, st&1 == 0 && s.stamp.CompareAndSwap(st, st|1)
}

func newNodeState(addr string, ll *leastLoaded) *nodeState {
	s := &nodeState{ll: ll, cold: &cold{addr: addr}}
	s.done = s.finish
	return s
}

// pick counts one more attempt in flight.
func (s *nodeState) pick() {
	s.inflight.Add(1)
	if t := s.total.Load(); t != nil {
		t.Add(1)
	}
}

// finish is Result.Done. It does not allocate.
func (s *nodeState) finish(d DoneInfo) {
	// A Done called twice (a caller's bug) would leave the counts one low
	// for good: they are put back as they go below zero.
	if s.inflight.Add(-1) < 0 {
		s.inflight.Add(1)
	} else if t := s.total.Load(); t != nil && t.Add(-1) < 0 {
		t.Add(1)
	}
	o := classify(d.Err)
	if o == timedOut || o == failed {
		s.failures.Add(1)
	}
	if s.ll != nil {
		s.ll.observe(s, o, d.Latency)
	}
}

// rejoin forgets what was learned of a node that left the set and comes
// back, as if it were new, but for its calls in flight. Dones of those
// calls may be running: the estimate is cleared under its lock.
func (s *nodeState) rejoin() {
	s.failures.Store(0)
	for {
		st, ok := s.lockEstimate()
		if ok {
			s.batch.Store(0)
			s.ewma.Store(0)
			s.stamp.Store(st)
			return
		}
		runtime.Gosched() // a Done holds the estimate for a few instructions
	}
}

// load returns the calls in flight; never negative, even if a caller calls
// Done twice.
func (s *nodeState) load() int64 { return max(s.inflight.Load(), 0) }

// outcome is what an attempt's error says about the node.
type outcome uint8

const (
	answered  outcome = iota // nil or rpc.ServerError: the node answered
	cancelled                // context.Canceled: the caller gave up; says nothing of the node
	timedOut                 // context.DeadlineExceeded: the node took at least the latency
	failed                   // anything else: the node failed, often fast
)

func classify(err error) outcome {
	switch {
	case err == nil:
		return answered
	case errors.Is(err, context.Canceled):
		return cancelled
	case errors.Is(err, context.DeadlineExceeded):
		return timedOut
	}
	if _, ok := errors.AsType[rpc.ServerError](err); ok {
		return answered
	}
	return failed
}

// loadSnapshot is the immutable node set of a load-aware picker.
type loadSnapshot struct {
	nodes  []registry.Node // the serving nodes (see serving)
	states []*nodeState    // states[i] is the state of nodes[i]: what p2c reads, dense, so that its random reads touch few lines
	all    []*nodeState    // every node of the set, drained ones included, in set order
	gone   []*nodeState    // nodes that left the set with calls in flight (see newLoadSnapshot)
}

// maxGone bounds the states a snapshot keeps of nodes that left the set.
const maxGone = 1024

// newLoadSnapshot builds the snapshot for nodes, reusing old's state for the
// addresses that stay and calling fresh for the others.
//
// The client takes a node out of the set whenever it stops being fit to
// serve (a failed health check, an ejection, an open breaker) and puts it
// back when it recovers, often with calls still in flight. The state of a
// node that leaves with calls in flight is kept, so that a node that comes
// back finds them counted, and those calls' Dones land on the state its
// picks read; what the picker learned of its latency and failures is
// forgotten, as for a new node.
func newLoadSnapshot(old *loadSnapshot, nodes []registry.Node, fresh func(addr string) *nodeState) *loadSnapshot {
	prev := make(map[string]*nodeState, len(old.all))
	for _, st := range old.all {
		prev[st.addr] = st
	}
	left := make(map[string]*nodeState, len(old.gone))
	for _, st := range old.gone {
		left[st.addr] = st
	}
	s := &loadSnapshot{all: make([]*nodeState, 0, len(nodes))}
	byAddr := make(map[string]*nodeState, len(nodes))
	for _, n := range nodes {
		if _, dup := byAddr[n.Addr]; dup {
			continue
		}
		st := prev[n.Addr]
		if st == nil {
			if st = left[n.Addr]; st != nil {
				st.rejoin()
			} else {
				st = fresh(n.Addr)
			}
		}
		byAddr[n.Addr] = st
		s.all = append(s.all, st)
	}
	for _, states := range [][]*nodeState{old.all, old.gone} {
		for _, st := range states {
			if _, stays := byAddr[st.addr]; !stays && st.load() > 0 && len(s.gone) < maxGone {
				s.gone = append(s.gone, st)
			}
		}
	}
	for _, n := range serving(nodes) {
		st := byAddr[n.Addr]
		if st == nil {
			continue // a duplicate address would be drawn twice as often
		}
		byAddr[n.Addr] = nil
		s.nodes = append(s.nodes, n)
		s.states = append(s.states, st)
	}
	return s
}

// loads reports in-flight calls and failures of every node in s.
func (s *loadSnapshot) loads() []Load {
	out := make([]Load, len(s.all))
	for i, st := range s.all {
		out[i] = Load{Addr: st.addr, InFlight: st.load(), Failures: st.failures.Load()}
	}
	return out
}

// p2c is the power of two choices: it draws two distinct nodes at random
// and returns their indexes in s.nodes, preferring nodes not in list
// (Info.Tried); when every node was tried, it draws among all. It returns
// i == j when the choice is made (one node, or one untried); otherwise the
// caller keeps the better of states[i] and states[j]. The caller compares,
// so that the comparison is a direct call. There must be at least one node.
func p2c(s *loadSnapshot, r uint64, list []string) (i, j int) {
	n := len(s.states)
	if n == 1 {
		return 0, 0
	}
	i = below(r, n)
	j = below(r<<32, n-1)
	if j >= i {
		j++
	}
	if len(list) > 0 {
		ti, tj := tried(list, s.states[i].addr), tried(list, s.states[j].addr)
		switch {
		case ti && tj:
			return untriedPair(s.nodes, i, j, list)
		case ti:
			return j, j
		case tj:
			return i, i
		}
	}
	return i, j
}

// untriedPair scans from i for two nodes not in list. It returns them; one
// twice if only one is untried; i and j unchanged if every node was tried.
func untriedPair(ns []registry.Node, i, j int, list []string) (int, int) {
	first := -1
	for k := range ns {
		x := (i + k) % len(ns)
		if tried(list, ns[x].Addr) {
			continue
		}
		if first >= 0 {
			return first, x
		}
		first = x
	}
	if first >= 0 {
		return first, first
	}
	return i, j
}
