package middleware_test

import (
	"context"
	"fmt"
	"strings"
	"syscall"

	"github.com/sony/gobreaker/v2"
	"golang.org/x/time/rate"

	"github.com/lbrpc/lbrpc/middleware"
	"github.com/lbrpc/lbrpc/transport"
)

// Chain runs its middleware outermost first. These links are in the order
// lbrpc.New builds (Metrics, MetricsAttempts and per-call middleware left
// out): the links outside Retry run once per call, the links inside it once
// per attempt. Each built-in is wrapped in a logger that
// notes its name when the call reaches it.
func ExampleChain() {
	var order []string
	logged := func(name string, mw middleware.Middleware) middleware.Middleware {
		return func(next middleware.Invoker) middleware.Invoker {
			inner := mw(next)
			return func(ctx context.Context, call *middleware.Call) error {
				order = append(order, name)
				return inner(ctx, call)
			}
		}
	}
	// perAttempt is user middleware inside Retry: it sees every attempt.
	perAttempt := func(next middleware.Invoker) middleware.Invoker {
		return func(ctx context.Context, call *middleware.Call) error {
			order = append(order, fmt.Sprint("attempt ", call.Attempt))
			return next(ctx, call)
		}
	}
	// send stands for the client's pick-and-send step: the first node
	// refuses the connection, the second answers.
	nodes := []string{"10.0.0.1:4000", "10.0.0.2:4000"}
	send := func(ctx context.Context, call *middleware.Call) error {
		call.Addr = nodes[call.Attempt]
		if call.Attempt == 0 {
			return &transport.Error{Addr: call.Addr, Op: transport.OpDial, Err: syscall.ECONNREFUSED}
		}
		return nil
	}

	invoke := middleware.Chain(
		logged("tracing", middleware.Tracing(nil)),
		logged("ratelimit", middleware.RateLimit(rate.NewLimiter(100, 10), middleware.Wait)),
		nil, // nil links are skipped
		logged("breaker", middleware.CircuitBreaker(gobreaker.Settings{})),
		logged("retry", middleware.Retry(middleware.RetryPolicy{Max: 2})),
		middleware.TracingAttempts(nil),
		perAttempt,
	)(send)

	call := &middleware.Call{ServiceMethod: "HelloService.Say"}
	err := invoke(context.Background(), call)
	fmt.Println(strings.Join(order, " > "))
	fmt.Println("tried", call.Tried, "then", call.Addr)
	fmt.Println("err:", err)
	// Output:
	// tracing > ratelimit > breaker > retry > attempt 0 > attempt 1
	// tried [10.0.0.1:4000] then 10.0.0.2:4000
	// err: <nil>
}
