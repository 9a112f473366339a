package middleware_test

import (
	"context"
	"errors"
	"net/rpc"
	"sync"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/lbrpc/lbrpc/middleware"
)

// newRecorder returns a tracer provider that keeps its ended spans in
// memory, sampling with sampler (all spans if nil).
func newRecorder(t *testing.T, sampler sdktrace.Sampler) (*sdktrace.TracerProvider, *tracetest.SpanRecorder) {
	t.Helper()
	if sampler == nil {
		sampler = sdktrace.AlwaysSample()
	}
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sampler), sdktrace.WithSpanProcessor(sr))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	return tp, sr
}

// attrs returns a span's attributes by key.
func attrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

// checkStatus checks that s has status Error with err's text and an
// exception event, or status Unset and no events when err is nil.
func checkStatus(t *testing.T, s sdktrace.ReadOnlySpan, err error) {
	t.Helper()
	if err == nil {
		if s.Status().Code != codes.Unset || len(s.Events()) != 0 {
			t.Errorf("span %q: status %v, %d events; want Unset and none", s.Name(), s.Status(), len(s.Events()))
		}
		return
	}
	if got := s.Status(); got.Code != codes.Error || got.Description != err.Error() {
		t.Errorf("span %q: status %v, want Error %q", s.Name(), got, err.Error())
	}
	if ev := s.Events(); len(ev) != 1 || ev[0].Name != "exception" {
		t.Errorf("span %q: events %v, want one exception", s.Name(), ev)
	}
}

// dropNamed samples every span but the ones with its name, whatever their
// parent says.
type dropNamed string

func (d dropNamed) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	if p.Name == string(d) {
		return sdktrace.SamplingResult{Decision: sdktrace.Drop}
	}
	return sdktrace.SamplingResult{Decision: sdktrace.RecordAndSample}
}

func (d dropNamed) Description() string { return "drop " + string(d) }

// seenBySampler records the attributes the sampler is given for each span.
type seenBySampler struct {
	mu    sync.Mutex
	attrs map[string][]attribute.KeyValue
}

func (s *seenBySampler) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.attrs[p.Name] = p.Attributes
	return sdktrace.SamplingResult{Decision: sdktrace.RecordAndSample}
}

func (s *seenBySampler) Description() string { return "records what it sees" }

