package picker_test

import (
	"testing"

	"github.com/lbrpc/lbrpc/picker"
	"github.com/lbrpc/lbrpc/registry"
)

func TestPickFirst(t *testing.T) {
	ns := nodes(4)
	drained := nodes(4)
	drained[0].Weight = 0
	tests := []struct {
		name  string
		set   []registry.Node
		tried []string
		want  string
	}{
		{"first", ns, nil, addr(0)},
		{"first out: the second", ns[1:], nil, addr(1)},
		{"in the registry's order", []registry.Node{ns[2], ns[0], ns[1]}, nil, addr(2)},
		{"retry: the next", ns, []string{addr(0)}, addr(1)},
		{"retry: the first untried", ns, []string{addr(1), addr(0)}, addr(2)},
		{"all tried: the first", ns, []string{addr(3), addr(2), addr(1), addr(0)}, addr(0)},
		{"first drained", drained, nil, addr(1)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := picker.PickFirst()
			p.Update(tc.set)
			for range 3 {
				if got := pickCtx(t, p, keyed, tc.tried...).Addr; got != tc.want {
					t.Fatalf("picked %s, want %s", got, tc.want)
				}
			}
		})
	}
}

func TestPickFirstFailsOverAndBack(t *testing.T) {
	p := picker.PickFirst()
	ns := nodes(3)
	for _, step := range []struct {
		set  []registry.Node
		want string
	}{
		{ns, addr(0)},
		{ns[1:], addr(1)}, // the first is out (ejected, unreachable)
		{ns[2:], addr(2)},
		{ns, addr(0)}, // back
	} {
		p.Update(step.set)
		if got := pick(t, p).Addr; got != step.want {
			t.Fatalf("set of %d: picked %s, want %s", len(step.set), got, step.want)
		}
	}
}
