package picker_test

import (
	"context"
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/lbrpc/lbrpc/picker"
)

// keyCtx returns a context with the key of user i.
func keyCtx(i int) context.Context {
	return picker.WithKey(context.Background(), fmt.Sprint("user-", i))
}

// mapping picks once per key (ending each call at once) and returns the
// node of each key.
func mapping(t *testing.T, p picker.Picker, keys int) []string {
	t.Helper()
	out := make([]string, keys)
	for i := range out {
		out[i] = pickCtx(t, p, keyCtx(i)).Addr
	}
	return out
}

func TestConsistentHashSameKeySameNode(t *testing.T) {
	// A key maps to one node, in one picker and in another with the same
	// set: the hash is fixed, so clients agree.
	p, q := picker.ConsistentHash(), picker.ConsistentHash()
	p.Update(nodes(10))
	q.Update(nodes(10))
	a, b, c := mapping(t, p, 10000), mapping(t, p, 10000), mapping(t, q, 10000)
	for i := range a {
		if a[i] != b[i] || a[i] != c[i] {
			t.Fatalf("key %d went to %s, then %s, and %s in another picker", i, a[i], b[i], c[i])
		}
	}
}

func TestConsistentHashSpread(t *testing.T) {
	// 100 points per node spread 10,000 keys within about ±30% of even.
	for _, n := range []int{3, 10, 50} {
		t.Run(fmt.Sprint(n, " nodes"), func(t *testing.T) {
			p := picker.ConsistentHash()
			p.Update(nodes(n))
			counts := map[string]int{}
			for _, a := range mapping(t, p, 10000) {
				counts[a]++
			}
			mean := 10000.0 / float64(n)
			for _, nd := range nodes(n) {
				if got := float64(counts[nd.Addr]); got < 0.7*mean || got > 1.3*mean {
					t.Errorf("%s has %v keys, want within 30%% of %v", nd.Addr, got, mean)
				}
			}
		})
	}
}

func TestConsistentHashMovesFewKeys(t *testing.T) {
	// Adding or removing one of N nodes moves about 1/N of the keys, and
	// only the keys of that node.
	const keys = 10000
	for _, n := range []int{5, 10, 20, 50} {
		t.Run(fmt.Sprint(n, " nodes"), func(t *testing.T) {
			p := picker.ConsistentHash()
			p.Update(nodes(n))
			before := mapping(t, p, keys)

			p.Update(nodes(n + 1)) // add node n
			added := mapping(t, p, keys)
			moved := 0
			for i := range before {
				if added[i] != before[i] {
					moved++
					if added[i] != addr(n) {
						t.Fatalf("key %d moved from %s to %s, not to the new node", i, before[i], added[i])
					}
				}
			}
			checkMoved(t, "adding one", moved, keys, n+1)

			gone := addr(n / 2)
			rest := append(nodes(n)[:n/2], nodes(n)[n/2+1:]...)
			p.Update(rest) // remove node n/2
			removed := mapping(t, p, keys)
			moved = 0
			for i := range before {
				if removed[i] != before[i] {
					moved++
					if before[i] != gone {
						t.Fatalf("key %d moved from %s to %s, but its node stayed", i, before[i], removed[i])
					}
				}
			}
			checkMoved(t, "removing one", moved, keys, n)
		})
	}
}

func checkMoved(t *testing.T, what string, moved, keys, n int) {
	t.Helper()
	frac := float64(moved) / float64(keys)
	t.Logf("%s of %d nodes moved %.4f of the keys (1/N = %.4f)", what, n, frac, 1/float64(n))
	if frac < 0.5/float64(n) || frac > 2/float64(n) {
		t.Errorf("%s of %d nodes moved %.4f of the keys, want between 0.5/N and 2/N", what, n, frac)
	}
}

