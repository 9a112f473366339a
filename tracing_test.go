package lbrpc_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/lbrpc/lbrpc"
	"github.com/lbrpc/lbrpc/internal/rpctest"
	"github.com/lbrpc/lbrpc/picker"
)

func attrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

// A call retried once after its node died under it gives one client span
// with two attempt spans, the first failed, both naming their node.
func TestTracingEndToEnd(t *testing.T) {
	servers := rpctest.Start(t, 2, rpctest.Gob)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	c := newClient(t, servers, lbrpc.WithTracing(tp), lbrpc.WithRetry(1), lbrpc.WithPicker(picker.RoundRobin()))

	var reply string
	for i := 0; i < 2; i++ { // warm both connections
		if err := c.Call(context.Background(), "Hello.Say", "x", &reply); err != nil {
			t.Fatal(err)
		}
	}
	servers[1].SetLatency(time.Hour)
	rec.Reset()
	// Round robin: of two calls at once, one is held by servers[1], which
	// dies under it; that call is retried on servers[0].
	errs := make(chan error, 2)
	for i := 0; i < 2; i++ {
		go func() {
			var reply string
			errs <- c.Call(context.Background(), "Hello.Say", "x", &reply)
		}()
	}
	rpctest.Eventually(t, "a call held by servers[1]", func() bool { return servers[1].Calls() == 2 })
	servers[1].Kill()
	for i := 0; i < 2; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	var calls, attempts []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.SpanKind() == trace.SpanKindClient {
			calls = append(calls, s)
		} else {
			attempts = append(attempts, s)
		}
	}
	if len(calls) != 2 {
		t.Fatalf("%d client spans, want 2", len(calls))
	}
	for _, s := range calls {
		a := attrs(s)
		if s.Name() != "Hello/Say" || a["rpc.system"].AsString() != "go_net_rpc" ||
			a["rpc.service"].AsString() != "Hello" || a["rpc.method"].AsString() != "Say" {
			t.Errorf("client span %q has attributes %v", s.Name(), a)
		}
		if s.Status().Code == codes.Error {
			t.Errorf("client span of a call that succeeded has status error")
		}
	}
	if len(attempts) != 3 {
		t.Fatalf("%d attempt spans, want 3 (one call retried)", len(attempts))
	}
	failed := 0
	for _, s := range attempts {
		a := attrs(s)
		addr := a["server.address"].AsString() + ":" + strconv.Itoa(int(a["server.port"].AsInt64()))
		if addr != servers[0].Addr && addr != servers[1].Addr {
			t.Errorf("attempt span names node %q", addr)
		}
		if s.Status().Code == codes.Error {
			failed++
			if addr != servers[1].Addr || a["lbrpc.attempt"].AsInt64() != 0 {
				t.Errorf("failed attempt: node %s attempt %d, want the dead node at attempt 0", addr, a["lbrpc.attempt"].AsInt64())
			}
		}
		if !s.Parent().IsValid() {
			t.Errorf("attempt span has no parent")
		}
	}
	if failed != 1 {
		t.Fatalf("%d failed attempt spans, want 1", failed)
	}
}
