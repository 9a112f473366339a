package middleware_test

import (
	"context"
	"errors"
	"fmt"
	"net/rpc"
	"syscall"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/lbrpc/lbrpc/middleware"
	"github.com/lbrpc/lbrpc/picker"
	"github.com/lbrpc/lbrpc/transport"
)

func TestErrorType(t *testing.T) {
	deadline := &transport.Error{Addr: "n", Op: transport.OpCall, Err: context.DeadlineExceeded}
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, ""},
		{rpc.ServerError("boom"), "server_error"},
		{fmt.Errorf("retries: %w", rpc.ServerError("boom")), "server_error"},
		{dialErr("n"), "transport"},
		{brokenErr("n"), "transport"},
		{deadline, "timeout"}, // a timed-out attempt is a timeout, not a broken node
		{context.DeadlineExceeded, "timeout"},
		{context.Canceled, "canceled"},
		{middleware.ErrCircuitOpen, "circuit_open"},
		{fmt.Errorf("x: %w", middleware.ErrRateLimited), "rate_limited"},
		{picker.ErrNoNodes, "no_nodes"},
		{middleware.ErrClosed, "closed"},
		{fmt.Errorf("%w: %w", middleware.ErrClosed, syscall.ECONNRESET), "closed"},
		{transport.ErrBadArgs, "bad_args"},
		{fmt.Errorf("%w: gob: type mismatch", transport.ErrReplyMismatch), "reply_mismatch"},
		{errors.New("a user middleware's own"), "_OTHER"},
	} {
		if got := middleware.ErrorType(tc.err); got != tc.want {
			t.Errorf("ErrorType(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

// histogramCounts reads the named histogram from r: the count of each data
// point, by its attributes.
func histogramCounts(t *testing.T, r sdkmetric.Reader, name string) map[attribute.Distinct]uint64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[attribute.Distinct]uint64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			for _, dp := range m.Data.(metricdata.Histogram[float64]).DataPoints {
				out[dp.Attributes.Equivalent()] += dp.Count
			}
		}
	}
	return out
}

// Metrics and MetricsAttempts in a chain with Retry: one call recorded, its
// two attempts recorded on their nodes, the first as a transport failure.
func TestMetricsWithRetry(t *testing.T) {
	reader, mp := sdkMeter(t)
	send := failing(dialErr(nodeAddr(0)))
	inv := middleware.Chain(
		middleware.Metrics(mp),
		middleware.Retry(middleware.RetryPolicy{Max: 1, Budget: middleware.NewRetryBudget(1, 100)}),
		middleware.MetricsAttempts(mp),
	)(send.invoke)
	if err := inv(context.Background(), &middleware.Call{ServiceMethod: "Hello.Say"}); err != nil {
		t.Fatal(err)
	}

	method := []attribute.KeyValue{
		attribute.String("rpc.system", middleware.RPCSystem),
		attribute.String("rpc.service", "Hello"),
		attribute.String("rpc.method", "Say"),
	}
	set := func(kvs ...attribute.KeyValue) attribute.Distinct {
		s := attribute.NewSet(append(kvs, method...)...)
		return s.Equivalent()
	}
	calls := histogramCounts(t, reader, "rpc.client.duration")
	if len(calls) != 1 || calls[set()] != 1 {
		t.Errorf("calls recorded %v, want 1 without error", calls)
	}
	attempts := histogramCounts(t, reader, middleware.AttemptDurationName)
	first := set(attribute.String("server.address", "10.0.0.1"), attribute.Int("server.port", 4000), attribute.String("error.type", "transport"))
	second := set(attribute.String("server.address", "10.0.0.2"), attribute.Int("server.port", 4000))
	if len(attempts) != 2 || attempts[first] != 1 || attempts[second] != 1 {
		t.Errorf("attempts recorded %v, want one failed on 10.0.0.1 and one on 10.0.0.2", attempts)
	}
}

// Once a method and outcome were seen, recording allocates nothing more
// than the SDK itself does.
func TestMetricsAllocs(t *testing.T) {
	_, mp := sdkMeter(t)
	inv := middleware.Chain(middleware.Metrics(mp), middleware.MetricsAttempts(mp))(
		func(_ context.Context, c *middleware.Call) error { c.Addr = "10.0.0.1:4000"; return nil })
	call := &middleware.Call{ServiceMethod: "Hello.Say"}
	ctx := context.Background()
	if n := testing.AllocsPerRun(1000, func() { inv(ctx, call) }); n != 0 {
		t.Errorf("%v allocations per call, want 0", n)
	}
}

// With a no-op provider, the middleware records nothing and costs nothing.
func TestMetricsNoop(t *testing.T) {
	var n int
	next := func(context.Context, *middleware.Call) error { n++; return nil }
	inv := middleware.Chain(middleware.Metrics(metricnoop.NewMeterProvider()), middleware.MetricsAttempts(metricnoop.NewMeterProvider()))(next)
	call := &middleware.Call{ServiceMethod: "Hello.Say"}
	if err := inv(context.Background(), call); err != nil || n != 1 {
		t.Fatalf("err %v, next called %d times, want nil and 1", err, n)
	}
	if a := testing.AllocsPerRun(100, func() { inv(context.Background(), call) }); a != 0 {
		t.Errorf("%v allocations per call with a no-op provider, want 0", a)
	}
}

// BenchmarkMetrics times recording a call and an attempt with the SDK.
func BenchmarkMetrics(b *testing.B) {
	_, mp := sdkMeter(b)
	inv := middleware.Chain(middleware.Metrics(mp), middleware.MetricsAttempts(mp))(
		func(_ context.Context, c *middleware.Call) error { c.Addr = "10.0.0.1:4000"; return nil })
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		call := &middleware.Call{ServiceMethod: "Hello.Say"}
		ctx := context.Background()
		for pb.Next() {
			inv(ctx, call)
		}
	})
}

// sdkMeter returns an SDK MeterProvider read by hand, shut down when the
// test ends.
func sdkMeter(t testing.TB) (*sdkmetric.ManualReader, *sdkmetric.MeterProvider) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { mp.Shutdown(context.Background()) })
	return reader, mp
}
