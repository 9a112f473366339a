package transport_test

import (
	"context"
	"fmt"
	"net/rpc"
	"testing"

	"github.com/lbrpc/lbrpc/internal/rpctest"
	"github.com/lbrpc/lbrpc/transport"
)

// BenchmarkPoolCall times Pool.Call over loopback with write coalescing off
// and on, serially and in parallel with 1 and 32 callers per CPU
// (b.SetParallelism), against a raw rpc.Client on the same server in the
// same run. writes/op counts conn.Write calls per call.
func BenchmarkPoolCall(b *testing.B) {
	s := rpctest.Start(b, 1, rpctest.Gob)[0]
	raw, err := rpc.Dial("tcp", s.Addr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { raw.Close() })
	type caller func(ctx context.Context, addr, method string, args, reply any) error
	pool := func(on bool) (caller, *wireDialer) {
		d := new(wireDialer)
		p, err := transport.New(transport.WithDialer(d.dial), transport.WithWriteCoalescing(on))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { p.Close() })
		return p.Call, d
	}
	off, offWire := pool(false)
	on, onWire := pool(true)

	for _, tc := range []struct {
		name string
		call caller
		wire *wireDialer // nil for raw
	}{
		{"raw", func(_ context.Context, _, method string, args, reply any) error { return raw.Call(method, args, reply) }, nil},
		{"coalesce=off", off, offWire},
		{"coalesce=on", on, onWire},
	} {
		writes := func() int64 {
			if tc.wire == nil {
				return 0
			}
			return tc.wire.writes.Load()
		}
		report := func(b *testing.B, before int64) {
			if tc.wire != nil {
				b.ReportMetric(float64(writes()-before)/float64(b.N), "writes/op")
			}
		}
		b.Run(tc.name+"/serial", func(b *testing.B) {
			b.ReportAllocs()
			ctx := context.Background()
			var reply string
			before := writes()
			for b.Loop() {
				if err := tc.call(ctx, s.Addr, "Hello.Say", "x", &reply); err != nil {
					b.Fatal(err)
				}
			}
			report(b, before)
		})
		for _, par := range []int{1, 32} {
			b.Run(fmt.Sprintf("%s/parallel%d", tc.name, par), func(b *testing.B) {
				b.ReportAllocs()
				b.SetParallelism(par)
				before := writes()
				b.RunParallel(func(pb *testing.PB) {
					ctx := context.Background()
					var reply string
					for pb.Next() {
						if err := tc.call(ctx, s.Addr, "Hello.Say", "x", &reply); err != nil {
							b.Error(err)
							return
						}
					}
				})
				report(b, before)
			})
		}
	}
}
