package picker

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lbrpc/lbrpc/registry"
)

// LeastLoaded returns a picker that sends each attempt to the cheaper of two
// nodes drawn at random (the power of two choices), where a node's cost is
// its latency estimate times its calls in flight plus one: Finagle's and
// Linkerd's "peak EWMA". It is the picker to use unless calls need a
// particular node: it steers away from slow, overloaded and failing nodes
// within a few calls, and it needs no weights.
//
// The cost assumes that a node's latency grows with its calls in flight, so
// each answer is measured in latency per call in flight: its latency divided
// by one plus the node's other calls in flight when it ended. A node that
// answers in 1ms with 7 other calls in flight then costs about 1ms with as
// many, not 8ms; one whose latency does grow with its load keeps costing
// latency × calls in flight. A caller that makes one call at a time sees no
// difference.
//
// The latency estimate of a node (which Loads reports) is a moving average
// of these samples that jumps at once to one above the estimate (the peak)
// and otherwise moves toward new samples with a time constant (WithDecay,
// default 10s). When comparing nodes, an estimate also decays toward zero
// while the node is not answering, so a node that was slow is tried again
// after a while rather than shunned for good. An attempt that timed out
// counts its latency, the least the node would have taken. Any other
// failure, a cancelled context aside, counts as a latency of at least
// WithErrorPenalty (default 1s), averaged in without the peak jump, so a
// node that fails fast does not look fast and its cost grows with its
// failure rate. An
// rpc.ServerError is an answer: its latency counts as is.
//
// A node that has not answered yet costs nothing while idle, so it is tried
// as soon as it is drawn, and WithNewNodePenalty (default 1s) for each call
// in flight to it, so it is not flooded before its first answer.
//
// What the picker learned of a node survives Update for as long as the node
// stays in the set; a node that leaves with calls in flight (the client
// takes out nodes that fail their checks) and returns starts afresh but for
// those calls, which are still counted. Drained nodes (Weight 0) get no calls unless every node
// is drained; other weights are not used. A retry prefers the nodes not in
// Info.Tried. The picker implements LoadReporter.
//
// Pick and Done do not block or allocate; the picker is safe for concurrent
// use. Picks read an immutable snapshot of the set, swapped by Update.
func LeastLoaded(opts ...LeastLoadedOption) Picker {
	p := &leastLoaded{
		tau:        int64(10 * time.Second),
		newPenalty: float64(time.Second),
		errPenalty: float64(time.Second),
	}
	for _, o := range opts {
		if o != nil {
			o(p)
		}
	}
	p.invTau = 1 / float64(p.tau)
	epoch := time.Now()
	p.now = func() int64 { return int64(time.Since(epoch)) }
	p.snap.Store(&loadSnapshot{})
	return p
}

// LeastLoadedOption configures LeastLoaded.
type LeastLoadedOption func(*leastLoaded)

// WithDecay sets the time constant of LeastLoaded's latency average: a
// sample's weight falls to 1/e after d. A shorter d forgets a slow spell
// sooner and trusts fewer samples. d <= 0 keeps the default, 10s.
func WithDecay(d time.Duration) LeastLoadedOption {
	return func(p *leastLoaded) {
		if d > 0 {
			p.tau = int64(d)
		}
	}
}

// WithNewNodePenalty sets the cost LeastLoaded charges for each call in
// flight to a node that has not answered yet. A large value (the default is
// 1s) means about one call at a time until the first answer; a value near
// the nodes' usual latency lets a new node take calls as fast as the others.
// d <= 0 keeps the default.
func WithNewNodePenalty(d time.Duration) LeastLoadedOption {
	return func(p *leastLoaded) {
		if d > 0 {
			p.newPenalty = float64(d)
		}
	}
}

// WithErrorPenalty sets the least latency a failed attempt counts as in
// LeastLoaded's average (failures are errors other than rpc.ServerError and
// context errors). Set it well above the latency of a healthy node, for
// example near the call timeout. d <= 0 keeps the default, 1s; values above
// about 18 minutes, the most a sample counts as, count as that.
func WithErrorPenalty(d time.Duration) LeastLoadedOption {
	return func(p *leastLoaded) {
		if d > 0 {
			p.errPenalty = float64(d)
		}
	}
}

const (
	// countBits is the width of the sample count in nodeState.batch.
	countBits = 8
	countMask = 1<<countBits - 1
	// foldEvery is how many answers a node batches before folding them into
	// its estimate. Reading the clock costs as much as a pick on some
	// machines, so Done reads it once per batch (and on a peak or a
	// failure), not per call.
	foldEvery = 16
	// maxSample caps a sample (about 18 minutes) so that a full batch
	// cannot overflow.
	maxSample = 1 << 40
)

type leastLoaded struct {
	snap atomic.Pointer[loadSnapshot]
	seen atomic.Int64 // a recent clock reading, to compare with a node that has no sample
	mu   sync.Mutex   // serialises Update

	now        func() int64 // nanoseconds on a monotonic scale
	rand       source
	tau        int64   // ns
	invTau     float64 // 1/ns
	newPenalty float64 // ns
	errPenalty float64 // ns
}

func (p *leastLoaded) Update(nodes []registry.Node) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clock()
	p.snap.Store(newLoadSnapshot(p.snap.Load(), nodes, p.fresh))
}

func (p *leastLoaded) fresh(addr string) *nodeState { return newNodeState(addr, p) }

