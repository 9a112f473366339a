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

// Tracing returns middleware that makes one client span per call, named by
// the service method ("HelloService.Say"), with the attributes rpc.system,
// rpc.service and rpc.method. An error is recorded on the span and sets its
// status. A nil tp means the global TracerProvider.
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
	// Made once: an option converted to an interface per call allocates.
	start := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient)}
	return func(next Invoker) Invoker {
		return func(ctx context.Context, call *Call) error {
			ctx, span := tracer.Start(ctx, call.ServiceMethod, start...)
			defer span.End()
			if span.IsRecording() {
				svc, method := splitMethod(call.ServiceMethod)
				span.SetAttributes(
					semconv.RPCSystemKey.String(RPCSystem),
					semconv.RPCService(svc),
					semconv.RPCMethod(method),
				)
			}
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
// named "<Service.Method> attempt", with the attempt number
// (lbrpc.attempt, 0 for the first) and the node (server.address,
// server.port). It belongs inside Retry, under Tracing: when the context
// carries no recording span (no Tracing outside, or the call not sampled) it
// makes no span. A nil tp means the global TracerProvider.
func TracingAttempts(tp trace.TracerProvider) Middleware {
	tracer := tracerOf(tp)
	return func(next Invoker) Invoker {
		return func(ctx context.Context, call *Call) error {
			if !trace.SpanFromContext(ctx).IsRecording() {
				return next(ctx, call) // the call is not sampled
			}
			ctx, span := tracer.Start(ctx, call.ServiceMethod+" attempt")
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
