package picker_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/lbrpc/lbrpc/picker"
)

func TestLeastRequest(t *testing.T) {
	// Calls held in flight on some nodes steer picks to the others.
	tests := []struct {
		name string
		hold map[int]int // calls in flight per node
		n    int
		want []string // where the next picks may go
	}{
		{"two nodes, one busy", map[int]int{0: 1}, 2, []string{addr(1)}},
		// Three nodes: the pair (0, 2) is drawn too; 2 has fewer.
		{"three nodes, two busy", map[int]int{0: 3, 2: 1}, 3, []string{addr(1), addr(2)}},
		{"equal load", map[int]int{0: 2, 1: 2}, 2, []string{addr(0), addr(1)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := picker.Virtualize(picker.LeastRequest(), nil, 5)
			p.Update(nodes(tc.n))
			var held []func(picker.DoneInfo)
			for i, k := range tc.hold {
				// Hold k calls on node i: the others are "tried".
				others := addrs(0, tc.n)
				others = append(others[:i:i], others[i+1:]...)
				for range k {
					res, _ := p.Pick(context.Background(), picker.Info{Tried: others})
					if res.Node.Addr != addr(i) {
						t.Fatalf("picked %s with all other nodes tried, want %s", res.Node.Addr, addr(i))
					}
					held = append(held, res.Done)
				}
			}
			for range 50 {
				res, _ := p.Pick(context.Background(), picker.Info{})
				res.Done(picker.DoneInfo{Latency: time.Millisecond})
				if !slices.Contains(tc.want, res.Node.Addr) {
					t.Fatalf("picked %s, want one of %v", res.Node.Addr, tc.want)
				}
			}
			loads := p.(picker.LoadReporter).Loads()
			for i, k := range tc.hold {
				if loads[i].InFlight != int64(k) {
					t.Fatalf("loads = %+v, want %d in flight on node %d", loads, k, i)
				}
			}
			for _, done := range held {
				done(picker.DoneInfo{})
			}
		})
	}
}