func TestConsistentHashBoundedLoad(t *testing.T) {
	// Calls held in flight (no Done): no node ever has more than
	// ceil(c × total / N), neither for one hot key nor for many keys.
	tests := []struct {
		name  string
		opts  []picker.ConsistentHashOption
		c     float64
		key   func(i int) context.Context
		nodes int
	}{
		{"hot key", nil, 1.25, func(int) context.Context { return keyed }, 10},
		{"many keys", nil, 1.25, keyCtx, 10},
		{"hot key, c=1", []picker.ConsistentHashOption{picker.WithLoadBound(1)}, 1, func(int) context.Context { return keyed }, 7},
		{"hot key, c=2", []picker.ConsistentHashOption{picker.WithLoadBound(2)}, 2, func(int) context.Context { return keyed }, 10},
		{"bad c keeps 1.25", []picker.ConsistentHashOption{picker.WithLoadBound(0.5), picker.WithLoadBound(math.NaN())}, 1.25, func(int) context.Context { return keyed }, 10},
		{"mixed with keyless", nil, 1.25, func(i int) context.Context {
			if i%3 == 0 {
				return context.Background()
			}
			return keyed
		}, 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := picker.Virtualize(picker.ConsistentHash(tc.opts...), nil, 6)
			lr := p.(picker.LoadReporter)
			p.Update(nodes(tc.nodes))
			var held []func(picker.DoneInfo)
			for i := range 1000 {
				res, err := p.Pick(tc.key(i), picker.Info{})
				if err != nil {
					t.Fatal(err)
				}
				held = append(held, res.Done)
				// The bound holds for the node that took the call, at the
				// time it took it.
				var total, mine int64
				for _, l := range lr.Loads() {
					total += l.InFlight
					if l.Addr == res.Node.Addr {
						mine = l.InFlight
					}
				}
				if bound := int64(math.Ceil(tc.c * float64(total) / float64(tc.nodes))); mine > bound {
					t.Fatalf("pick %d: %s took a call to %d in flight, over the bound %d (%d in flight in all)", i, res.Node.Addr, mine, bound, total)
				}
				// End some calls, so that the total moves both ways.
				if i%4 == 3 {
					held[i/2](picker.DoneInfo{})
					held[i/2] = func(picker.DoneInfo) {}
				}
			}
			for _, done := range held {
				done(picker.DoneInfo{})
			}
		})
	}
}

func TestConsistentHashUnbounded(t *testing.T) {
	// With the bound off, a hot key stays on its node however loaded.
	p := picker.ConsistentHash(picker.WithLoadBound(math.Inf(1)))
	p.Update(nodes(5))
	seen := map[string]int{}
	var held []func(picker.DoneInfo)
	for range 100 {
		res, _ := p.Pick(keyed, picker.Info{})
		seen[res.Node.Addr]++
		held = append(held, res.Done)
	}
	if len(seen) != 1 {
		t.Fatalf("hot key went to %v, want one node", seen)
	}
	for _, done := range held {
		done(picker.DoneInfo{})
	}
}

func TestConsistentHashHotKeyReturns(t *testing.T) {
	// A key pushed off its node by load goes back when the load falls.
	p := picker.ConsistentHash()
	p.Update(nodes(4))
	home := pickCtx(t, p, keyed).Addr
	var held []func(picker.DoneInfo)
	spilled := false
	for range 20 {
		res, _ := p.Pick(keyed, picker.Info{})
		spilled = spilled || res.Node.Addr != home
		held = append(held, res.Done)
	}
	if !spilled {
		t.Fatal("20 calls in flight for one key on 4 nodes never left its node")
	}
	for _, done := range held {
		done(picker.DoneInfo{})
	}
	if got := pickCtx(t, p, keyed).Addr; got != home {
		t.Fatalf("after the load fell the key went to %s, want its node %s", got, home)
	}
}

func TestConsistentHashTried(t *testing.T) {
	// A retry walks on along the ring: the same next node every time.
	p := picker.ConsistentHash()
	p.Update(nodes(10))
	for i := range 200 {
		ctx := keyCtx(i)
		first := pickCtx(t, p, ctx).Addr
		second := pickCtx(t, p, ctx, first).Addr
		if second == first {
			t.Fatalf("key %d: retry went to the tried node %s", i, first)
		}
		if again := pickCtx(t, p, ctx, first).Addr; again != second {
			t.Fatalf("key %d: retries went to %s then %s, want the same node", i, second, again)
		}
	}
}

