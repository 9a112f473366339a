package registry_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"go.uber.org/goleak"

	"github.com/lbrpc/lbrpc/registry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func addrs(nodes []registry.Node) []string {
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.Addr
	}
	return out
}

func TestDedup(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []registry.Node
		want []string
	}{
		{"empty", nil, []string{}},
		{"keeps order", []registry.Node{{Addr: "b"}, {Addr: "a"}}, []string{"b", "a"}},
		{"first wins", []registry.Node{{Addr: "a", Weight: 1}, {Addr: "b"}, {Addr: "a", Weight: 9}}, []string{"a", "b"}},
		{"trims and drops empty", []registry.Node{{Addr: " a "}, {Addr: ""}, {Addr: "  "}, {Addr: "a"}}, []string{"a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := registry.Dedup(tc.in)
			if !slices.Equal(addrs(got), tc.want) {
				t.Fatalf("Dedup = %v, want %v", addrs(got), tc.want)
			}
			if tc.name == "first wins" && got[0].Weight != 1 {
				t.Fatalf("kept weight %d, want the first node's 1", got[0].Weight)
			}
		})
	}
}

func TestStatic(t *testing.T) {
	r := registry.Static("127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:1")
	w, err := r.Watch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := w.Next()
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"127.0.0.1:1", "127.0.0.1:2"}; !slices.Equal(addrs(nodes), want) {
		t.Fatalf("first Next = %v, want %v", addrs(nodes), want)
	}
	for _, n := range nodes {
		if n.Weight != 1 {
			t.Fatalf("node %s has weight %d, want 1", n.Addr, n.Weight)
		}
	}
	nodes[0].Addr = "changed" // the caller's copy
	done := make(chan error, 1)
	go func() {
		_, err := w.Next() // blocks: a static set never changes
		done <- err
	}()
	if err := w.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, registry.ErrStopped) {
		t.Fatalf("Next after Stop: err = %v, want ErrStopped", err)
	}
	if err := w.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	w2, _ := r.Watch(context.Background())
	defer w2.Stop()
	again, _ := w2.Next()
	if again[0].Addr != "127.0.0.1:1" {
		t.Fatalf("a caller's change leaked into the registry: %v", addrs(again))
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := registry.Static("a:1").Watch(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Watch with a cancelled ctx: err = %v, want context.Canceled", err)
	}
}

// TestStaticWatchNilContext proves that Watch answers a nil ctx with
// ErrNilContext instead of panicking.
func TestStaticWatchNilContext(t *testing.T) {
	var ctx context.Context
	w, err := registry.Static("127.0.0.1:1").Watch(ctx)
	if !errors.Is(err, registry.ErrNilContext) {
		if w != nil {
			w.Stop()
		}
		t.Fatalf("Watch(nil) = %v, %v; want ErrNilContext", w, err)
	}
}

func TestStaticNodesKeepsWeightAndMeta(t *testing.T) {
	w, err := registry.StaticNodes(
		registry.Node{Addr: "a:1", Weight: 3, Meta: map[string]string{"zone": "x"}},
		registry.Node{Addr: "b:1", Weight: 0},
	).Watch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	nodes, _ := w.Next()
	if len(nodes) != 2 || nodes[0].Weight != 3 || nodes[0].Meta["zone"] != "x" || nodes[1].Weight != 0 {
		t.Fatalf("nodes = %+v", nodes)
	}
}
