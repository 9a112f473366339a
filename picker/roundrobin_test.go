package picker_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/lbrpc/lbrpc/picker"
	"github.com/lbrpc/lbrpc/registry"
)

// next returns the address after a in ns, cyclically.
func next(t *testing.T, ns []registry.Node, a string) string {
	t.Helper()
	i := slices.IndexFunc(ns, func(n registry.Node) bool { return n.Addr == a })
	if i < 0 {
		t.Fatalf("%q is not in the node set", a)
	}
	return ns[(i+1)%len(ns)].Addr
}

func TestRoundRobinEven(t *testing.T) {
	const rounds = 7
	for _, n := range []int{1, 2, 3, 10, 64} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			p := picker.RoundRobin()
			ns := nodes(n)
			p.Update(ns)
			counts := map[string]int{}
			for range rounds * n {
				counts[pick(t, p).Addr]++
			}
			for _, node := range ns {
				if got := counts[node.Addr]; got != rounds {
					t.Fatalf("%s picked %d times in %d picks, want %d", node.Addr, got, rounds*n, rounds)
				}
			}
		})
	}
}

func TestRoundRobinInTurn(t *testing.T) {
	p := picker.RoundRobin()
	ns := nodes(5)
	p.Update(ns)
	prev := pick(t, p).Addr
	for range 20 {
		got := pick(t, p).Addr
		if want := next(t, ns, prev); got != want {
			t.Fatalf("picked %q after %q, want %q", got, prev, want)
		}
		prev = got
	}
}

func TestRoundRobinRandomOffset(t *testing.T) {
	// Pickers start at a random node. With 10 nodes, 50 pickers all
	// starting at the same one has a chance of 1e-49.
	ns := nodes(10)
	first := map[string]int{}
	for range 50 {
		p := picker.RoundRobin()
		p.Update(ns)
		first[pick(t, p).Addr]++
	}
	if len(first) < 2 {
		t.Fatalf("50 round robin pickers all started at %v, want random offsets", first)
	}
}

func TestRoundRobinUpdateKeepsTurn(t *testing.T) {
	// An Update with the same nodes, between picks, continues the cycle
	// rather than starting it over.
	ns := nodes(5)
	for range 20 { // pickers with many offsets
		p := picker.RoundRobin()
		p.Update(ns)
		prev := pick(t, p).Addr
		for range 10 {
			p.Update(slices.Clone(ns))
			got := pick(t, p).Addr
			if want := next(t, ns, prev); got != want {
				t.Fatalf("after Update: picked %q after %q, want %q", got, prev, want)
			}
			prev = got
		}
	}
}

func TestRoundRobinUpdateEvenAcross(t *testing.T) {
	// Updates between picks do not skew the spread.
	p := picker.RoundRobin()
	ns := nodes(4)
	p.Update(ns)
	counts := map[string]int{}
	for i := range 400 {
		if i%3 == 0 {
			p.Update(ns)
		}
		counts[pick(t, p).Addr]++
	}
	for _, node := range ns {
		if got := counts[node.Addr]; got != 100 {
			t.Fatalf("counts = %v, want 100 each", counts)
		}
	}
}

func TestRoundRobinNewNodes(t *testing.T) {
	// A node added by Update gets its turn within the next round.
	p := picker.RoundRobin()
	p.Update(nodes(3))
	for range 5 {
		pick(t, p)
	}
	grown := nodes(4)
	p.Update(grown)
	counts := map[string]int{}
	for range len(grown) {
		counts[pick(t, p).Addr]++
	}
	for _, node := range grown {
		if counts[node.Addr] != 1 {
			t.Fatalf("first round after adding %s: counts %v, want each node once", addr(3), counts)
		}
	}
}

func TestRoundRobinRemovedNodes(t *testing.T) {
	p := picker.RoundRobin()
	p.Update(nodes(4))
	pick(t, p)
	shrunk := nodes(4)[1:3]
	p.Update(shrunk)
	counts := map[string]int{}
	for range 10 {
		counts[pick(t, p).Addr]++
	}
	if counts[addr(1)] != 5 || counts[addr(2)] != 5 {
		t.Fatalf("counts after removal = %v, want %s and %s 5 times each, nothing else", counts, addr(1), addr(2))
	}
}

func TestRandomUniform(t *testing.T) {
	// Over 30000 picks each of 3 nodes expects 10000, with a standard
	// deviation of about 82: the bounds below are 30 deviations away.
	const picks = 30000
	p := picker.Random()
	ns := nodes(3)
	p.Update(ns)
	counts := map[string]int{}
	for range picks {
		counts[pick(t, p).Addr]++
	}
	for _, node := range ns {
		got := counts[node.Addr]
		if got < picks*25/100 || got > picks*42/100 {
			t.Fatalf("%s picked %d of %d times, want between 25%% and 42%%; counts %v", node.Addr, got, picks, counts)
		}
	}
}

// BenchmarkPick times a pick and its Done, for every picker and set size.
func BenchmarkPick(b *testing.B) {
	for _, bp := range builtins {
		b.Run(bp.name, func(b *testing.B) {
			for _, n := range []int{3, 100, 10000} {
				b.Run(fmt.Sprint(n), func(b *testing.B) {
					p := bp.new()
					p.Update(nodes(n))
					b.ReportAllocs()
					b.ResetTimer()
					b.RunParallel(func(pb *testing.PB) {
						ctx := context.Background()
						info := picker.Info{ServiceMethod: "HelloService.Say"}
						done := picker.DoneInfo{Latency: time.Millisecond}
						for pb.Next() {
							res, err := p.Pick(ctx, info)
							if err != nil {
								b.Fatal(err)
							}
							res.Finish(done)
						}
					})
				})
			}
		})
	}
}

// BenchmarkPickTried times the pick of a retry, with two nodes tried.
func BenchmarkPickTried(b *testing.B) {
	for _, bp := range builtins {
		b.Run(bp.name, func(b *testing.B) {
			p := bp.new()
			p.Update(nodes(3))
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				info := picker.Info{ServiceMethod: "HelloService.Say", Tried: []string{addr(0), addr(1)}}
				for pb.Next() {
					res, err := p.Pick(ctx, info)
					if err != nil {
						b.Fatal(err)
					}
					res.Finish(picker.DoneInfo{Latency: time.Millisecond})
				}
			})
		})
	}
}