func TestConsistentHashKeyless(t *testing.T) {
	// Calls without a key spread over the nodes (and keep to the bound:
	// see TestConsistentHashBoundedLoad).
	p := picker.Virtualize(picker.ConsistentHash(), nil, 8)
	p.Update(nodes(4))
	for a, got := range share(t, p, func(int) context.Context { return context.Background() }, 4000) {
		if !near(got, 0.25, 0.05) {
			t.Errorf("%s got %.3f of the keyless calls, want 0.25 ± 0.05", a, got)
		}
	}
}

func TestConsistentHashReplicas(t *testing.T) {
	// Fewer points spread keys less evenly; huge rings are capped; n <= 0
	// keeps the default.
	spread := func(opts ...picker.ConsistentHashOption) float64 {
		p := picker.ConsistentHash(opts...)
		p.Update(nodes(10))
		counts := map[string]float64{}
		for _, a := range mapping(t, p, 10000) {
			counts[a]++
		}
		lo, hi := math.Inf(1), 0.0
		for _, nd := range nodes(10) {
			lo, hi = min(lo, counts[nd.Addr]), max(hi, counts[nd.Addr])
		}
		return hi / lo
	}
	def, one, many, zero := spread(), spread(picker.WithReplicas(1)), spread(picker.WithReplicas(1000)), spread(picker.WithReplicas(0), picker.WithReplicas(-3))
	t.Logf("largest/smallest share: 1 point %.2f, 100 points %.2f, 1000 points %.2f", one, def, many)
	if !(one > def && def > many) {
		t.Errorf("spread with 1, 100, 1000 points: %.2f, %.2f, %.2f; want it to shrink", one, def, many)
	}
	if zero != def {
		t.Errorf("WithReplicas(0) spread %.2f, want the default's %.2f", zero, def)
	}

	p := picker.ConsistentHash(picker.WithReplicas(1 << 20))
	p.Update(nodes(20)) // 20 × 2^20 points asked for, 2^20 built
	mapping(t, p, 100)
}

func TestWithKey(t *testing.T) {
	ctx := context.Background()
	if k, ok := picker.KeyFrom(ctx); ok || k != "" {
		t.Fatalf("KeyFrom(no key) = %q, %v", k, ok)
	}
	for _, key := range []string{"", "user-1"} {
		if k, ok := picker.KeyFrom(picker.WithKey(ctx, key)); !ok || k != key {
			t.Fatalf("KeyFrom(WithKey(%q)) = %q, %v", key, k, ok)
		}
	}
	inner := picker.WithKey(picker.WithKey(ctx, "outer"), "inner")
	if k, _ := picker.KeyFrom(inner); k != "inner" {
		t.Fatalf("KeyFrom of a key set twice = %q, want the last", k)
	}
}

func TestConsistentHashRingSorted(t *testing.T) {
	for _, n := range []int{1, 2, 3, 100, 5000} {
		p := picker.ConsistentHash()
		p.Update(nodes(n))
		if pts := picker.RingPoints(p); !slices.IsSorted(pts) || len(pts) != min(n*100, 1<<20) {
			t.Fatalf("%d nodes: ring of %d points, sorted %v", n, len(pts), slices.IsSorted(pts))
		}
	}
}

// The ring is capped at 2^20 points by giving each node fewer, even for a
// WithReplicas so large that nodes × replicas overflows.
func TestConsistentHashHugeReplicas(t *testing.T) {
	p := picker.ConsistentHash(picker.WithReplicas(math.MaxInt))
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("Update with WithReplicas(MaxInt) and 2 nodes panicked: %v", r)
		}
	}()
	p.Update(nodes(2)) // 2 × MaxInt wraps to -2
	if got := len(picker.RingPoints(p)); got > 1<<20 {
		t.Fatalf("ring has %d points, want at most 2^20", got)
	}
}

