package lbrpc

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/sony/gobreaker/v2"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/time/rate"

	"github.com/lbrpc/lbrpc/health"
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
	metrics    bool
	mp         metric.MeterProvider
	limiter    *rate.Limiter
	limitMode  middleware.RateLimitMode
	breaker    *gobreaker.Settings
	retry      *middleware.RetryPolicy
	perCall    []middleware.Middleware
	perAttempt []middleware.Middleware
	chain      []middleware.Middleware // WithChain: replaces all of the above
	chainSet   bool

	outlier     *OutlierDetection   // nil: off
	nodeBreaker *gobreaker.Settings // nil: off
	healthCheck *HealthCheck        // nil: off
	slowStart   *SlowStart          // nil: off
	panicAt     int                 // WithPanicThreshold's percent
	now         func() time.Time    // the clock of ejections and slow start
}

func defaultConfig() config {
	od := OutlierDetection{}.withDefaults()
	return config{picker: picker.LeastLoaded(), outlier: &od, now: time.Now}
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
// picker.LeastLoaded(), which steers away from slow, overloaded and failing
// nodes; picker.RoundRobin() gives the nodes strictly in turn). A picker
// serves one client.
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

// WithTransport sets the transport. The client owns it from New on: Close
// closes it, and so does New when it fails.
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
	// WithMetrics is allowed with WithChain: it adds only its gauges then.
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
	if c.metrics {
		mws = append(mws, middleware.Metrics(c.mp))
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
	if c.metrics {
		mws = append(mws, middleware.MetricsAttempts(c.mp))
	}
	return append(mws, c.perAttempt...), nil
}

// OutlierDetection configures passive outlier ejection, Envoy's
// "consecutive gateway failure" detector: a node whose calls fail at the
// transport level Consecutive times in a row is ejected (taken out of the
// ready set) for BaseEjection times the number of times it was ejected,
// capped at MaxEjection, then returns. With health checks on
// (WithHealthCheck) it returns earlier, as soon as a health check passes
// (see KeepEjected). Zero fields take the defaults.
//
// What counts as a failure: no answer from the node, that is a
// *transport.Error, including a failed dial and a timed-out call (the
// deadline counts). An answer resets the streak, even an rpc.ServerError
// (the method ran) or one that did not fit its reply (ErrReplyMismatch),
// and so does a success. A call cancelled by its caller or cut by Close
// counts neither way, nor does one the transport refused to send while it
// waits to redial the node (transport.ErrNodeDown: the node is already out
// of the ready set, as unreachable), nor one whose deadline passed before
// it was sent, nor one whose args could not be encoded (ErrBadArgs).
//
// Outlier detection is on by default, with the defaults below: a client that
// keeps sending calls to a node that does not answer is not load balancing.
// Turn it off with Disable.
type OutlierDetection struct {
	// Consecutive is the number of failures in a row that ejects a node.
	// Default 5.
	Consecutive int
	// BaseEjection is the first ejection's length; the nth lasts n times as
	// long. For each BaseEjection a returned node then serves without being
	// ejected, the count drops by one. Default 30s.
	BaseEjection time.Duration
	// MaxEjection caps an ejection's length. Default 300s, and never less
	// than BaseEjection.
	MaxEjection time.Duration
	// MaxEjectedPercent caps the share of the node set ejected at once, in
	// percent: a node is ejected only if the ejected nodes, it included,
	// stay within it (so with the default 50, one of two nodes may be
	// ejected, and a lone node never is). Default 50; 100 allows ejecting
	// every node, in which case the client panics (see Client.Panicking).
	MaxEjectedPercent int
	// KeepEjected: a successful health check does not end an ejection.
	//
	// By default, with health checks on (WithHealthCheck), a probe begun
	// during a node's ejection that passes and leaves the node healthy
	// ends the ejection at once, as Envoy's
	// successful_active_health_check_uneject_host does: that is the first
	// such probe for a node the health check never judged unhealthy, and
	// the HealthCheck.Healthy-th pass in a row for one it did. The node
	// returns to the ready set (slow starting, with WithSlowStart) with a
	// new failure streak; its ejection count is kept, so a node that fails
	// again soon is ejected for longer. This trusts the health check to see
	// what calls see: a probe that passes while calls fail (a TCP probe of
	// a server whose methods hang, say) brings the node back at every
	// probe, to fail Consecutive calls again. Set KeepEjected then, and
	// ejections last their whole time. Without health checks it changes
	// nothing.
	KeepEjected bool
	// Disable turns outlier detection off.
	Disable bool
}

func (o OutlierDetection) withDefaults() OutlierDetection {
	if o.Consecutive == 0 {
		o.Consecutive = 5
	}
	if o.BaseEjection == 0 {
		o.BaseEjection = 30 * time.Second
	}
	if o.MaxEjection == 0 {
		o.MaxEjection = max(300*time.Second, o.BaseEjection)
	}
	if o.MaxEjectedPercent == 0 {
		o.MaxEjectedPercent = 50
	}
	return o
}

// WithOutlierDetection sets how nodes that stop answering are ejected (see
// OutlierDetection; on by default). An ejection lasts its whole time unless
// a health check (WithHealthCheck) passes first, which ends it (unless
// OutlierDetection.KeepEjected). OutlierDetection{Disable: true} turns it
// off.
func WithOutlierDetection(o OutlierDetection) Option {
	return func(c *config) error {
		if o.Disable {
			c.outlier = nil
			return nil
		}
		if o.Consecutive < 0 || o.BaseEjection < 0 || o.MaxEjection < 0 {
			return errors.New("lbrpc: negative outlier detection setting")
		}
		if o.Consecutive > math.MaxInt32 {
			return errors.New("lbrpc: outlier detection's Consecutive is above 2^31-1")
		}
		if o.MaxEjectedPercent < 0 || o.MaxEjectedPercent > 100 {
			return errors.New("lbrpc: outlier detection's MaxEjectedPercent must be within 0..100")
		}
		o = o.withDefaults()
		if o.MaxEjection < o.BaseEjection {
			return errors.New("lbrpc: outlier detection's MaxEjection is below BaseEjection")
		}
		c.outlier = &o
		return nil
	}
}

// WithPanicThreshold sets when the client enters panic mode (see
// Client.Panicking): when fewer than percent of the set's nodes are ready,
// the picker is given every node, as Envoy's healthy panic threshold does.
// With few nodes left, those few would take the whole load and might fall
// over too; a cluster that is mostly failing is often failing for a reason
// of its own (a bad health check, a breaker set too tight) and every node
// may be worth trying. With percent 0, the default, panic mode starts only
// when no node is ready. Envoy's default is 50. percent must be within
// 0..100.
func WithPanicThreshold(percent int) Option {
	return func(c *config) error {
		if percent < 0 || percent > 100 {
			return errors.New("lbrpc: panic threshold must be within 0..100")
		}
		c.panicAt = percent
		return nil
	}
}

// WithNodeBreaker gives each node a circuit breaker of its own (gobreaker,
// one per node, separate from WithCircuitBreaker's client-wide one). A node
// whose breaker is open leaves the ready set; once st.Timeout has passed
// its breaker turns half-open and the node returns, and the next calls
// picked for it are the breaker's probes: if they succeed the breaker
// closes, if one fails it opens again. A call picked for a node whose
// breaker refuses it (half-open with its probes in flight) is picked again
// elsewhere, and fails with an error wrapping ErrNodeCircuitOpen, never
// sent, only when no other node will do. In panic mode the breakers are
// not consulted.
//
// Zero fields of st take gobreaker's defaults (open after more than 5
// failures in a row, 60s open, one half-open probe), except that, as for
// middleware.CircuitBreaker, an answer from the server (even an
// rpc.ServerError) is a success, and a call cancelled by its caller or cut
// by Close is not counted. Each breaker's Name is the node's address, and
// st.OnStateChange, if set, sees every node's transitions. It runs with
// the breaker's lock held (gobreaker's rule), and at times with the
// client's, so it must return at once and must not call the client or the
// breaker (Client.State would deadlock). Off by default.
func WithNodeBreaker(st gobreaker.Settings) Option {
	return func(c *config) error {
		if st.Timeout < 0 || st.Interval < 0 || st.BucketPeriod < 0 {
			return errors.New("lbrpc: negative node breaker duration")
		}
		c.nodeBreaker = &st
		return nil
	}
}

// HealthCheck configures active health checks. Zero fields take the
// defaults.
type HealthCheck struct {
	// Interval is the time between two probes of a node, jittered by up
	// to 10% either way; a node's first probe comes at a random time within
	// the first interval. Default 5s.
	Interval time.Duration
	// Timeout bounds each probe. Default 1s, or Interval if shorter.
	Timeout time.Duration
	// Unhealthy is the number of failed probes in a row that takes a
	// healthy node out of the ready set. Default 3.
	Unhealthy int
	// Healthy is the number of passed probes in a row that brings an
	// unhealthy node back, and then also ends its outlier ejection if it
	// was ejected (see OutlierDetection.KeepEjected). Default 2.
	Healthy int
	// Method is the net/rpc method called on the node, through the client's
	// transport (the connection calls use), with a health.Request and a
	// *health.Response; the probe passes when it answers health.Serving.
	// Default "Health.Check" (health.Register). Servers may serve their own
	// method of that shape.
	Method string
	// Service is sent as health.Request.Service: empty asks about the
	// server as a whole.
	Service string
	// TCP probes by opening (and closing) a TCP connection to the node's
	// address instead, with a plain net.Dialer rather than the transport's,
	// for servers without a health service. Method and Service must be
	// empty.
	TCP bool
}

func (h HealthCheck) withDefaults() HealthCheck {
	if h.Interval == 0 {
		h.Interval = 5 * time.Second
	}
	if h.Timeout == 0 {
		h.Timeout = min(time.Second, h.Interval)
	}
	if h.Unhealthy == 0 {
		h.Unhealthy = 3
	}
	if h.Healthy == 0 {
		h.Healthy = 2
	}
	if h.Method == "" && !h.TCP {
		h.Method = health.Name + ".Check"
	}
	return h
}

// WithHealthCheck probes every node in the background, on an interval,
// and keeps the nodes that fail h.Unhealthy probes in a row out of the
// ready set until they pass h.Healthy in a row (see HealthCheck). A node is
// presumed healthy until its probes say otherwise.
//
// With outlier detection on (the default), a passed probe also ends an
// outlier ejection early: a node ejected for failing calls is back as soon
// as a probe begun during its ejection passes and leaves it healthy (see
// OutlierDetection.KeepEjected, which turns this off).
//
// The probes run in goroutines owned by the client, one per node; Close
// stops them and waits. Off by default.
func WithHealthCheck(h HealthCheck) Option {
	return func(c *config) error {
		if h.Interval < 0 || h.Timeout < 0 || h.Unhealthy < 0 || h.Healthy < 0 {
			return errors.New("lbrpc: negative health check setting")
		}
		if h.TCP && (h.Method != "" || h.Service != "") {
			return errors.New("lbrpc: a TCP health check takes no Method or Service")
		}
		if h.Method != "" {
			if dot := strings.LastIndexByte(h.Method, '.'); dot <= 0 || dot == len(h.Method)-1 {
				return fmt.Errorf("%w: health check %q", ErrBadMethod, h.Method)
			}
		}
		h = h.withDefaults()
		c.healthCheck = &h
		return nil
	}
}

// SlowStart configures Envoy's slow start: a node that joins the set, or
// returns to the ready set (after an ejection, a failed health check, an
// open breaker or a lost connection), gets a growing part of its full share
// of traffic over Window, so that a cold node (empty caches, JIT, pools
// being filled) is not flooded. At time t after it joined, the node gets
// about max(MinShare, (t/Window)^(1/Aggression)) of its full share.
//
// The nodes of the client's first set do not slow start (they are all
// equally cold), nor does a node that returns when no other node is
// serving.
type SlowStart struct {
	// Window is how long the ramp lasts. Required.
	Window time.Duration
	// Aggression shapes the ramp: 1 is linear, above 1 gives more traffic
	// early, below 1 less. Default 1.
	Aggression float64
	// MinShare is the part of its share a node gets at the start, within
	// (0, 1]. Default 0.1.
	MinShare float64
}

func (s SlowStart) withDefaults() SlowStart {
	if s.Aggression == 0 {
		s.Aggression = 1
	}
	if s.MinShare == 0 {
		s.MinShare = 0.1
	}
	return s
}

// share returns the part of its full share a node gets elapsed after it
// began its slow start.
func (s *SlowStart) share(elapsed time.Duration) float64 {
	if elapsed >= s.Window {
		return 1
	}
	f := max(float64(elapsed), 0) / float64(s.Window)
	if s.Aggression != 1 {
		f = math.Pow(f, 1/s.Aggression)
	}
	return max(s.MinShare, f)
}

// WithSlowStart ramps the traffic of joining and returning nodes (see
// SlowStart). It works with any picker: when the picker picks a node in
// slow start, the client keeps the pick with the node's current share as
// probability, and otherwise picks again avoiding it. Off by default.
func WithSlowStart(s SlowStart) Option {
	return func(c *config) error {
		if s.Window <= 0 {
			return errors.New("lbrpc: slow start needs a positive window")
		}
		if s.Aggression < 0 || math.IsNaN(s.Aggression) || math.IsInf(s.Aggression, 0) {
			return errors.New("lbrpc: slow start's Aggression must be positive")
		}
		if s.MinShare < 0 || s.MinShare > 1 || math.IsNaN(s.MinShare) {
			return errors.New("lbrpc: slow start's MinShare must be within (0, 1]")
		}
		s = s.withDefaults()
		c.slowStart = &s
		return nil
	}
}

// withClock sets the clock of ejections and slow start (tests).
func withClock(now func() time.Time) Option {
	return func(c *config) error {
		if now == nil {
			return errors.New("lbrpc: nil clock")
		}
		c.now = now
		return nil
	}
}
