package middleware

import (
	"context"
	"errors"
	"net"
	"net/rpc"
	"strconv"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/semconv/v1.37.0/rpcconv"

	"github.com/lbrpc/lbrpc/picker"
	"github.com/lbrpc/lbrpc/transport"
)

// MeterName is the instrumentation scope of lbrpc's metrics.
const MeterName = "github.com/lbrpc/lbrpc"

// AttemptDurationName is the histogram of attempts that MetricsAttempts
// records, in milliseconds, like rpc.client.duration.
const AttemptDurationName = "lbrpc.client.attempt.duration"

// Metrics returns middleware that records the duration of every call, in
// milliseconds, in the rpc.client.duration histogram of the OpenTelemetry
// semantic conventions, with the attributes rpc.system, rpc.service and
// rpc.method, and error.type when the call failed (see ErrorType). Placed
// outermost, it measures what the caller waits for: rate-limit waits,
// breaker refusals and retries included. A nil mp means the global
// MeterProvider.
//
// Attempts are measured by MetricsAttempts, placed inside Retry;
// lbrpc.WithMetrics installs both. Recording allocates nothing once a
// method and error type have been seen. An error making the instrument
// goes to otel.Handle, as in OpenTelemetry's own instrumentation.
func Metrics(mp metric.MeterProvider) Middleware {
	if _, ok := mp.(noop.MeterProvider); ok {
		return func(next Invoker) Invoker { return next }
	}
	h, err := rpcconv.NewClientDuration(meterOf(mp))
	if err != nil {
		otel.Handle(err) // h records nothing then
	}
	hist := h.Inst()
	var opts recordOpts
	return func(next Invoker) Invoker {
		return func(ctx context.Context, call *Call) error {
			start := time.Since(epoch)
			err := next(ctx, call)
			hist.Record(ctx, millis(time.Since(epoch)-start), opts.get(call.ServiceMethod, "", ErrorType(err))...)
			return err
		}
	}
}

// MetricsAttempts returns middleware that records the duration of every
// attempt, in milliseconds, in the lbrpc.client.attempt.duration histogram,
// with the attributes of Metrics and the node's server.address and
// server.port: how the picker spread the calls, and how each node answered.
// It belongs inside Retry, where each attempt passes. A nil mp means the
// global MeterProvider.
func MetricsAttempts(mp metric.MeterProvider) Middleware {
	if _, ok := mp.(noop.MeterProvider); ok {
		return func(next Invoker) Invoker { return next }
	}
	hist, err := meterOf(mp).Float64Histogram(AttemptDurationName,
		metric.WithDescription("Measures the duration of each attempt of an outbound RPC, on the node it went to."),
		metric.WithUnit("ms"))
	if err != nil {
		otel.Handle(err)
		hist = noop.Float64Histogram{}
	}
	var opts recordOpts
	return func(next Invoker) Invoker {
		return func(ctx context.Context, call *Call) error {
			start := time.Since(epoch)
			err := next(ctx, call)
			hist.Record(ctx, millis(time.Since(epoch)-start), opts.get(call.ServiceMethod, call.Addr, ErrorType(err))...)
			return err
		}
	}
}

// ErrorType is the error.type attribute value of a failed call or attempt:
// a short, fixed name for each kind of failure lbrpc tells apart, so that
// metrics keep a low cardinality. It is "" for nil.
//
//	server_error   the server answered with an error (rpc.ServerError)
//	timeout        the context's deadline passed
//	canceled       the caller cancelled the context
//	circuit_open   the client-wide breaker refused the call
//	rate_limited   the rate limit refused the call
//	no_nodes       no node could be picked
//	closed         the client was closed
//	bad_args       the codec could not encode the args
//	reply_mismatch the answer did not fit the reply given
//	transport      the node could not be reached or did not answer
//	_OTHER         anything else (a user middleware's own error)
func ErrorType(err error) string {
	if err == nil {
		return ""
	}
	// The caller's and the client's own reasons first: they may wrap the
	// transport error that was in progress.
	switch {
	case errors.Is(err, ErrClosed):
		return "closed"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, ErrCircuitOpen):
		return "circuit_open"
	case errors.Is(err, ErrRateLimited):
		return "rate_limited"
	case errors.Is(err, picker.ErrNoNodes):
		return "no_nodes"
	case errors.Is(err, transport.ErrBadArgs):
		return "bad_args"
	case errors.Is(err, transport.ErrReplyMismatch):
		return "reply_mismatch"
	}
	if _, ok := errors.AsType[rpc.ServerError](err); ok {
		return "server_error"
	}
	if _, ok := errors.AsType[*transport.Error](err); ok {
		return "transport"
	}
	return semconv.ErrorTypeOther.Value.AsString()
}

// recordOpts caches the record options of each attribute combination: an
// attribute set and the option made of it both allocate.
type recordOpts struct {
	c cache[optKey, []metric.RecordOption]
}

type optKey struct{ method, addr, errType string }

func (r *recordOpts) get(method, addr, errType string) []metric.RecordOption {
	k := optKey{method, addr, errType}
	if v, ok := r.c.load(k); ok {
		return v
	}
	svc, m := splitMethod(method)
	attrs := []attribute.KeyValue{
		semconv.RPCSystemKey.String(RPCSystem),
		semconv.RPCService(svc),
		semconv.RPCMethod(m),
	}
	if addr != "" {
		attrs = append(attrs, serverAttrs(addr)...)
	}
	if errType != "" {
		attrs = append(attrs, semconv.ErrorTypeKey.String(errType))
	}
	return r.c.store(k, []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(attrs...))})
}

// serverAttrs are server.address and server.port of a node address.
func serverAttrs(addr string) []attribute.KeyValue {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return []attribute.KeyValue{semconv.ServerAddress(addr)}
	}
	attrs := []attribute.KeyValue{semconv.ServerAddress(host)}
	if p, err := strconv.Atoi(port); err == nil {
		attrs = append(attrs, semconv.ServerPort(p))
	}
	return attrs
}

func meterOf(mp metric.MeterProvider) metric.Meter {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	return mp.Meter(MeterName)
}

// epoch is the origin of the durations measured: time.Since(epoch) reads
// only the monotonic clock, where time.Now reads the wall clock too.
var epoch = time.Now()

func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
