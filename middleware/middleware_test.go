package middleware_test

import (
	"context"
	"fmt"
	"net/rpc"
	"slices"
	"sync"
	"syscall"
	"testing"

	"github.com/sony/gobreaker/v2"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/goleak"
	"golang.org/x/time/rate"

	"github.com/lbrpc/lbrpc/middleware"
	"github.com/lbrpc/lbrpc/transport"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// nodeAddr is the address the fake send step picks for attempt n.
func nodeAddr(n int) string { return fmt.Sprintf("10.0.0.%d:4000", n+1) }

// dialErr is a transport failure before anything was sent.
func dialErr(addr string) error {
	return &transport.Error{Addr: addr, Op: transport.OpDial, Err: syscall.ECONNREFUSED}
}

// brokenErr is a connection that broke while the call was in flight: the
// server may have run the method.
func brokenErr(addr string) error {
	return &transport.Error{Addr: addr, Op: transport.OpCall, Err: rpc.ErrShutdown}
}

// attempt is what the fake send step saw of one attempt.
type attempt struct {
	Attempt int
	Addr    string
	Tried   []string
}

// fakeSend plays the innermost pick-and-send step: like the client's send,
// it sets call.Addr to the picked node, then fails with err(n) for the nth
// attempt it sees (counted across calls). It is safe for concurrent use.
type fakeSend struct {
	err func(n int) error

	mu   sync.Mutex
	seen []attempt
}

// failing returns a fake whose attempts fail with errs in turn and then
// succeed.
func failing(errs ...error) *fakeSend {
	return &fakeSend{err: func(n int) error {
		if n < len(errs) {
			return errs[n]
		}
		return nil
	}}
}

// always returns a fake whose attempts all fail with mk(addr).
func always(mk func(addr string) error) *fakeSend {
	return &fakeSend{err: func(n int) error { return mk(nodeAddr(n)) }}
}

func (f *fakeSend) invoke(_ context.Context, call *middleware.Call) error {
	f.mu.Lock()
	n := len(f.seen)
	call.Addr = nodeAddr(n)
	f.seen = append(f.seen, attempt{call.Attempt, call.Addr, slices.Clone(call.Tried)})
	f.mu.Unlock()
	return f.err(n)
}

// attempts returns the number of attempts seen so far.
func (f *fakeSend) attempts() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.seen)
}

// record returns middleware that appends name to *log each time it runs.
func record(log *[]string, name string) middleware.Middleware {
	return func(next middleware.Invoker) middleware.Invoker {
		return func(ctx context.Context, call *middleware.Call) error {
			*log = append(*log, name)
			return next(ctx, call)
		}
	}
}

func TestChainOrder(t *testing.T) {
	for _, tc := range []struct {
		name string
		mws  []string // "" stands for a nil Middleware
		want []string
	}{
		{"empty", nil, []string{"send"}},
		{"one", []string{"a"}, []string{"a", "send"}},
		{"outermost first", []string{"a", "b", "c"}, []string{"a", "b", "c", "send"}},
		{"nil skipped", []string{"", "a", "", "b", ""}, []string{"a", "b", "send"}},
		{"all nil", []string{"", ""}, []string{"send"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var log []string
			var mws []middleware.Middleware
			for _, name := range tc.mws {
				if name == "" {
					mws = append(mws, nil)
					continue
				}
				mws = append(mws, record(&log, name))
			}
			send := func(context.Context, *middleware.Call) error {
				log = append(log, "send")
				return nil
			}
			invoke := middleware.Chain(mws...)(send)
			if err := invoke(context.Background(), &middleware.Call{ServiceMethod: "S.M"}); err != nil {
				t.Fatalf("invoke: %v", err)
			}
			if !slices.Equal(log, tc.want) {
				t.Fatalf("order = %q, want %q", log, tc.want)
			}
		})
	}
}

