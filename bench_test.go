package lbrpc_test

import (
	"context"
	"net/rpc"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"
	"go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/time/rate"

	"github.com/lbrpc/lbrpc"
	"github.com/lbrpc/lbrpc/internal/rpctest"
	"github.com/lbrpc/lbrpc/middleware"
	"github.com/lbrpc/lbrpc/picker"
	"github.com/lbrpc/lbrpc/registry"
)

// BenchmarkCall compares one call through lbrpc with a raw rpc.Client on
// the same loopback server, in one run: sequential and parallel.
func BenchmarkCall(b *testing.B) {
	s := rpctest.Start(b, 1, rpctest.Gob)[0]
	raw, err := rpc.Dial("tcp", s.Addr)
	if err != nil {
		b.Fatal(err)
	}
	defer raw.Close()
	rawCall := func(ctx context.Context, method string, args, reply any) error {
		return raw.Call(method, args, reply)
	}
	bare := benchClient(b, s.Addr)
	full := benchClient(b, s.Addr,
		lbrpc.WithTracing(noop.NewTracerProvider()),
		lbrpc.WithRateLimit(rate.Inf, 1, middleware.Wait),
		lbrpc.WithCircuitBreaker(gobreaker.Settings{}),
		lbrpc.WithRetry(3),
	)
	// Every node-health feature on (outlier detection is on by default).
	nodes := benchClient(b, s.Addr,
		lbrpc.WithNodeBreaker(gobreaker.Settings{}),
		lbrpc.WithHealthCheck(lbrpc.HealthCheck{Interval: time.Second}),
		lbrpc.WithSlowStart(lbrpc.SlowStart{Window: time.Minute}),
	)
	for _, tc := range []struct {
		name string
		call func(ctx context.Context, method string, args, reply any) error
	}{
		{"raw", rawCall},
		{"lbrpc", bare.Call},
		{"lbrpc-full", full.Call},
		{"lbrpc-nodehealth", nodes.Call},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			ctx := context.Background()
			var reply string
			for b.Loop() {
				if err := tc.call(ctx, "Hello.Say", "x", &reply); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(tc.name+"-parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.SetParallelism(8)
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				var reply string
				for pb.Next() {
					if err := tc.call(ctx, "Hello.Say", "x", &reply); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

func benchClient(b *testing.B, addr string, opts ...lbrpc.Option) *lbrpc.Client {
	b.Helper()
	opts = append([]lbrpc.Option{
		lbrpc.WithRegistry(registry.Static(addr)),
		lbrpc.WithPicker(picker.RoundRobin()),
	}, opts...)
	c, err := lbrpc.New(opts...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}
