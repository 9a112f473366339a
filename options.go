package lbrpc

import (
	"errors"
	"time"

	"github.com/sony/gobreaker/v2"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/time/rate"

	"github.com/lbrpc/lbrpc/middleware"
	"github.com/lbrpc/lbrpc/picker"
	"github.com/lbrpc/lbrpc/registry"
	"github.com/lbrpc/lbrpc/transport"
)

// Option configures New. Options are checked by New: a bad value is an
// error from New, never a panic later.
type Option func(*config) error

type config struct {
	registry  registry.Registry
	picker    picker.Picker
	transport transport.Transport
	trOpts    []transport.Option
	timeout   time.Duration

	tracing    bool
	tp         trace.TracerProvider
	limiter    *rate.Limiter
	limitMode  middleware.RateLimitMode
	breaker    *gobreaker.Settings
	retry      *middleware.RetryPolicy
	perCall    []middleware.Middleware
	perAttempt []middleware.Middleware
	chain      []middleware.Middleware // WithChain: replaces all of the above
	chainSet   bool
}

func defaultConfig() config {
	return config{picker: picker.RoundRobin()}
}

// WithRegistry sets where the client finds its nodes. Required.
func WithRegistry(r registry.Registry) Option {
	return func(c *config) error {
		if r == nil {
			return errors.New("lbrpc: nil registry")
		}
		c.registry = r
		return nil
	}
}

// WithPicker sets how a node is chosen per attempt (default
// picker.RoundRobin()). A picker serves one client.
func WithPicker(p picker.Picker) Option {
	return func(c *config) error {
		if p == nil {
			return errors.New("lbrpc: nil picker")
		}
		c.picker = p
		return nil
	}
}

// WithRetry retries a failed attempt at most n times, on other nodes, with
// the defaults of middleware.RetryPolicy (backoff, budget, what is retried).
func WithRetry(n int) Option {
	return WithRetryPolicy(middleware.RetryPolicy{Max: n})
}

// WithRetryPolicy sets the retry middleware's whole policy.
func WithRetryPolicy(p middleware.RetryPolicy) Option {
	return func(c *config) error {
		if p.Max < 0 {
			return errors.New("lbrpc: negative retry count")
		}
		if p.BaseBackoff < 0 || p.MaxBackoff < 0 {
			return errors.New("lbrpc: negative retry backoff")
		}
		c.retry = &p
		return nil
	}
}

// WithCircuitBreaker adds a client-wide circuit breaker (see
// middleware.CircuitBreaker for the defaults of zero fields).
func WithCircuitBreaker(st gobreaker.Settings) Option {
	return func(c *config) error {
		if st.Timeout < 0 || st.Interval < 0 || st.BucketPeriod < 0 {
			return errors.New("lbrpc: negative circuit breaker duration")
		}
		c.breaker = &st
		return nil
	}
}

// WithRateLimit limits calls to r per second with bursts of burst, across
// the client. In middleware.Wait mode a call waits for a token, never past
// its deadline; in middleware.FailFast mode it fails with ErrRateLimited.
func WithRateLimit(r rate.Limit, burst int, mode middleware.RateLimitMode) Option {
	return func(c *config) error {
		if r <= 0 || burst <= 0 {
			return errors.New("lbrpc: rate limit needs a positive rate and burst")
		}
		if mode != middleware.Wait && mode != middleware.FailFast {
			return errors.New("lbrpc: unknown rate limit mode")
		}
		c.limiter, c.limitMode = rate.NewLimiter(r, burst), mode
		return nil
	}
}

// WithTracing traces every call, and each attempt as a child span, with
// OpenTelemetry. A nil tp means the global TracerProvider.
func WithTracing(tp trace.TracerProvider) Option {
	return func(c *config) error {
		c.tracing, c.tp = true, tp
		return nil
	}
}

// WithTimeout bounds calls whose context has no deadline (default: none).
// The bound covers the whole call, retries included.
func WithTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return errors.New("lbrpc: timeout must be positive")
		}
		c.timeout = d
		return nil
	}
}

// WithTransport sets the transport. The client owns it: Close closes it.
func WithTransport(t transport.Transport) Option {
	return func(c *config) error {
		if t == nil {
			return errors.New("lbrpc: nil transport")
		}
		c.transport = t
		return nil
	}
}

// WithTransportOptions configures the default transport: dialer, codec
// (transport.JSONRPC()), HTTP, timeouts and backoff.
func WithTransportOptions(opts ...transport.Option) Option {
	return func(c *config) error {
		c.trOpts = append(c.trOpts, opts...)
		return nil
	}
}

// WithMiddleware adds middleware that runs once per attempt, inside retry,
// in the order given: it sees the node of each attempt (Call.Addr after next
// returns) and the attempt number.
func WithMiddleware(mws ...middleware.Middleware) Option {
	return func(c *config) error {
		c.perAttempt = append(c.perAttempt, mws...)
		return nil
	}
}

// WithCallMiddleware adds middleware that runs once per call, outside retry
// and inside the circuit breaker, in the order given.
func WithCallMiddleware(mws ...middleware.Middleware) Option {
	return func(c *config) error {
		c.perCall = append(c.perCall, mws...)
		return nil
	}
}

// WithChain sets the whole chain, outermost first, for users who want
// another order: compose the built-ins (middleware.Tracing,
// middleware.RateLimit, middleware.CircuitBreaker, middleware.Retry, ...)
// and their own. It cannot be combined with the options that add
// middleware.
func WithChain(mws ...middleware.Middleware) Option {
	return func(c *config) error {
		c.chain, c.chainSet = mws, true
		return nil
	}
}

// middleware returns the chain in the default order.
func (c *config) middleware() ([]middleware.Middleware, error) {
	builtins := c.tracing || c.limiter != nil || c.breaker != nil || c.retry != nil ||
		len(c.perCall) > 0 || len(c.perAttempt) > 0
	if c.chainSet {
		if builtins {
			return nil, errors.New("lbrpc: WithChain cannot be combined with options that add middleware")
		}
		return c.chain, nil
	}
	var mws []middleware.Middleware
	if c.tracing {
		mws = append(mws, middleware.Tracing(c.tp))
	}
	if c.limiter != nil {
		mws = append(mws, middleware.RateLimit(c.limiter, c.limitMode))
	}
	if c.breaker != nil {
		mws = append(mws, middleware.CircuitBreaker(*c.breaker))
	}
	mws = append(mws, c.perCall...)
	if c.retry != nil {
		mws = append(mws, middleware.Retry(*c.retry))
	}
	if c.tracing {
		mws = append(mws, middleware.TracingAttempts(c.tp))
	}
	return append(mws, c.perAttempt...), nil
}
