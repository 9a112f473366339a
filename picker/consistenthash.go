package picker

import (
	"context"
	"math"
	"math/bits"
	"sync"
	"sync/atomic"

	"github.com/lbrpc/lbrpc/registry"
)

// ConsistentHash returns a picker that sends the calls of one key (set with
// WithKey) to one node, so that a node's cache or session serves the key,
// and that moves few keys when the set changes: adding or removing one of N
// nodes moves about 1/N of the keys. It is a ring hash: each node owns
// WithReplicas points (default 100) on a ring of 64-bit hashes and a key
// goes to the owner of the first point at or after the key's hash. The hash
// is fixed (FNV-1a, then murmur3's finaliser), so clients with the same node
// set agree on every key.
//
// Load is bounded (Mirrokni, Thorup and Zadimoghaddam, "Consistent Hashing
// with Bounded Loads"): a node takes a call only while its calls in flight
// stay within c times the mean, c = 1.25 unless set with WithLoadBound;
// past that, the key walks on along the ring to the next node under the
// bound. A hot key thus spills over to a few neighbours instead of
// swamping its node, and returns to it as the load falls.
//
// A call without a key goes to the node with fewer calls in flight of two
// drawn at random, as with LeastRequest, or, if that node is at the bound,
// where a random key would. A retry walks on from the key's node to the
// first node not in Info.Tried. Drained nodes (Weight 0) are off the ring
// unless every node is drained; other weights are not used. What the
// picker counts survives Update for the nodes that stay, and so do the
// calls in flight of a node that leaves and returns. It implements
// LoadReporter (in-flight calls and failures).
//
// Update builds the ring in O(points); the ring is capped at 2^20 points
// (about 12 MiB) by giving each node fewer. Past the cap (above 10,485
// nodes with the default 100 replicas) a change of the set can change
// every node's number of points, and then moves more than 1/N of the keys.
// Pick and Done do not block or allocate; the picker is safe for concurrent
// use.
func ConsistentHash(opts ...ConsistentHashOption) Picker {
	p := &consistentHash{replicas: 100, c: 1.25}
	for _, o := range opts {
		if o != nil {
			o(p)
		}
	}
	p.snap.Store(&ringSnapshot{})
	return p
}

// ConsistentHashOption configures ConsistentHash.
type ConsistentHashOption func(*consistentHash)

// WithReplicas sets the number of points each node owns on ConsistentHash's
// ring. More points spread keys more evenly (the spread of shares falls as
// one over the square root of n) at the cost of memory and Update time.
// n <= 0 keeps the default, 100.
func WithReplicas(n int) ConsistentHashOption {
	return func(p *consistentHash) {
		if n > 0 {
			p.replicas = n
		}
	}
}

// WithLoadBound sets c, the most calls in flight a node of ConsistentHash
// takes as a multiple of the mean: ceil(c × (calls in flight + 1) / nodes).
// Lower keeps load more even and moves more calls off their key's node;
// math.Inf(1) turns the bound off. c must be at least 1; other values (and
// NaN) keep the default, 1.25.
func WithLoadBound(c float64) ConsistentHashOption {
	return func(p *consistentHash) {
		if c >= 1 {
			p.c = c
		}
	}
}

// WithKey returns a copy of ctx that carries key, which ConsistentHash
// hashes to choose the node. The empty string is a key like any other.
func WithKey(ctx context.Context, key string) context.Context {
	return context.WithValue(ctx, keyCtx{}, key)
}

// KeyFrom returns the key WithKey put in ctx, and whether there is one.
func KeyFrom(ctx context.Context) (string, bool) {
	if ctx == nil {
		return "", false
	}
	k, ok := ctx.Value(keyCtx{}).(string)
	return k, ok
}

type keyCtx struct{}

// maxPoints caps the ring.
const maxPoints = 1 << 20

type consistentHash struct {
	snap atomic.Pointer[ringSnapshot]
	mu   sync.Mutex // serialises Update
	rand source

	replicas int
	c        float64
}

// ringSnapshot is one node set and its ring; never changed once stored.
type ringSnapshot struct {
	loadSnapshot
	// total counts the calls in flight on the nodes that take calls (those
	// of nodes): the bound's mean is of them, not of calls still in flight
	// on drained or removed nodes. Made anew, on a line of its own, by each
	// Update, from the nodes' counts; the nodes count in it from then on.
	total *alone[atomic.Int64]
	// points is the sorted ring. A point is a hash whose low ownerBits
	// bits are replaced by the index of its node in serving.
	points    []uint64
	ownerBits uint
	// index[h>>shift] is the first point at or after the start of h's
	// bucket; there are at least as many buckets as points, so a lookup
	// scans about one point whatever the ring's size.
	index []uint32
	shift uint
}