func (p *leastLoaded) Pick(_ context.Context, info Info) (Result, error) {
	s := p.snap.Load()
	if len(s.nodes) == 0 {
		return Result{}, ErrNoNodes
	}
	i, j := p2c(s, p.rand.uint64(), info.Tried)
	// Both candidates' nodes are read before the costs are compared, so
	// that with many nodes their cache misses overlap those of the states
	// rather than following them.
	n, m := s.nodes[i], s.nodes[j]
	st := s.states[i]
	if i != j && p.cheaper(s.states[j], st) {
		n, st = m, s.states[j]
	}
	st.pick()
	return Result{Node: n, Done: st.done, st: st}, nil
}

func (p *leastLoaded) Loads() []Load {
	s := p.snap.Load()
	out := s.loads()
	for i, st := range s.all {
		if e := st.ewma.Load(); e != 0 {
			out[i].Latency = time.Duration(math.Float64frombits(e))
		}
	}
	return out
}

// cheaper reports whether a costs less than b. Both estimates decay at the
// same rate since their last change, so comparing them needs only the
// difference of their stamps, not the clock.
func (p *leastLoaded) cheaper(a, b *nodeState) bool {
	ea, eb := a.ewma.Load(), b.ewma.Load()
	la, lb := float64(a.load()), float64(b.load())
	switch {
	case ea != 0 && eb != 0:
		x := float64(a.stamp.Load()-b.stamp.Load()) * p.invTau
		return math.Float64frombits(ea)*(la+1)*exp(x) < math.Float64frombits(eb)*(lb+1)
	case ea == 0 && eb == 0:
		return la < lb
	case ea == 0:
		return p.newPenalty*la < p.decayed(b)*(lb+1)
	default:
		return p.decayed(a)*(la+1) < p.newPenalty*lb
	}
}

// decayed is s's estimate decayed to the last clock reading.
func (p *leastLoaded) decayed(s *nodeState) float64 {
	td := max(p.seen.Load()-s.stamp.Load(), 0)
	return math.Float64frombits(s.ewma.Load()) * exp(-float64(td)*p.invTau)
}

// observe learns from one attempt's outcome. It does not allocate, and
// reads the clock only for a node's first sample, a peak, a failure or a
// full batch.
func (p *leastLoaded) observe(s *nodeState, o outcome, latency time.Duration) {
	ns, peak := float64(latency), true
	// The latency per call in flight: the calls still in flight ran
	// alongside this one (Done has already taken it out of the count).
	if k := s.load(); k > 0 {
		ns /= float64(k + 1)
	}
	switch o {
	case cancelled:
		return
	case failed:
		ns, peak = max(ns, p.errPenalty), false
	}
	ns = min(max(ns, 1), maxSample)
	if e := s.ewma.Load(); e == 0 || peak && ns > math.Float64frombits(e) {
		p.set(s, ns, peak)
		return
	}
	// Failures fold at once (or with the next failure, if another Done is
	// folding just then): they are rare on a healthy node, and a node that
	// fails fast must not keep looking fast for a batch.
	// A full batch folds too, as soon as the Done holding the estimate lets
	// go: nothing else would empty it.
	b, ok := batch(s, ns)
	if !ok || !peak || b&countMask >= foldEvery || p.seen.Load()-s.stamp.Load() >= p.tau>>4 {
		p.fold(s)
	}
}

// batch adds the sample ns to s's batch and returns the batch, unless the
// batch is full: a Done holding the estimate was held up (it was
// preempted). The sample is then left out rather than let the count wrap;
// the batch already holds a couple of hundred.
func batch(s *nodeState, ns float64) (uint64, bool) {
	if s.batch.Load()&countMask >= countMask-64 {
		return 0, false
	}
	return s.batch.Add(uint64(ns)<<countBits | 1), true
}

// set makes ns the estimate: the node's first sample, or a peak. If another
// Done is changing the estimate, the sample joins the batch instead of
// waiting: picks and Dones never block on each other.
func (p *leastLoaded) set(s *nodeState, ns float64, peak bool) {
	st, ok := s.lockEstimate()
	if !ok {
		batch(s, ns)
		return
	}
	if e := s.ewma.Load(); e != 0 && !(peak && ns > math.Float64frombits(e)) {
		batch(s, ns) // another Done got there first
		s.stamp.Store(st)
		return
	}
	s.ewma.Store(math.Float64bits(ns))
	s.stamp.Store(max(p.clock()&^1, st))
}

// fold averages the batched samples into the estimate, weighted by the
// time since its last change. If another Done is changing the estimate, it
// leaves the batch to the next fold.
func (p *leastLoaded) fold(s *nodeState) {
	st, ok := s.lockEstimate()
	if !ok {
		return
	}
	b := s.batch.Swap(0)
	n := b & countMask
	if n == 0 {
		s.stamp.Store(st)
		return
	}
	mean := float64(b>>countBits) / float64(n)
	e := math.Float64frombits(s.ewma.Load())
	if e == 0 { // samples batched while the first one was being set
		e = mean
	}
	now := max(p.clock()&^1, st)
	w := exp(-float64(now-st) * p.invTau)
	s.ewma.Store(math.Float64bits(max(e*w+mean*(1-w), 1)))
	s.stamp.Store(now)
}

// clock reads the clock and keeps the reading for decayed.
func (p *leastLoaded) clock() int64 {
	now := p.now()
	if now-p.seen.Load() > int64(time.Millisecond) {
		p.seen.Store(now)
	}
	return now
}

// exp is math.Exp, by a Taylor polynomial near 0, where the picker's
// arguments nearly always are (stamps milliseconds apart, a decay window of
// seconds): relative error below 7e-7 there, and a third of the cost. Large
// arguments are clamped so that the result stays finite and non-zero.
func exp(x float64) float64 {
	if x > -1.0/16 && x < 1.0/16 {
		return 1 + x*(1+x*(1.0/2+x*(1.0/6)))
	}
	return math.Exp(min(max(x, -700), 700))
}