func TestChainNested(t *testing.T) {
	// A chain is itself a Middleware: nesting keeps the order.
	var log []string
	inner := middleware.Chain(record(&log, "b"), record(&log, "c"))
	outer := middleware.Chain(record(&log, "a"), inner, record(&log, "d"))
	send := func(context.Context, *middleware.Call) error { return nil }
	if err := outer(send)(context.Background(), &middleware.Call{}); err != nil {
		t.Fatalf("invoke: %v", err)
	}
	if want := []string{"a", "b", "c", "d"}; !slices.Equal(log, want) {
		t.Fatalf("order = %q, want %q", log, want)
	}
}

func TestChainShortCircuitAndError(t *testing.T) {
	errStop := fmt.Errorf("stopped")
	var log []string
	stop := func(middleware.Invoker) middleware.Invoker {
		return func(context.Context, *middleware.Call) error {
			log = append(log, "stop")
			return errStop
		}
	}
	send := func(context.Context, *middleware.Call) error {
		log = append(log, "send")
		return nil
	}
	invoke := middleware.Chain(record(&log, "a"), stop, record(&log, "b"))(send)
	if err := invoke(context.Background(), &middleware.Call{}); err != errStop {
		t.Fatalf("err = %v, want %v", err, errStop)
	}
	if want := []string{"a", "stop"}; !slices.Equal(log, want) {
		t.Fatalf("order = %q, want %q", log, want)
	}
}

func TestChainBuildsOnce(t *testing.T) {
	// Middleware constructors run when the chain is built, not per call.
	builds := 0
	mw := func(next middleware.Invoker) middleware.Invoker {
		builds++
		return next
	}
	invoke := middleware.Chain(mw, mw)(func(context.Context, *middleware.Call) error { return nil })
	for range 3 {
		if err := invoke(context.Background(), &middleware.Call{}); err != nil {
			t.Fatalf("invoke: %v", err)
		}
	}
	if builds != 2 {
		t.Fatalf("middleware built %d times, want 2 (once per link, at build time)", builds)
	}
}

var noopTP = noop.NewTracerProvider()

// defaultChain is the chain lbrpc.New builds with every built-in on, with
// limits that never bite.
func defaultChain(tp trace.TracerProvider) middleware.Middleware {
	return middleware.Chain(
		middleware.Tracing(tp),
		middleware.RateLimit(rate.NewLimiter(rate.Inf, 0), middleware.Wait),
		middleware.CircuitBreaker(gobreaker.Settings{}),
		middleware.Retry(middleware.RetryPolicy{Max: 2}),
		middleware.TracingAttempts(tp),
	)
}

// BenchmarkChain times the default chain of lbrpc.New (tracing with a noop
// provider, an unlimited rate limiter, a breaker, retry and attempt tracing)
// against calling the send step directly.
func BenchmarkChain(b *testing.B) {
	send := func(_ context.Context, call *middleware.Call) error {
		call.Addr = "10.0.0.1:4000"
		return nil
	}
	run := func(b *testing.B, invoke middleware.Invoker) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			ctx := context.Background()
			call := new(middleware.Call) // reused: the allocations reported are the middleware's
			for pb.Next() {
				*call = middleware.Call{ServiceMethod: "HelloService.Say"}
				if err := invoke(ctx, call); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("baseline", func(b *testing.B) { run(b, send) })
	b.Run("empty", func(b *testing.B) { run(b, middleware.Chain()(send)) })
	b.Run("default", func(b *testing.B) { run(b, defaultChain(noopTP)(send)) })
}

// benchCase is one invoker to time.
type benchCase struct {
	name   string
	invoke middleware.Invoker
}

// benchInvokers times each invoker in parallel with one reused Call per
// goroutine, so the allocations reported are the invoker's own.
func benchInvokers(b *testing.B, cases []benchCase) {
	for _, bc := range cases {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				call := new(middleware.Call)
				for pb.Next() {
					*call = middleware.Call{ServiceMethod: "HelloService.Say"}
					if err := bc.invoke(ctx, call); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}
