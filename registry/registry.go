package registry

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
)

// ErrStopped is returned by Watcher.Next once Stop has been called.
var ErrStopped = errors.New("lbrpc/registry: watcher stopped")

// ErrNilContext is the error, possibly wrapped, that the built-in registries'
// Watch methods, and the etcd and Consul Register functions, return when
// given a nil context, instead of panicking. Test for it with errors.Is.
var ErrNilContext = errors.New("lbrpc/registry: nil context")

// Node is one server that can take calls.
type Node struct {
	// Addr is the dial address, usually "host:port".
	Addr string
	// Weight is the node's relative capacity for weighted pickers.
	// Zero (or less) means "drain": no built-in picker sends it new calls,
	// unless every node is drained.
	// Static and the other built-in registries set 1 when the source gives none.
	Weight int
	// Meta holds free-form labels (zone, version, ...). Treat it as read-only:
	// the same map is shared by every snapshot that carries the node.
	Meta map[string]string
}

// Registry is a source of node sets.
type Registry interface {
	// Watch starts watching the source. The Watcher lives until its Stop is
	// called; ctx bounds only the setting up. A nil ctx should be an error
	// matching ErrNilContext, not a panic, as it is in the built-in
	// registries.
	Watch(ctx context.Context) (Watcher, error)
}

// Watcher reports node sets as full snapshots.
//
// Next and Stop may be called from different goroutines; Next is called from
// one goroutine at a time.
type Watcher interface {
	// Next blocks until the node set changes and returns it. The first call
	// returns the current set. An error with a nil set means the source
	// failed; the client keeps the last good set and calls Next again.
	// Once the source recovers, Next reports the set again, even if it is
	// unchanged, so the client knows the failure is over.
	// After Stop, Next returns ErrStopped.
	Next() ([]Node, error)
	// Stop unblocks Next and releases the watcher's resources.
	Stop() error
}

// Static returns a registry of fixed addresses, each with weight 1.
func Static(addrs ...string) Registry {
	nodes := make([]Node, 0, len(addrs))
	for _, a := range addrs {
		nodes = append(nodes, Node{Addr: a, Weight: 1})
	}
	return StaticNodes(nodes...)
}

// StaticNodes returns a registry of fixed nodes, for weights and metadata.
// Duplicate addresses are dropped (the first one wins).
func StaticNodes(nodes ...Node) Registry {
	return staticRegistry{nodes: Dedup(nodes)}
}

type staticRegistry struct{ nodes []Node }

func (s staticRegistry) Watch(ctx context.Context) (Watcher, error) {
	if ctx == nil {
		return nil, ErrNilContext
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return &staticWatcher{nodes: s.nodes, stop: make(chan struct{})}, nil
}

type staticWatcher struct {
	nodes    []Node
	sent     bool // guarded by the one-caller rule of Next
	stop     chan struct{}
	stopOnce sync.Once
}

func (w *staticWatcher) Next() ([]Node, error) {
	select {
	case <-w.stop:
		return nil, ErrStopped
	default:
	}
	if !w.sent {
		w.sent = true
		return slices.Clone(w.nodes), nil
	}
	<-w.stop
	return nil, ErrStopped
}

func (w *staticWatcher) Stop() error {
	w.stopOnce.Do(func() { close(w.stop) })
	return nil
}

// Dedup returns nodes without repeated addresses, keeping the first of each
// and the original order. Addresses are compared after trimming spaces; empty
// addresses are dropped.
func Dedup(nodes []Node) []Node {
	seen := make(map[string]struct{}, len(nodes))
	out := make([]Node, 0, len(nodes))
	for _, n := range nodes {
		n.Addr = strings.TrimSpace(n.Addr)
		if n.Addr == "" {
			continue
		}
		if _, dup := seen[n.Addr]; dup {
			continue
		}
		seen[n.Addr] = struct{}{}
		out = append(out, n)
	}
	return out
}

// FailureReporter is implemented by Watchers that want to hear when the client
// fails to reach a node, so that they can refresh early (the DNS registry
// re-resolves). The client finds it by type assertion. ReportFailure must not
// block and may be called from many goroutines at once.
type FailureReporter interface {
	ReportFailure(addr string, err error)
}