// The call span's rpc.* attributes are given at its start, where a sampler
// sees them, as the semantic conventions ask; and the same start serves
// every call of a method (it is cached), methods without a service too.
func TestTracingSamplerSeesAttributes(t *testing.T) {
	sampler := &seenBySampler{attrs: map[string][]attribute.KeyValue{}}
	tp, _ := newRecorder(t, sampler)
	send := func(context.Context, *middleware.Call) error { return nil }
	mw := middleware.Tracing(tp)(send)
	for range 2 {
		for _, sm := range []string{"HelloService.Say", "pkg.Svc.Get", "Bare"} {
			if err := mw(context.Background(), &middleware.Call{ServiceMethod: sm}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for name, want := range map[string][3]string{
		"HelloService/Say": {"go_net_rpc", "HelloService", "Say"},
		"pkg.Svc/Get":      {"go_net_rpc", "pkg.Svc", "Get"},
		"Bare":             {"go_net_rpc", "", "Bare"},
	} {
		got := map[attribute.Key]string{}
		for _, kv := range sampler.attrs[name] {
			got[kv.Key] = kv.Value.AsString()
		}
		if got["rpc.system"] != want[0] || got["rpc.service"] != want[1] || got["rpc.method"] != want[2] {
			t.Errorf("span %q: the sampler saw %v, want rpc.system, rpc.service and rpc.method %v", name, sampler.attrs[name], want)
		}
	}
}

func TestTracingCallSpan(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"success", nil},
		{"server error", rpc.ServerError("boom")},
		{"transport error", dialErr("10.0.0.1:4000")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp, sr := newRecorder(t, nil)
			var inner trace.SpanContext
			send := func(ctx context.Context, call *middleware.Call) error {
				inner = trace.SpanContextFromContext(ctx)
				return tc.err
			}
			err := middleware.Tracing(tp)(send)(context.Background(), &middleware.Call{ServiceMethod: "HelloService.Say"})
			if err != tc.err {
				t.Fatalf("err = %v, want %v as is", err, tc.err)
			}
			spans := sr.Ended()
			if len(spans) != 1 {
				t.Fatalf("%d spans, want 1", len(spans))
			}
			s := spans[0]
			if s.Name() != "HelloService/Say" || s.SpanKind() != trace.SpanKindClient {
				t.Errorf("span = %q kind %v, want %q kind client", s.Name(), s.SpanKind(), "HelloService/Say")
			}
			if s.Parent().IsValid() {
				t.Errorf("span has parent %v, want a root span", s.Parent())
			}
			if got := s.InstrumentationScope().Name; got != "github.com/lbrpc/lbrpc/middleware" {
				t.Errorf("instrumentation scope = %q, want the middleware package", got)
			}
			a := attrs(s)
			for k, want := range map[attribute.Key]string{
				"rpc.system":  "go_net_rpc",
				"rpc.service": "HelloService",
				"rpc.method":  "Say",
			} {
				if got := a[k].AsString(); got != want {
					t.Errorf("attribute %s = %q, want %q", k, got, want)
				}
			}
			if !inner.Equal(s.SpanContext()) {
				t.Errorf("next ran under span %v, want the call span %v", inner, s.SpanContext())
			}
			checkStatus(t, s, tc.err)
		})
	}
}

func TestTracingMethodNames(t *testing.T) {
	for _, tc := range []struct {
		serviceMethod, service, method string
	}{
		{"HelloService.Say", "HelloService", "Say"},
		{"pkg.Service.Method", "pkg.Service", "Method"},
		{"NoDot", "", "NoDot"},
	} {
		tp, sr := newRecorder(t, nil)
		send := func(context.Context, *middleware.Call) error { return nil }
		middleware.Tracing(tp)(send)(context.Background(), &middleware.Call{ServiceMethod: tc.serviceMethod})
		a := attrs(sr.Ended()[0])
		if a["rpc.service"].AsString() != tc.service || a["rpc.method"].AsString() != tc.method {
			t.Errorf("%q: rpc.service %q rpc.method %q, want %q %q", tc.serviceMethod,
				a["rpc.service"].AsString(), a["rpc.method"].AsString(), tc.service, tc.method)
		}
	}
}

func TestTracingParent(t *testing.T) {
	// The call span is a child of the caller's span.
	tp, sr := newRecorder(t, nil)
	ctx, parent := tp.Tracer("test").Start(context.Background(), "caller")
	send := func(context.Context, *middleware.Call) error { return nil }
	middleware.Tracing(tp)(send)(ctx, &middleware.Call{ServiceMethod: "HelloService.Say"})
	parent.End()
	spans := sr.Ended()
	if len(spans) != 2 {
		t.Fatalf("%d spans, want 2", len(spans))
	}
	if got := spans[0].Parent(); !got.Equal(parent.SpanContext()) {
		t.Fatalf("call span parent = %v, want the caller's span %v", got, parent.SpanContext())
	}
}