// The bound is ceil(c × (calls in flight + 1) / nodes) over the nodes that
// take calls: calls stuck on a node that was removed or drained (the slow
// node just ejected) do not loosen it for the rest.
func TestConsistentHashBoundIgnoresRemovedNodes(t *testing.T) {
	for _, how := range []string{"removed", "drained"} {
		t.Run(how, func(t *testing.T) {
			p := picker.ConsistentHash()
			lr := p.(picker.LoadReporter)
			ns := nodes(3)
			p.Update(ns[2:]) // only node 2
			var pending []picker.Result
			for range 100 {
				res, err := p.Pick(context.Background(), picker.Info{})
				if err != nil {
					t.Fatal(err)
				}
				pending = append(pending, res) // stuck on node 2
			}
			if how == "removed" {
				p.Update(ns[:2])
			} else {
				ns[2].Weight = 0
				p.Update(ns)
			}
			ctx := picker.WithKey(context.Background(), "hot")
			const calls = 20
			for range calls {
				res, err := p.Pick(ctx, picker.Info{})
				if err != nil {
					t.Fatal(err)
				}
				pending = append(pending, res)
			}
			loads := map[string]int64{}
			for _, l := range lr.Loads() {
				loads[l.Addr] = l.InFlight
			}
			// With 20 calls in flight on the 2 serving nodes, a node may have
			// ceil(1.25 × 20 / 2) = 13.
			bound := int64(math.Ceil(1.25 * calls / 2))
			for _, a := range []string{addr(0), addr(1)} {
				if loads[a] > bound {
					t.Errorf("node %s has %d of the %d calls in flight on the 2 serving nodes, bound %d (loads %v)", a, loads[a], calls, bound, loads)
				}
			}
			for _, res := range pending {
				res.Finish(picker.DoneInfo{})
			}
		})
	}
}

// A double Done (a caller's bug) on one node must not leave ConsistentHash's
// in-flight total low while other nodes have calls in flight: the bound
// would then be far tighter than ceil(1.25 × (in flight + 1) / nodes), and
// keys would spill off their node with the cluster nearly idle.
func TestConsistentHashDoubleDoneTotal(t *testing.T) {
	p := picker.ConsistentHash()
	lr := p.(picker.LoadReporter)
	ns := nodes(3)

	// Find a key and the node it maps to when all are idle.
	p.Update(ns)
	ctx := picker.WithKey(context.Background(), "hot")
	res, err := p.Pick(ctx, picker.Info{})
	if err != nil {
		t.Fatal(err)
	}
	res.Finish(picker.DoneInfo{})
	home := res.Node.Addr
	var other int
	for i, n := range ns {
		if n.Addr != home {
			other = i
			break
		}
	}

	// 30 calls in flight on another node.
	p.Update(ns[other : other+1])
	var held []picker.Result
	for range 30 {
		r, err := p.Pick(context.Background(), picker.Info{})
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, r)
	}
	p.Update(ns) // the total counts the 30

	// 30 calls on the key's node, each Done twice by a buggy caller.
	for range 30 {
		r, err := p.Pick(ctx, picker.Info{})
		if err != nil {
			t.Fatal(err)
		}
		r.Done(picker.DoneInfo{})
		r.Done(picker.DoneInfo{})
	}

	// With 30 in flight, 3 nodes and c = 1.25, the key's node takes
	// j more while j < ceil(1.25 × (31 + j) / 3): 20 calls all stay home.
	for range 20 {
		r, err := p.Pick(ctx, picker.Info{})
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, r)
	}
	var got int64
	for _, l := range lr.Loads() {
		if l.Addr == home {
			got = l.InFlight
		}
	}
	for _, r := range held {
		r.Finish(picker.DoneInfo{})
	}
	if got != 20 {
		t.Fatalf("key's node took %d of 20 keyed calls: the in-flight total was left low by the double Dones (loads %v)", got, lr.Loads())
	}
}
