package picker_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/lbrpc/lbrpc/picker"
	"github.com/lbrpc/lbrpc/registry"
)

// three is a node set for the examples.
var three = []registry.Node{
	{Addr: "10.0.0.1:4000", Weight: 1},
	{Addr: "10.0.0.2:4000", Weight: 1},
	{Addr: "10.0.0.3:4000", Weight: 1},
}

// The nodes in turn, from a random first one; a node being drained (weight
// 0) gets no new calls.
func ExampleRoundRobin() {
	p := picker.RoundRobin()
	p.Update(three)
	counts := map[string]int{}
	for range 6 {
		res, _ := p.Pick(context.Background(), picker.Info{ServiceMethod: "Arith.Add"})
		counts[res.Node.Addr]++
	}
	fmt.Println(counts)

	draining := []registry.Node{three[0], {Addr: three[1].Addr, Weight: 0}, three[2]}
	p.Update(draining)
	counts = map[string]int{}
	for range 6 {
		res, _ := p.Pick(context.Background(), picker.Info{ServiceMethod: "Arith.Add"})
		counts[res.Node.Addr]++
	}
	fmt.Println(counts)
	// Output:
	// map[10.0.0.1:4000:2 10.0.0.2:4000:2 10.0.0.3:4000:2]
	// map[10.0.0.1:4000:3 10.0.0.3:4000:3]
}

// Every picker prefers the nodes a call has not tried yet.
func ExampleRandom() {
	p := picker.Random()
	p.Update(three)
	res, _ := p.Pick(context.Background(), picker.Info{
		ServiceMethod: "Arith.Add",
		Tried:         []string{"10.0.0.1:4000", "10.0.0.3:4000"},
	})
	fmt.Println(res.Node.Addr)
	// Output: 10.0.0.2:4000
}

// LeastLoaded learns from each attempt's outcome, which the client reports
// through Result.Done: here one node answers in 2ms, one in 40ms and one
// fails at once. Of two nodes drawn at random the cheaper takes the call,
// so the fast node takes most calls, the slow one some, and the failing one
// none while the others answer.
func ExampleLeastLoaded() {
	p := picker.LeastLoaded()
	p.Update(three)
	outcome := map[string]picker.DoneInfo{
		"10.0.0.1:4000": {Latency: 2 * time.Millisecond},
		"10.0.0.2:4000": {Latency: 40 * time.Millisecond},
		"10.0.0.3:4000": {Err: errors.New("connection refused"), Latency: 50 * time.Microsecond},
	}
	call := func() string {
		res, err := p.Pick(context.Background(), picker.Info{ServiceMethod: "Arith.Add"})
		if err != nil {
			return err.Error()
		}
		res.Done(outcome[res.Node.Addr])
		return res.Node.Addr
	}
	for range 30 { // learn
		call()
	}
	counts := map[string]int{}
	for range 1000 {
		counts[call()]++
	}
	fmt.Println("fast node takes most calls:", counts["10.0.0.1:4000"] > counts["10.0.0.2:4000"])
	fmt.Println("failing node's calls:", counts["10.0.0.3:4000"])
	for _, l := range p.(picker.LoadReporter).Loads() {
		fmt.Printf("%s: latency %v, in flight %d\n", l.Addr, l.Latency.Round(time.Millisecond), l.InFlight)
	}
	// Output:
	// fast node takes most calls: true
	// failing node's calls: 0
	// 10.0.0.1:4000: latency 2ms, in flight 0
	// 10.0.0.2:4000: latency 40ms, in flight 0
	// 10.0.0.3:4000: latency 1s, in flight 0
}

// LeastRequest sends a call to the node with fewer calls in flight.
func ExampleLeastRequest() {
	p := picker.LeastRequest()
	p.Update(three[:2])
	first, _ := p.Pick(context.Background(), picker.Info{ServiceMethod: "Arith.Add"})
	second, _ := p.Pick(context.Background(), picker.Info{ServiceMethod: "Arith.Add"})
	fmt.Println("the second call goes elsewhere:", second.Node.Addr != first.Node.Addr)
	first.Done(picker.DoneInfo{})
	second.Done(picker.DoneInfo{})
	// Output: the second call goes elsewhere: true
}

// Weights 3, 1 and 0 (draining): three turns in four for the first node,
// spread out, none for the third.
func ExampleWeightedRoundRobin() {
	p := picker.WeightedRoundRobin()
	p.Update([]registry.Node{
		{Addr: "10.0.0.1:4000", Weight: 3},
		{Addr: "10.0.0.2:4000", Weight: 1},
		{Addr: "10.0.0.3:4000", Weight: 0},
	})
	counts := map[string]int{}
	for range 8 {
		res, _ := p.Pick(context.Background(), picker.Info{ServiceMethod: "Arith.Add"})
		counts[res.Node.Addr]++
	}
	fmt.Println(counts)
	// Output: map[10.0.0.1:4000:6 10.0.0.2:4000:2]
}

// The calls of one key go to one node, in every client with the same node
// set, until that node has more than 1.25 times the mean of calls in
// flight: then they spill over to the next nodes on the ring.
func ExampleConsistentHash() {
	p := picker.ConsistentHash()
	p.Update(three)
	ctx := picker.WithKey(context.Background(), "user-42")

	first, _ := p.Pick(ctx, picker.Info{ServiceMethod: "Cache.Get"})
	first.Done(picker.DoneInfo{})
	again, _ := p.Pick(ctx, picker.Info{ServiceMethod: "Cache.Get"})
	again.Done(picker.DoneInfo{})
	fmt.Println("same node:", again.Node.Addr == first.Node.Addr)

	// Nine calls of the hot key in flight at once: at most
	// ceil(1.25 × 9 / 3) = 4 on one node.
	perNode := map[string]int{}
	var held []func(picker.DoneInfo)
	for range 9 {
		res, _ := p.Pick(ctx, picker.Info{ServiceMethod: "Cache.Get"})
		perNode[res.Node.Addr]++
		held = append(held, res.Done)
	}
	fmt.Println("on its own node:", perNode[first.Node.Addr], "nodes used:", len(perNode))
	for _, done := range held {
		done(picker.DoneInfo{})
	}
	// Output:
	// same node: true
	// on its own node: 4 nodes used: 3
}

// A key travels with the context from the caller to the picker.
func ExampleWithKey() {
	ctx := picker.WithKey(context.Background(), "user-42")
	key, ok := picker.KeyFrom(ctx)
	fmt.Println(key, ok)
	_, ok = picker.KeyFrom(context.Background())
	fmt.Println(ok)
	// Output:
	// user-42 true
	// false
}

// PickFirst sticks to the first node of the set; the client gives the
// picker only the nodes fit to serve, so calls fail over in order when the
// first is out, and come back when it returns.
func ExamplePickFirst() {
	p := picker.PickFirst()
	for _, set := range [][]registry.Node{three, three[1:], three} {
		p.Update(set)
		res, _ := p.Pick(context.Background(), picker.Info{ServiceMethod: "Arith.Add"})
		fmt.Println(res.Node.Addr)
	}
	// Output:
	// 10.0.0.1:4000
	// 10.0.0.2:4000
	// 10.0.0.1:4000
}