func TestTracingAttempts(t *testing.T) {
	for _, tc := range []struct {
		name    string
		errs    []error // of the attempts in turn; then success
		max     int
		callErr bool
	}{
		{"first try", nil, 3, false},
		{"retried to success", []error{dialErr(nodeAddr(0)), brokenErr(nodeAddr(1))}, 3, false},
		{"retries run out", []error{dialErr(nodeAddr(0)), dialErr(nodeAddr(1)), dialErr(nodeAddr(2))}, 2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp, sr := newRecorder(t, nil)
			f := failing(tc.errs...)
			invoke := middleware.Chain(
				middleware.Tracing(tp),
				middleware.Retry(fast(middleware.RetryPolicy{Max: tc.max})),
				middleware.TracingAttempts(tp),
			)(f.invoke)
			err := invoke(context.Background(), &middleware.Call{ServiceMethod: "HelloService.Say"})
			if (err != nil) != tc.callErr {
				t.Fatalf("err = %v, want error: %v", err, tc.callErr)
			}
			spans := sr.Ended()
			n := f.attempts()
			if len(spans) != n+1 {
				t.Fatalf("%d spans for %d attempts, want one per attempt and one for the call", len(spans), n)
			}
			callSpan := spans[n] // ends last
			if callSpan.Name() != "HelloService/Say" {
				t.Fatalf("last span = %q, want the call span", callSpan.Name())
			}
			checkStatus(t, callSpan, err)
			for k, s := range spans[:n] {
				if s.Name() != "HelloService/Say attempt" {
					t.Errorf("attempt %d: span name %q, want %q", k, s.Name(), "HelloService/Say attempt")
				}
				if !s.Parent().Equal(callSpan.SpanContext()) {
					t.Errorf("attempt %d: parent %v, want the call span %v", k, s.Parent(), callSpan.SpanContext())
				}
				a := attrs(s)
				if got := a["lbrpc.attempt"].AsInt64(); got != int64(k) {
					t.Errorf("attempt %d: lbrpc.attempt = %d", k, got)
				}
				if got, want := a["server.address"].AsString(), f.seen[k].Addr[:len("10.0.0.1")]; got != want {
					t.Errorf("attempt %d: server.address = %q, want %q", k, got, want)
				}
				if got := a["server.port"].AsInt64(); got != 4000 {
					t.Errorf("attempt %d: server.port = %d, want 4000", k, got)
				}
				var want error
				if k < len(tc.errs) {
					want = tc.errs[k]
				}
				checkStatus(t, s, want)
			}
		})
	}
}

func TestTracingAttemptsAddr(t *testing.T) {
	// TracingAttempts works under any recording span, here the caller's.
	for _, tc := range []struct {
		addr     string
		wantHost string // "" for no server.address
		wantPort int64  // 0 for no server.port
	}{
		{"10.0.0.1:4000", "10.0.0.1", 4000},
		{"[::1]:8080", "::1", 8080},
		{"node-a.example:7", "node-a.example", 7},
		{"node-a", "node-a", 0},
		{"host:http", "host", 0},
		{"", "", 0},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			tp, sr := newRecorder(t, nil)
			ctx, parent := tp.Tracer("test").Start(context.Background(), "caller")
			defer parent.End()
			send := func(_ context.Context, call *middleware.Call) error {
				call.Addr = tc.addr
				return nil
			}
			middleware.TracingAttempts(tp)(send)(ctx, &middleware.Call{ServiceMethod: "HelloService.Say"})
			spans := sr.Ended()
			if len(spans) != 1 {
				t.Fatalf("%d spans, want 1", len(spans))
			}
			if !spans[0].Parent().Equal(parent.SpanContext()) {
				t.Errorf("attempt span parent = %v, want the caller's span", spans[0].Parent())
			}
			a := attrs(spans[0])
			host, hasHost := a["server.address"]
			port, hasPort := a["server.port"]
			if hasHost != (tc.wantHost != "") || host.AsString() != tc.wantHost {
				t.Errorf("server.address = %q (set: %v), want %q", host.AsString(), hasHost, tc.wantHost)
			}
			if hasPort != (tc.wantPort != 0) || port.AsInt64() != tc.wantPort {
				t.Errorf("server.port = %d (set: %v), want %d", port.AsInt64(), hasPort, tc.wantPort)
			}
		})
	}
}

