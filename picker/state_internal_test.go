package picker

import (
	"context"
	"testing"

	"github.com/lbrpc/lbrpc/registry"
)

// The states of nodes that left are kept only while they have calls in
// flight, and ConsistentHash's total counts a returning node's calls.
func TestGoneStates(t *testing.T) {
	a, b := registry.Node{Addr: "a", Weight: 1}, registry.Node{Addr: "b", Weight: 1}
	p := ConsistentHash().(*consistentHash)
	p.Update([]registry.Node{a})
	var held []Result
	for range 3 {
		res, err := p.Pick(context.Background(), Info{})
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, res)
	}
	p.Update([]registry.Node{b})
	s := p.snap.Load()
	if len(s.gone) != 1 || s.gone[0].addr != "a" || s.total.v.Load() != 0 {
		t.Fatalf("a left with 3 calls in flight: gone %d, total %d; want a kept, total 0", len(s.gone), s.total.v.Load())
	}
	p.Update([]registry.Node{a, b})
	if s := p.snap.Load(); len(s.gone) != 0 || s.total.v.Load() != 3 {
		t.Fatalf("a back: gone %d, total %d; want none gone, total 3", len(s.gone), s.total.v.Load())
	}
	for _, res := range held {
		res.Finish(DoneInfo{})
	}
	if total := p.snap.Load().total.v.Load(); total != 0 {
		t.Fatalf("after every Done the total is %d, want 0", total)
	}

	// Gone while its calls end: forgotten at the next Update.
	res, _ := p.Pick(context.Background(), Info{})
	p.Update([]registry.Node{{Addr: "c", Weight: 1}})
	if len(p.snap.Load().gone) == 0 {
		t.Fatal("a node that left with a call in flight was not kept")
	}
	res.Finish(DoneInfo{})
	p.Update([]registry.Node{{Addr: "c", Weight: 1}})
	if gone := p.snap.Load().gone; len(gone) != 0 {
		t.Fatalf("%d states kept of nodes that left with no call in flight", len(gone))
	}
}