func (p *consistentHash) Update(nodes []registry.Node) {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := p.snap.Load()
	s := &ringSnapshot{loadSnapshot: *newLoadSnapshot(&old.loadSnapshot, nodes, p.fresh), total: new(alone[atomic.Int64])}
	s.build(p.replicas)
	// A call that starts or ends while this runs may be counted in the old
	// total rather than the new one: the new total is off by those few
	// until the next Update counts afresh.
	var sum int64
	serving := make(map[*nodeState]bool, len(s.states))
	for _, st := range s.states {
		st.total.Store(&s.total.v)
		sum += st.load()
		serving[st] = true
	}
	s.total.v.Add(sum)
	for _, st := range old.all {
		if !serving[st] {
			st.total.Store(nil) // removed or drained: its calls no longer count
		}
	}
	p.snap.Store(s)
}

func (p *consistentHash) fresh(addr string) *nodeState { return newNodeState(addr, nil) }

func (p *consistentHash) Pick(ctx context.Context, info Info) (Result, error) {
	s := p.snap.Load()
	n := len(s.nodes)
	if n == 0 {
		return Result{}, ErrNoNodes
	}
	bound := p.bound(s, n)
	var i int
	if key, ok := KeyFrom(ctx); ok {
		i = s.lookup(hashString(key), bound, info.Tried)
	} else {
		r := p.rand.uint64()
		var j int
		i, j = p2c(&s.loadSnapshot, r, info.Tried)
		if i != j && fewer(s.states[j], s.states[i]) {
			i = j
		}
		if s.states[i].load() >= bound {
			i = s.lookup(mix(r), bound, info.Tried)
		}
	}
	st := s.states[i]
	st.pick()
	return Result{Node: s.nodes[i], Done: st.done, st: st}, nil
}

func (p *consistentHash) Loads() []Load { return p.snap.Load().loads() }

// bound is the most calls in flight a node of s may have after taking one
// more.
func (p *consistentHash) bound(s *ringSnapshot, n int) int64 {
	b := math.Ceil(p.c * float64(max(s.total.v.Load(), 0)+1) / float64(n))
	if b >= math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(b)
}

func (s *ringSnapshot) build(replicas int) {
	n := len(s.nodes)
	if n == 0 {
		return
	}
	r := replicas
	if r > maxPoints/n { // not n*r > maxPoints: that can overflow
		r = max(1, maxPoints/n)
	}
	s.ownerBits = uint(bits.Len(uint(n - 1)))
	mask := uint64(1)<<s.ownerBits - 1
	pts := make([]uint64, 0, n*r)
	for i, n := range s.nodes {
		base := fnv1a(n.Addr)
		for k := range r {
			pts = append(pts, mix(base+uint64(k)*0x9e3779b97f4a7c15)&^mask|uint64(i))
		}
	}
	// Sort by buckets of the top bits, then by insertion within them
	// (about one point each): O(points), where a comparison sort of a
	// million points takes ten times as long.
	buckets := 1 << bits.Len(uint(len(pts)-1))
	s.shift = uint(64 - bits.Len(uint(buckets-1)))
	next := make([]uint32, buckets)
	for _, pt := range pts {
		next[pt>>s.shift]++
	}
	s.index = make([]uint32, buckets)
	var sum uint32
	for b, c := range next {
		s.index[b], next[b] = sum, sum
		sum += c
	}
	s.points = make([]uint64, len(pts))
	for _, pt := range pts {
		b := pt >> s.shift
		s.points[next[b]] = pt
		next[b]++
	}
	for i := 1; i < len(s.points); i++ {
		for j := i; j > 0 && s.points[j] < s.points[j-1]; j-- {
			s.points[j], s.points[j-1] = s.points[j-1], s.points[j]
		}
	}
}

// lookup returns the index of the node for hash h: the owner of the first
// point at or after h, or the first after it on the ring that is under
// bound and not in list. If every node not in list is at the bound, the
// first of them; if every node is in list, the key's own node.
func (s *ringSnapshot) lookup(h uint64, bound int64, list []string) int {
	i := int(s.index[h>>s.shift])
	for i < len(s.points) && s.points[i] < h {
		i++
	}
	if i == len(s.points) {
		i = 0
	}
	mask := uint64(1)<<s.ownerBits - 1
	first := -1
	for k, j := 0, i; k < len(s.points); k++ {
		x := int(s.points[j] & mask)
		st := s.states[x]
		if len(list) == 0 || !tried(list, st.addr) {
			if st.load() < bound {
				return x
			}
			if first < 0 {
				first = x
			}
		}
		if j++; j == len(s.points) {
			j = 0
		}
	}
	if first >= 0 {
		return first
	}
	return int(s.points[i] & mask)
}

// hashString is the ring's hash of a key.
func hashString(s string) uint64 { return mix(fnv1a(s)) }

// fnv1a is the 64-bit FNV-1a hash.
func fnv1a(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// mix is murmur3's 64-bit finaliser: it spreads FNV's weak high bits.
func mix(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}
