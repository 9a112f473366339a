package middleware

import (
	"context"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

const tracerName = "github.com/lbrpc/lbrpc/middleware"

// RPCSystem is the rpc.system attribute value of lbrpc spans. net/rpc has no
// value in the semantic conventions, so lbrpc uses this one.
const RPCSystem = "go_net_rpc"

// Tracing returns middleware that makes one client span per call, named
// "Service/Method" as the semantic conventions name RPC spans
// ("HelloService/Say" for a call of "HelloService.Say"), with the
// attributes rpc.system, rpc.service and rpc.method, given when the span
// starts so that samplers see them. An error is recorded on the span and
// sets its status. A nil tp means the global TracerProvider.
//
// Attempts are traced by TracingAttempts, placed inside Retry, as child
// spans; lbrpc.WithTracing installs both.
func Tracing(tp trace.TracerProvider) Middleware {
	if _, ok := tp.(noop.TracerProvider); ok {
		// A no-op provider makes no spans: skip the link, and the context
		// it would allocate per call.
		return func(next Invoker) Invoker { return next }
	}
	tracer := tracerOf(tp)
	var starts spanStarts
	return func(next Invoker) Invoker {
		return func(ctx context.Context, call *Call) error {
			st := starts.get(call.ServiceMethod)
			ctx, span := tracer.Start(ctx, st.name, st.opts...)
			defer span.End()
			err := next(ctx, call)
			if err != nil && span.IsRecording() {
				span.RecordError(err)
				span.SetStatus(codes.Error, err.Error())
			}
			return err
		}
	}
}

// TracingAttempts returns middleware that makes one child span per attempt,
// named "Service/Method attempt", with the attempt number (lbrpc.attempt,
// 0 for the first) and the node (server.address, server.port). It belongs
// inside Retry, under Tracing: when the context carries no recording span
// (no Tracing outside, or the call not sampled) it makes no span. A nil tp
// means the global TracerProvider.
func TracingAttempts(tp trace.TracerProvider) Middleware {
	tracer := tracerOf(tp)
	var starts spanStarts
	return func(next Invoker) Invoker {
		return func(ctx context.Context, call *Call) error {
			if !trace.SpanFromContext(ctx).IsRecording() {
				return next(ctx, call) // the call is not sampled
			}
			ctx, span := tracer.Start(ctx, starts.get(call.ServiceMethod).attempt)
			defer span.End()
			err := next(ctx, call)
			span.SetAttributes(AttemptKey.Int(call.Attempt))
			if call.Addr != "" {
				span.SetAttributes(serverAttrs(call.Addr)...)
			}
			if err != nil {
				span.RecordError(err)
				span.SetStatus(codes.Error, err.Error())
			}
			return err
		}
	}
}

// spanStarts caches, per service method, what its spans start with: names
// and options made per call would allocate.
type spanStarts struct {
	c cache[string, *spanStart]
}

type spanStart struct {
	name, attempt string                  // "Service/Method", "Service/Method attempt"
	opts          []trace.SpanStartOption // the call span's: kind client, the rpc.* attributes
}

func (c *spanStarts) get(serviceMethod string) *spanStart {
	if st, ok := c.c.load(serviceMethod); ok {
		return st
	}
	svc, method := splitMethod(serviceMethod)
	name := method
	if svc != "" {
		name = svc + "/" + method
	}
	st := &spanStart{name: name, attempt: name + " attempt", opts: []trace.SpanStartOption{
		trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(semconv.RPCSystemKey.String(RPCSystem), semconv.RPCService(svc), semconv.RPCMethod(method)),
	}}
	return c.c.store(serviceMethod, st)
}

// AttemptKey is the attribute of an attempt span that numbers it.
const AttemptKey = attribute.Key("lbrpc.attempt")

func tracerOf(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return tp.Tracer(tracerName)
}

// splitMethod splits "Service.Method" at its last dot.
func splitMethod(sm string) (service, method string) {
	if i := strings.LastIndexByte(sm, '.'); i >= 0 {
		return sm[:i], sm[i+1:]
	}
	return "", sm
}