func TestTracingNotSampled(t *testing.T) {
	errDown := errors.New("down")
	for _, tc := range []struct {
		name    string
		sampler sdktrace.Sampler
	}{
		{"never sample", sdktrace.NeverSample()},
		{"parent based, never sample", sdktrace.ParentBased(sdktrace.NeverSample())},
		// The attempt spans would be sampled on their own: TracingAttempts
		// must skip them because the call span is not.
		{"call span dropped", dropNamed("HelloService/Say")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp, sr := newRecorder(t, tc.sampler)
			f := failing(dialErr(nodeAddr(0)), errDown)
			invoke := middleware.Chain(
				middleware.Tracing(tp),
				middleware.Retry(fast(middleware.RetryPolicy{Max: 3})),
				middleware.TracingAttempts(tp),
			)(f.invoke)
			err := invoke(context.Background(), &middleware.Call{ServiceMethod: "HelloService.Say"})
			if !errors.Is(err, errDown) {
				t.Fatalf("err = %v, want %v: tracing must not change the outcome", err, errDown)
			}
			if got := f.attempts(); got != 2 {
				t.Fatalf("attempts = %d, want 2", got)
			}
			if got := len(sr.Started()); got != 0 {
				t.Fatalf("%d spans started, want none for an unsampled call", got)
			}
		})
	}
}

func TestTracingAttemptsWithoutCallSpan(t *testing.T) {
	// With no recording span in ctx, TracingAttempts makes no span.
	tp, sr := newRecorder(t, nil)
	send := func(context.Context, *middleware.Call) error { return nil }
	if err := middleware.TracingAttempts(tp)(send)(context.Background(), &middleware.Call{ServiceMethod: "S.M"}); err != nil {
		t.Fatalf("err = %v", err)
	}
	if got := len(sr.Started()); got != 0 {
		t.Fatalf("%d spans started, want 0", got)
	}
}

func TestTracingGlobalProvider(t *testing.T) {
	tp, sr := newRecorder(t, nil)
	prev := otel.GetTracerProvider()
	otel.SetTracerProvider(tp)
	t.Cleanup(func() { otel.SetTracerProvider(prev) })

	f := failing(dialErr(nodeAddr(0)))
	invoke := middleware.Chain(
		middleware.Tracing(nil),
		middleware.Retry(fast(middleware.RetryPolicy{Max: 1})),
		middleware.TracingAttempts(nil),
	)(f.invoke)
	if err := invoke(context.Background(), &middleware.Call{ServiceMethod: "HelloService/Say"}); err != nil {
		t.Fatalf("err = %v", err)
	}
	var names []string
	for _, s := range sr.Ended() {
		names = append(names, s.Name())
	}
	want := []string{"HelloService/Say attempt", "HelloService/Say attempt", "HelloService/Say"}
	if len(names) != len(want) {
		t.Fatalf("spans %q, want %q from the global provider", names, want)
	}
	for i := range want {
		if names[i] != want[i] {
			t.Fatalf("spans %q, want %q from the global provider", names, want)
		}
	}
}

// BenchmarkTracingNoop times Tracing and TracingAttempts with a noop
// provider (tracing on, nothing installed), against the bare send step and
// against the SDK.
func BenchmarkTracingNoop(b *testing.B) {
	send := func(_ context.Context, call *middleware.Call) error {
		call.Addr = "10.0.0.1:4000"
		return nil
	}
	traced := func(tp trace.TracerProvider) middleware.Invoker {
		return middleware.Chain(middleware.Tracing(tp), middleware.TracingAttempts(tp))(send)
	}
	never := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample()))
	always := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
	b.Cleanup(func() {
		never.Shutdown(context.Background())
		always.Shutdown(context.Background())
	})
	benchInvokers(b, []benchCase{
		{"baseline", send},
		{"noop", traced(noopTP)},
		{"sdk-never-sample", traced(never)},
		{"sdk-sampled", traced(always)},
	})
}
