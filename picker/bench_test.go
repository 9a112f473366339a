package picker_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lbrpc/lbrpc/picker"
	"github.com/lbrpc/lbrpc/registry"
)

// BenchmarkPickBaseline is the floor the pickers are measured against: an
// atomic counter indexing a slice, with no snapshot, no Done and no Tried.
func BenchmarkPickBaseline(b *testing.B) {
	for _, n := range []int{3, 100, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			ns := nodes(n)
			var next atomic.Uint64
			var sink atomic.Pointer[registry.Node]
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				var last *registry.Node
				for pb.Next() {
					last = &ns[next.Add(1)%uint64(len(ns))]
				}
				sink.Store(last)
			})
		})
	}
}

// BenchmarkPickKeyed times ConsistentHash's pick and Done for calls with
// keys (BenchmarkPick times its keyless calls), from 1024 keys.
func BenchmarkPickKeyed(b *testing.B) {
	ctxs := make([]context.Context, 1024)
	for i := range ctxs {
		ctxs[i] = picker.WithKey(context.Background(), fmt.Sprint("user-", i))
	}
	for _, n := range []int{3, 100, 10000} {
		b.Run(fmt.Sprint("ConsistentHash/", n), func(b *testing.B) {
			p := picker.ConsistentHash()
			p.Update(nodes(n))
			var seq atomic.Uint64
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := seq.Add(512)
				info := picker.Info{ServiceMethod: "HelloService.Say"}
				done := picker.DoneInfo{Latency: time.Millisecond}
				for pb.Next() {
					i++
					res, err := p.Pick(ctxs[i%uint64(len(ctxs))], info)
					if err != nil {
						b.Fatal(err)
					}
					res.Finish(done)
				}
			})
		})
	}
}

// BenchmarkUpdate times Update, which rebuilds a picker's snapshot: the
// price of a node-set change.
func BenchmarkUpdate(b *testing.B) {
	for _, bp := range builtins {
		for _, n := range []int{100, 10000} {
			b.Run(fmt.Sprint(bp.name, "/", n), func(b *testing.B) {
				p := bp.new()
				a, c := nodes(n), nodes(n + 1)[1:] // one node in, one out
				b.ReportAllocs()
				for i := 0; b.Loop(); i++ {
					if i%2 == 0 {
						p.Update(a)
					} else {
						p.Update(c)
					}
				}
			})
		}
	}
}
