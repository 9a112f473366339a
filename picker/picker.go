package picker

import (
	"context"
	"errors"
	"time"

	"github.com/lbrpc/lbrpc/registry"
)

// ErrNoNodes is returned by Pick when there is no node to pick.
var ErrNoNodes = errors.New("lbrpc: no nodes available")

// Picker chooses a node for each attempt.
type Picker interface {
	// Update replaces the set of nodes fit to serve. The client never calls
	// Update concurrently with itself, but does call it concurrently with
	// Pick; picks in flight must not block on it. The slice belongs to the
	// caller: keep a copy, not the slice.
	Update(nodes []registry.Node)
	// Pick chooses a node for one attempt, or returns ErrNoNodes.
	// It is safe for concurrent use and does not block.
	Pick(ctx context.Context, info Info) (Result, error)
}

// Info describes the attempt a node is picked for.
type Info struct {
	// ServiceMethod is the "Service.Method" being called.
	ServiceMethod string
	// Tried lists the addresses earlier attempts of the same call went to.
	// Pickers prefer a node not in it.
	Tried []string
}

// Result is a picker's choice.
type Result struct {
	// Node is the chosen node.
	Node registry.Node
	// Done, if not nil, is called exactly once when the attempt ends.
	Done func(DoneInfo)
}

// DoneInfo is the outcome of one attempt.
type DoneInfo struct {
	// Err is the attempt's error, nil on success. An rpc.ServerError means
	// the node answered: the method ran and failed.
	Err error
	// Latency is the time from pick to outcome.
	Latency time.Duration
}

// tried reports whether addr is in the list. Lists are short (one entry per
// retry), so a scan beats a map.
func tried(list []string, addr string) bool {
	for _, a := range list {
		if a == addr {
			return true
		}
	}
	return false
}
