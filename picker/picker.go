package picker

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"
	"unsafe"

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
	// Done, if not nil, is called exactly once when the attempt ends, by
	// Finish (or directly).
	Done func(DoneInfo)

	st *nodeState // set by the built-in load-aware pickers: Finish tells it directly
}

// Finish reports the end of the attempt to the picker: it calls Done, if
// set. For the built-in pickers it skips the call through Done's func value,
// a cache miss per call when the nodes are many, unless Done was replaced
// (a picker that wraps another and decorates its Done): then it calls Done.
// Report an attempt once, by Finish or by Done.
func (r Result) Finish(d DoneInfo) {
	if r.st != nil && sameFunc(r.Done, r.st.done) {
		r.st.finish(d)
		return
	}
	if r.Done != nil {
		r.Done(d)
	}
}

// sameFunc reports whether a and b are the same func value: the same
// closure, not merely the same code. A func value is one pointer to its
// closure; comparing those reads neither closure.
func sameFunc(a, b func(DoneInfo)) bool {
	return *(*unsafe.Pointer)(unsafe.Pointer(&a)) == *(*unsafe.Pointer)(unsafe.Pointer(&b))
}

// DoneInfo is the outcome of one attempt.
type DoneInfo struct {
	// Err is the attempt's error, nil on success. An rpc.ServerError means
	// the node answered: the method ran and failed.
	Err error
	// Latency is the time from pick to outcome.
	Latency time.Duration
}

// Load is what a load-aware picker knows of one node.
type Load struct {
	// Addr is the node's address.
	Addr string
	// InFlight is the number of attempts picked for the node whose Done has
	// not been called yet.
	InFlight int64
	// Latency is the node's latency estimate as of its last update:
	// LeastLoaded's peak EWMA of latency per call in flight (an answer's
	// latency divided by 1 + the node's other calls in flight), in which
	// failures count as at least its error penalty. For a caller that makes
	// one call at a time it is plain latency. Zero before the node's first
	// outcome other than a cancellation, and for pickers that do not track
	// latency.
	Latency time.Duration
	// Failures counts the node's attempts that ended in an error other than
	// an rpc.ServerError (the node answered) or context.Canceled (the caller
	// gave up), since the node joined the set.
	Failures int64
}

// LoadReporter is implemented by pickers that track per-node load:
// LeastLoaded, LeastRequest and ConsistentHash. The client finds it by type
// assertion to show load in its node state.
type LoadReporter interface {
	// Loads returns one Load per node of the set last given to Update,
	// drained nodes included, in the order of that set. It is safe for
	// concurrent use and allocates the slice it returns.
	Loads() []Load
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

// serving returns a copy of the nodes that take new calls. Weight 0 (or
// less) means "drain", for every built-in picker: such a node gets no new
// calls while another node has a positive weight. When every node is
// drained, all of them serve: a set that is all drained is more likely a
// registry that sets no weights than a request to fail every call.
func serving(nodes []registry.Node) []registry.Node {
	out := make([]registry.Node, 0, len(nodes))
	for _, n := range nodes {
		if n.Weight > 0 {
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		out = append(out, nodes...)
	}
	return out
}

// source draws the random numbers of a picker: the runtime's per-thread
// generator (math/rand/v2's top-level functions), which is safe for
// concurrent use and does not lock, unless a test seeded one.
type source struct {
	seeded *rand.Rand // tests and simulations only; not safe for concurrent use
}

func (s *source) uint64() uint64 {
	if s.seeded != nil {
		return s.seeded.Uint64()
	}
	return rand.Uint64()
}

// cacheLine is the size of a cache line on the machines Go runs on most
// (amd64, arm64's common cores).
const cacheLine = 64

// alone holds v on a cache line no other field or object shares. A picker's
// snapshot pointer is read by every pick; a counter that every pick writes,
// on the same line, would make every other core fetch the pointer again
// after each write.
type alone[T any] struct {
	_ [cacheLine]byte
	v T
	_ [cacheLine]byte
}

// below returns a number in [0, n) from the high 32 bits of r (Lemire's
// multiply-shift: no division). n must be below 2^32.
func below(r uint64, n int) int {
	return int((r >> 32) * uint64(n) >> 32)
}
