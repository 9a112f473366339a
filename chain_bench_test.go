package lbrpc_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"

	"github.com/sony/gobreaker/v2"
	"go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/time/rate"

	"github.com/lbrpc/lbrpc"
	"github.com/lbrpc/lbrpc/middleware"
	"github.com/lbrpc/lbrpc/picker"
	"github.com/lbrpc/lbrpc/registry"
	"github.com/lbrpc/lbrpc/transport"
)

// memTransport answers every call in memory with a canned reply, so that
// what a benchmark through it measures is lbrpc's own cost, with no network
// to hide it.
type memTransport struct{ reply string }

var _ transport.Transport = (*memTransport)(nil)

func (t *memTransport) Call(_ context.Context, _, _ string, _, reply any) error {
	*reply.(*string) = t.reply
	return nil
}

func (*memTransport) Update([]string) {}
func (*memTransport) Close() error    { return nil }

// chainOptions is the full chain of the comparison harness (bench/,
// lbrpc-full): every built-in link, tracing with a no-op provider, a rate
// limit far above any reachable rate, and LeastLoaded.
func chainOptions() []lbrpc.Option {
	return []lbrpc.Option{
		lbrpc.WithPicker(picker.LeastLoaded()),
		lbrpc.WithTracing(noop.NewTracerProvider()),
		lbrpc.WithRateLimit(rate.Limit(1e9), 1_000_000, middleware.Wait),
		lbrpc.WithCircuitBreaker(gobreaker.Settings{}),
		lbrpc.WithRetry(2),
	}
}

// BenchmarkChain measures what lbrpc adds to a call, over an in-memory
// transport:
//
//   - direct: the transport alone, the baseline;
//   - bare: Client.Call with RoundRobin and no middleware;
//   - leastloaded: bare with picker.LeastLoaded;
//   - full: leastloaded with the full chain (tracing, rate limit, breaker,
//     retry).
//
// full−leastloaded is the chain's cost, full−direct all of lbrpc's. Each
// runs serially and with 16, 64 and 256 goroutines (RunParallel), whose
// ns/op should fall toward serial/GOMAXPROCS and stay there: a rise with
// the goroutine count is contention.
func BenchmarkChain(b *testing.B) {
	addrs := []string{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"} // never dialled
	tr := &memTransport{reply: "hello, x"}
	client := func(b *testing.B, opts ...lbrpc.Option) func(context.Context, string, any, any) error {
		opts = append([]lbrpc.Option{
			lbrpc.WithRegistry(registry.Static(addrs...)),
			lbrpc.WithTransport(&memTransport{reply: "hello, x"}),
			lbrpc.WithPicker(picker.RoundRobin()),
		}, opts...)
		c, err := lbrpc.New(opts...)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		var reply string
		if err := c.Call(context.Background(), "Hello.Say", "x", &reply); err != nil { // waits for the registry
			b.Fatal(err)
		}
		return c.Call
	}
	for _, tc := range []struct {
		name string
		call func(b *testing.B) func(context.Context, string, any, any) error
	}{
		{"direct", func(*testing.B) func(context.Context, string, any, any) error {
			return func(ctx context.Context, method string, args, reply any) error {
				return tr.Call(ctx, addrs[0], method, args, reply)
			}
		}},
		{"bare", func(b *testing.B) func(context.Context, string, any, any) error { return client(b) }},
		{"leastloaded", func(b *testing.B) func(context.Context, string, any, any) error {
			return client(b, lbrpc.WithPicker(picker.LeastLoaded()))
		}},
		{"full", func(b *testing.B) func(context.Context, string, any, any) error { return client(b, chainOptions()...) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			call := tc.call(b)
			b.Run("serial", func(b *testing.B) {
				b.ReportAllocs()
				ctx := context.Background()
				var reply string
				for b.Loop() {
					if err := call(ctx, "Hello.Say", "x", &reply); err != nil {
						b.Fatal(err)
					}
				}
			})
			for _, g := range []int{16, 64, 256} {
				b.Run(fmt.Sprintf("g%d", g), func(b *testing.B) {
					b.ReportAllocs()
					b.SetParallelism(max(1, g/runtime.GOMAXPROCS(0)))
					b.RunParallel(func(pb *testing.PB) {
						ctx := context.Background()
						var reply string
						for pb.Next() {
							if err := call(ctx, "Hello.Say", "x", &reply); err != nil {
								b.Error(err)
								return
							}
						}
					})
				})
			}
		})
	}
}
