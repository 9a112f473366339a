package picker_test

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"

	"github.com/lbrpc/lbrpc/picker"
	"github.com/lbrpc/lbrpc/registry"
)

// zonePicker sends each attempt to the first node of its own zone that the
// call has not tried, and otherwise takes the nodes in turn. Like every
// Picker it is safe for concurrent use: Update swaps in new snapshots and
// Pick only reads them.
type zonePicker struct {
	zone  string
	local atomic.Pointer[[]registry.Node] // the nodes labelled zone
	all   picker.Picker                   // round robin over every node
}

func newZonePicker(zone string) *zonePicker {
	p := &zonePicker{zone: zone, all: picker.RoundRobin()}
	p.local.Store(&[]registry.Node{})
	return p
}

func (p *zonePicker) Update(nodes []registry.Node) {
	var local []registry.Node // a copy: nodes stays the caller's
	for _, n := range nodes {
		if n.Meta["zone"] == p.zone {
			local = append(local, n)
		}
	}
	p.local.Store(&local)
	p.all.Update(nodes)
}

func (p *zonePicker) Pick(ctx context.Context, info picker.Info) (picker.Result, error) {
	for _, n := range *p.local.Load() {
		if !slices.Contains(info.Tried, n.Addr) {
			return picker.Result{Node: n}, nil
		}
	}
	return p.all.Pick(ctx, info) // honours Tried, ErrNoNodes when empty
}

// A user-written Picker: prefer the nodes of the client's zone, fall back
// to round robin. Pass it to lbrpc.New with lbrpc.WithPicker.
func ExamplePicker() {
	var p picker.Picker = newZonePicker("eu-west")
	ctx := context.Background()
	zone := func(z string) map[string]string { return map[string]string{"zone": z} }

	p.Update([]registry.Node{
		{Addr: "10.0.0.1:4000", Weight: 1, Meta: zone("us-east")},
		{Addr: "10.0.1.1:4000", Weight: 1, Meta: zone("eu-west")},
		{Addr: "10.0.1.2:4000", Weight: 1, Meta: zone("eu-west")},
	})
	// The attempts of one call that keeps failing: each retry lists the
	// nodes tried before, as the client does.
	var tried []string
	for attempt := range 3 {
		res, err := p.Pick(ctx, picker.Info{ServiceMethod: "HelloService.Say", Tried: tried})
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("attempt %d: %s (%s)\n", attempt, res.Node.Addr, res.Node.Meta["zone"])
		tried = append(tried, res.Node.Addr)
	}

	// The zone's nodes leave: calls go to the others.
	p.Update([]registry.Node{{Addr: "10.0.0.1:4000", Weight: 1, Meta: zone("us-east")}})
	res, _ := p.Pick(ctx, picker.Info{ServiceMethod: "HelloService.Say"})
	fmt.Printf("after update: %s (%s)\n", res.Node.Addr, res.Node.Meta["zone"])

	// No nodes at all.
	p.Update(nil)
	_, err := p.Pick(ctx, picker.Info{ServiceMethod: "HelloService.Say"})
	fmt.Println("empty:", err)
	// Output:
	// attempt 0: 10.0.1.1:4000 (eu-west)
	// attempt 1: 10.0.1.2:4000 (eu-west)
	// attempt 2: 10.0.0.1:4000 (us-east)
	// after update: 10.0.0.1:4000 (us-east)
	// empty: lbrpc: no nodes available
}
