package picker_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/lbrpc/lbrpc/picker"
	"github.com/lbrpc/lbrpc/registry"
)

// weightedNodes returns nodes a, b, c, ... with the given weights.
func weightedNodes(ws ...int) []registry.Node {
	ns := make([]registry.Node, len(ws))
	for i, w := range ws {
		ns[i] = registry.Node{Addr: string(rune('a' + i)), Weight: w}
	}
	return ns
}

// picksOf returns the addresses of n picks in a row.
func picksOf(t *testing.T, p picker.Picker, n int) []string {
	t.Helper()
	out := make([]string, n)
	for i := range out {
		out[i] = pick(t, p).Addr
	}
	return out
}

func TestWeightedRoundRobinSmooth(t *testing.T) {
	// nginx's smooth weighted round robin: the cycle, from wherever the
	// random offset starts it.
	tests := []struct {
		weights []int
		cycle   string
	}{
		{[]int{5, 1, 1}, "aabacaa"},
		{[]int{1, 1, 1}, "abc"},
		{[]int{2, 1}, "aba"},
		{[]int{10, 20}, "bab"}, // divided by the GCD: 1, 2
		{[]int{4, 2, 1}, "abacaba"},
		{[]int{3, 0, 1}, "aaca"}, // b drained
		{[]int{0, 0}, "ab"},      // all drained: equal turns
		{[]int{7}, "a"},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.weights), func(t *testing.T) {
			for seed := range uint64(5) { // several offsets
				p := picker.Virtualize(picker.WeightedRoundRobin(), nil, seed)
				p.Update(weightedNodes(tc.weights...))
				got := strings.Join(picksOf(t, p, 3*len(tc.cycle)), "")
				doubled := tc.cycle + tc.cycle
				i := strings.Index(doubled, got[:len(tc.cycle)])
				if i < 0 || got != strings.Repeat(doubled[i:i+len(tc.cycle)], 3) {
					t.Fatalf("picks %q, want a rotation of the cycle %q, repeated", got, tc.cycle)
				}
			}
		})
	}
}

func TestWeightedRoundRobinShares(t *testing.T) {
	// Exact shares over whole cycles, on each of the schedules: nginx's,
	// earliest deadline first for large sets, and scaled weights.
	many := func(n int) []int { // weights 1..10, n nodes
		ws := make([]int, n)
		for i := range ws {
			ws[i] = 1 + i%10
		}
		return ws
	}
	tests := []struct {
		name    string
		weights []int
		cycles  int
		maxGap  func(w, total int) int // longest run between two picks of a node, 0 to skip
	}{
		{"small", []int{1, 2, 3, 4}, 3, func(w, total int) int { return 2*total/w + 1 }},
		{"large weights", []int{100000, 1}, 1, nil},
		{"large set (EDF)", many(3000), 2, func(w, total int) int { return 2*total/w + 1 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := picker.Virtualize(picker.WeightedRoundRobin(), nil, 9)
			ns := nodes(len(tc.weights))
			total := 0
			for i, w := range tc.weights {
				ns[i].Weight = w
				total += w
			}
			p.Update(ns)
			seq := picksOf(t, p, tc.cycles*total)
			counts := map[string]int{}
			last := map[string]int{}
			for i, a := range seq {
				counts[a]++
				if tc.maxGap != nil {
					w := tc.weights[slices.IndexFunc(ns, func(n registry.Node) bool { return n.Addr == a })]
					if prev, ok := last[a]; ok && i-prev > tc.maxGap(w, total) {
						t.Fatalf("node of weight %d: %d picks between two turns, want at most %d", w, i-prev, tc.maxGap(w, total))
					}
					last[a] = i
				}
			}
			for i, n := range ns {
				if got, want := counts[n.Addr], tc.cycles*tc.weights[i]; got != want {
					t.Fatalf("%s (weight %d) picked %d times in %d cycles, want %d", n.Addr, tc.weights[i], got, tc.cycles, want)
				}
			}
		})
	}
}

func TestWeightedRoundRobinHugeWeights(t *testing.T) {
	// A cycle past 2^20 picks is scaled down: shares stay close, in any
	// stretch of picks, and Update stays quick.
	p := picker.Virtualize(picker.WeightedRoundRobin(), nil, 3)
	p.Update(weightedNodes(1<<40, 3<<40, 1))
	counts := map[string]int{}
	for _, a := range picksOf(t, p, 1<<16) {
		counts[a]++
	}
	if got := float64(counts["b"]) / float64(counts["a"]); got < 2.99 || got > 3.01 {
		t.Fatalf("counts %v: b/a = %v, want 3", counts, got)
	}
	if counts["c"] > 1 {
		t.Fatalf("counts %v: want c picked at most once", counts)
	}
}

func TestWeightedRoundRobinUpdateKeepsTurn(t *testing.T) {
	// As with round robin, an Update does not restart the cycle.
	p := picker.Virtualize(picker.WeightedRoundRobin(), nil, 4)
	ns := weightedNodes(1, 1, 1, 1)
	p.Update(ns)
	prev := pick(t, p).Addr
	for range 12 {
		p.Update(slices.Clone(ns))
		got := pick(t, p).Addr
		if want := string(rune((prev[0]-'a'+1)%4 + 'a')); got != want {
			t.Fatalf("after Update: picked %q after %q, want %q", got, prev, want)
		}
		prev = got
	}
}

func TestWeightedRoundRobinTried(t *testing.T) {
	// A heavy node fills most turns; a retry still finds the others.
	p := picker.Virtualize(picker.WeightedRoundRobin(), nil, 5)
	p.Update(weightedNodes(200, 1, 1))
	for range 300 {
		if got := pickCtx(t, p, keyed, "a").Addr; got == "a" {
			t.Fatal("retry went to the tried node")
		}
		if got := pickCtx(t, p, keyed, "a", "c").Addr; got != "b" {
			t.Fatalf("retry with a and c tried went to %s, want b", got)
		}
	}
}
