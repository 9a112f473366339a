package picker

import (
	"math/rand/v2"
	"time"
	"unsafe"
)

// Virtualize makes p draw its random numbers from a generator seeded with
// seed and, for LeastLoaded, read the time from now (when not nil), so that
// tests and simulations get the same picks on every run. The seeded
// generator is not safe for concurrent use: a virtualized picker serves one
// goroutine. Call it before the first Update.
func Virtualize(p Picker, now func() time.Duration, seed uint64) Picker {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	switch p := p.(type) {
	case *roundRobin:
		p.rand.seeded = r
		p.next.v.Store(r.Uint64())
	case *random:
		p.rand.seeded = r
	case *leastLoaded:
		p.rand.seeded = r
		if now != nil {
			p.now = func() int64 { return int64(now()) }
		}
	case *leastRequest:
		p.rand.seeded = r
	case *weightedRoundRobin:
		p.rand.seeded = r
		p.next.v.Store(r.Uint64())
	case *consistentHash:
		p.rand.seeded = r
	case *pickFirst:
	default:
		panic("picker.Virtualize: unknown picker")
	}
	return p
}

// Exp is leastLoaded's approximation of math.Exp.
var Exp = exp

// RingPoints returns the ring of a ConsistentHash.
func RingPoints(p Picker) []uint64 { return p.(*consistentHash).snap.Load().points }

// NodeStateSize is the size of a node's hot state, which the pick benchmarks
// depend on: one cache line.
const NodeStateSize = unsafe.Sizeof(nodeState{})
