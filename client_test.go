package lbrpc_test

import (
	"context"
	"errors"
	"net"
	"net/rpc"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"
	"go.uber.org/goleak"
	"golang.org/x/time/rate"

	"github.com/lbrpc/lbrpc"
	"github.com/lbrpc/lbrpc/internal/rpctest"
	"github.com/lbrpc/lbrpc/middleware"
	"github.com/lbrpc/lbrpc/picker"
	"github.com/lbrpc/lbrpc/registry"
	"github.com/lbrpc/lbrpc/transport"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newClient builds a client over servers and closes it when the test ends.
func newClient(t *testing.T, servers []*rpctest.Server, opts ...lbrpc.Option) *lbrpc.Client {
	t.Helper()
	opts = append([]lbrpc.Option{lbrpc.WithRegistry(registry.Static(rpctest.Addrs(servers)...))}, opts...)
	c, err := lbrpc.New(opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestRoundRobinSpreadsEvenly(t *testing.T) {
	servers := rpctest.Start(t, 3, rpctest.Gob)
	c := newClient(t, servers, lbrpc.WithPicker(picker.RoundRobin()), lbrpc.WithRetry(3))
	ctx := context.Background()
	for i := 0; i < 300; i++ {
		var reply string
		if err := c.Call(ctx, "Hello.Say", "world", &reply); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if reply != "hello, world" {
			t.Fatalf("reply = %q, want %q", reply, "hello, world")
		}
	}
	for _, s := range servers {
		if got := s.Calls(); got != 100 {
			t.Errorf("%v got %d calls, want 100", s, got)
		}
	}
}

func TestCodecs(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode rpctest.Mode
		opts []transport.Option
	}{
		{"gob", rpctest.Gob, nil},
		{"jsonrpc", rpctest.JSON, []transport.Option{transport.JSONRPC()}},
		{"http", rpctest.HTTP, []transport.Option{transport.WithHTTP("")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			servers := rpctest.Start(t, 2, tc.mode)
			c := newClient(t, servers, lbrpc.WithTransportOptions(tc.opts...), lbrpc.WithPicker(picker.RoundRobin()))
			for i := 0; i < 4; i++ {
				var reply string
				if err := c.Call(context.Background(), "Hello.Who", "", &reply); err != nil {
					t.Fatalf("call: %v", err)
				}
				if want := servers[i%2].Addr; reply != servers[0].Addr && reply != servers[1].Addr {
					t.Fatalf("reply = %q, want a server address like %q", reply, want)
				}
			}
			for _, s := range servers {
				if s.Calls() != 2 {
					t.Errorf("%v got %d calls, want 2", s, s.Calls())
				}
			}
		})
	}
}

// A node killed in the middle of a run costs no call when retries are on.
func TestKilledNodeLosesNoCall(t *testing.T) {
	servers := rpctest.Start(t, 3, rpctest.Gob)
	c := newClient(t, servers, lbrpc.WithRetry(3))
	const workers, perWorker = 8, 60
	var done atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers*perWorker)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perWorker; i++ {
				var reply string
				if err := c.Call(context.Background(), "Hello.Say", "x", &reply); err != nil {
					errs <- err
				}
				if done.Add(1) == workers*perWorker/2 {
					servers[1].Kill()
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("call failed: %v", err)
	}
	before := servers[1].Calls()
	for i := 0; i < 30; i++ {
		var reply string
		if err := c.Call(context.Background(), "Hello.Say", "x", &reply); err != nil {
			t.Fatalf("call after kill: %v", err)
		}
	}
	if servers[1].Calls() != before {
		t.Errorf("dead node got calls after it died")
	}
}

// A restarted node gets traffic again once the transport re-dials it.
func TestRestartedNodeComesBack(t *testing.T) {
	servers := rpctest.Start(t, 2, rpctest.Gob)
	c := newClient(t, servers, lbrpc.WithRetry(2), lbrpc.WithTransportOptions(
		transport.WithBackoff(5*time.Millisecond, 20*time.Millisecond)))
	call := func() {
		t.Helper()
		var reply string
		if err := c.Call(context.Background(), "Hello.Say", "x", &reply); err != nil {
			t.Fatalf("call: %v", err)
		}
	}
	call()
	servers[0].Kill()
	for i := 0; i < 10; i++ {
		call()
	}
	if err := servers[0].Restart(); err != nil {
		t.Fatal(err)
	}
	rpctest.Eventually(t, "restarted node to get calls", func() bool {
		call()
		return servers[0].Calls() > 0
	})
}

// A user middleware sees every call, in order, with its node and attempt.
func TestUserMiddlewareSeesEveryCall(t *testing.T) {
	servers := rpctest.Start(t, 3, rpctest.Gob)
	var mu sync.Mutex
	var seen []string
	record := func(next middleware.Invoker) middleware.Invoker {
		return func(ctx context.Context, call *middleware.Call) error {
			err := next(ctx, call)
			mu.Lock()
			seen = append(seen, call.Args.(string)+"@"+call.Addr)
			mu.Unlock()
			return err
		}
	}
	c := newClient(t, servers, lbrpc.WithMiddleware(record))
	var want []string
	for i := 0; i < 9; i++ {
		arg := string(rune('a' + i))
		var who string
		if err := c.Call(context.Background(), "Hello.Who", arg, &who); err != nil {
			t.Fatal(err)
		}
		want = append(want, arg+"@"+who)
	}
	if strings.Join(seen, ",") != strings.Join(want, ",") {
		t.Errorf("middleware saw %v, want %v", seen, want)
	}
}

// The middleware can change the call, and short-circuit it.
func TestUserMiddlewareChangesAndShortCircuits(t *testing.T) {
	servers := rpctest.Start(t, 1, rpctest.Gob)
	errDenied := errors.New("denied")
	mw := func(next middleware.Invoker) middleware.Invoker {
		return func(ctx context.Context, call *middleware.Call) error {
			switch call.Args {
			case "deny":
				return errDenied
			case "rename":
				call.Args = "renamed"
			}
			return next(ctx, call)
		}
	}
	c := newClient(t, servers, lbrpc.WithCallMiddleware(mw))
	var reply string
	if err := c.Call(context.Background(), "Hello.Say", "deny", &reply); !errors.Is(err, errDenied) {
		t.Fatalf("err = %v, want %v", err, errDenied)
	}
	if servers[0].Calls() != 0 {
		t.Fatalf("short-circuited call reached the server")
	}
	if err := c.Call(context.Background(), "Hello.Say", "rename", &reply); err != nil || reply != "hello, renamed" {
		t.Fatalf("reply, err = %q, %v; want %q", reply, err, "hello, renamed")
	}
}

// chanRegistry is a user registry fed from a channel.
type chanRegistry struct{ sets chan []registry.Node }

func (r chanRegistry) Watch(context.Context) (registry.Watcher, error) {
	return &chanWatcher{sets: r.sets, stop: make(chan struct{})}, nil
}

type chanWatcher struct {
	sets chan []registry.Node
	stop chan struct{}
	once sync.Once
}

func (w *chanWatcher) Next() ([]registry.Node, error) {
	select {
	case s := <-w.sets:
		return s, nil
	case <-w.stop:
		return nil, registry.ErrStopped
	}
}

func (w *chanWatcher) Stop() error { w.once.Do(func() { close(w.stop) }); return nil }

func nodes(servers ...*rpctest.Server) []registry.Node {
	out := make([]registry.Node, len(servers))
	for i, s := range servers {
		out[i] = registry.Node{Addr: s.Addr, Weight: 1}
	}
	return out
}

// A registry that adds and removes nodes is followed without failed calls.
func TestRegistryUpdatesFollowedWithoutFailures(t *testing.T) {
	servers := rpctest.Start(t, 3, rpctest.Gob)
	sets := make(chan []registry.Node)
	c, err := lbrpc.New(lbrpc.WithRegistry(chanRegistry{sets}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var failures, calls atomic.Int64
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				var reply string
				if err := c.Call(ctx, "Hello.Say", "x", &reply); err != nil && ctx.Err() == nil {
					failures.Add(1)
					t.Errorf("call failed: %v", err)
				}
				calls.Add(1)
			}
		}()
	}
	steps := [][]*rpctest.Server{
		{servers[0]},
		{servers[0], servers[1]},
		{servers[1], servers[2]},
		{servers[2]},
		{servers[0], servers[1], servers[2]},
	}
	for _, step := range steps {
		sets <- nodes(step...)
		rpctest.Eventually(t, "client to take the new set", func() bool { return len(c.Nodes()) == len(step) })
		// Every node of the set must now receive calls.
		for _, s := range step {
			base := s.Calls()
			rpctest.Eventually(t, "new node to get calls", func() bool { return s.Calls() > base })
		}
	}
	cancel()
	wg.Wait()
	if failures.Load() != 0 {
		t.Fatalf("%d of %d calls failed during updates", failures.Load(), calls.Load())
	}
}

// laggingPicker keeps the first node set it is given: a user picker whose
// updates lag the client's.
type laggingPicker struct {
	picker.Picker
	set atomic.Bool
}

func (p *laggingPicker) Update(nodes []registry.Node) {
	if len(nodes) > 0 && !p.set.Swap(true) {
		p.Picker.Update(nodes)
	}
}

// A pick of a node the transport has removed is picked again avoiding it,
// so a picker whose set lags still lands the call on a node of the set.
func TestRepickAvoidsRemovedNode(t *testing.T) {
	servers := rpctest.Start(t, 2, rpctest.Gob)
	gone, stays := servers[0], servers[1]
	sets := make(chan []registry.Node)
	c, err := lbrpc.New(lbrpc.WithRegistry(chanRegistry{sets}), lbrpc.WithPicker(&laggingPicker{Picker: picker.PickFirst()}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sets <- nodes(gone, stays)
	sets <- nodes(stays)
	rpctest.Eventually(t, "the client to take the second set", func() bool { return len(c.Nodes()) == 1 })
	c.State() // waits for the update to reach the transport

	var reply string
	if err := c.Call(context.Background(), "Hello.Who", "", &reply); err != nil || reply != stays.Addr {
		t.Fatalf("reply, err = %q, %v; want %q from the node that stays", reply, err, stays.Addr)
	}
	if gone.Calls() != 0 {
		t.Fatalf("removed node served %d calls", gone.Calls())
	}
}

// A removed node is drained: its call in flight completes, then its
// connection closes.
func TestRemovedNodeDrains(t *testing.T) {
	servers := rpctest.Start(t, 2, rpctest.Gob)
	sets := make(chan []registry.Node)
	c, err := lbrpc.New(lbrpc.WithRegistry(chanRegistry{sets}), lbrpc.WithPicker(picker.RoundRobin()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sets <- nodes(servers[0])
	servers[0].SetLatency(300 * time.Millisecond)
	result := make(chan error, 1)
	go func() {
		var reply string
		result <- c.Call(context.Background(), "Hello.Say", "slow", &reply)
	}()
	rpctest.Eventually(t, "the slow call to start", func() bool { return servers[0].Calls() == 1 })
	sets <- nodes(servers[1])
	if err := <-result; err != nil {
		t.Fatalf("call in flight on a removed node failed: %v", err)
	}
	pool := c.Transport().(*transport.Pool)
	rpctest.Eventually(t, "removed node to leave the pool", func() bool {
		st := pool.State()
		return len(st) == 1 && st[0].Addr == servers[1].Addr
	})
}

func TestBadInput(t *testing.T) {
	servers := rpctest.Start(t, 1, rpctest.Gob)
	c := newClient(t, servers)
	var reply string
	var notPtr string
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name   string
		ctx    context.Context
		method string
		reply  any
		want   error
	}{
		{"nil reply", context.Background(), "Hello.Say", nil, lbrpc.ErrBadReply},
		{"nil pointer reply", context.Background(), "Hello.Say", (*string)(nil), lbrpc.ErrBadReply},
		{"non-pointer reply", context.Background(), "Hello.Say", notPtr, lbrpc.ErrBadReply},
		{"empty method", context.Background(), "", &reply, lbrpc.ErrBadMethod},
		{"method without dot", context.Background(), "HelloSay", &reply, lbrpc.ErrBadMethod},
		{"method ending in dot", context.Background(), "Hello.", &reply, lbrpc.ErrBadMethod},
		{"nil context", nil, "Hello.Say", &reply, lbrpc.ErrNilContext},
		{"cancelled context", cancelled, "Hello.Say", &reply, context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := c.Call(tc.ctx, tc.method, "x", tc.reply)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	t.Run("unknown method", func(t *testing.T) {
		err := c.Call(context.Background(), "Hello.Nope", "x", &reply)
		var se rpc.ServerError
		if !errors.As(err, &se) || !strings.Contains(string(se), "can't find method") {
			t.Fatalf("err = %v, want an rpc.ServerError naming the method", err)
		}
	})
	t.Run("application error", func(t *testing.T) {
		err := c.Call(context.Background(), "Hello.Fail", "boom", &reply)
		var se rpc.ServerError
		if !errors.As(err, &se) || string(se) != "failed: boom" {
			t.Fatalf("err = %v, want rpc.ServerError(\"failed: boom\")", err)
		}
	})
}

// A reply of the wrong type is the caller's error: ErrReplyMismatch, the
// reply untouched, no retry, and nothing held against the node, whose
// breaker, failure streak and other calls are as they were.
func TestReplyMismatch(t *testing.T) {
	servers := rpctest.Start(t, 2, rpctest.Gob)
	c := newClient(t, servers, lbrpc.WithRetry(3), lbrpc.WithPicker(picker.RoundRobin()),
		lbrpc.WithNodeBreaker(gobreaker.Settings{ReadyToTrip: middleware.ConsecutiveFailures(1)}),
		lbrpc.WithOutlierDetection(lbrpc.OutlierDetection{Consecutive: 1}))
	mustCall(t, c, 2)
	before := servers[0].Calls() + servers[1].Calls()
	for range 4 {
		n := 42
		err := c.Call(context.Background(), "Hello.Say", "x", &n)
		if !errors.Is(err, lbrpc.ErrReplyMismatch) || n != 42 {
			t.Fatalf("err = %v, reply %d: want ErrReplyMismatch and the reply untouched", err, n)
		}
	}
	if got := servers[0].Calls() + servers[1].Calls() - before; got != 4 {
		t.Fatalf("servers ran %d calls for 4, want no retry", got)
	}
	for _, s := range c.State() {
		if !s.Ready || s.Failures != 0 || s.Breaker != gobreaker.StateClosed || s.InFlight != 0 {
			t.Errorf("node state %+v, want ready, no failures, breaker closed", s)
		}
	}
	mustCall(t, c, 2)
}

func TestNewRejectsBadOptions(t *testing.T) {
	static := lbrpc.WithRegistry(registry.Static("127.0.0.1:1"))
	for _, tc := range []struct {
		name string
		opts []lbrpc.Option
	}{
		{"no registry", nil},
		{"nil registry", []lbrpc.Option{lbrpc.WithRegistry(nil)}},
		{"nil picker", []lbrpc.Option{static, lbrpc.WithPicker(nil)}},
		{"negative retry", []lbrpc.Option{static, lbrpc.WithRetry(-1)}},
		{"negative backoff", []lbrpc.Option{static, lbrpc.WithRetryPolicy(middleware.RetryPolicy{Max: 1, BaseBackoff: -1})}},
		{"zero burst", []lbrpc.Option{static, lbrpc.WithRateLimit(10, 0, middleware.Wait)}},
		{"zero rate", []lbrpc.Option{static, lbrpc.WithRateLimit(0, 1, middleware.Wait)}},
		{"bad rate mode", []lbrpc.Option{static, lbrpc.WithRateLimit(10, 1, middleware.RateLimitMode(7))}},
		{"zero timeout", []lbrpc.Option{static, lbrpc.WithTimeout(0)}},
		{"negative breaker timeout", []lbrpc.Option{static, lbrpc.WithCircuitBreaker(gobreaker.Settings{Timeout: -time.Second})}},
		{"nil transport", []lbrpc.Option{static, lbrpc.WithTransport(nil)}},
		{"bad transport option", []lbrpc.Option{static, lbrpc.WithTransportOptions(transport.WithDialTimeout(0))}},
		{"chain with retry", []lbrpc.Option{static, lbrpc.WithChain(), lbrpc.WithRetry(1)}},
		{"negative consecutive", []lbrpc.Option{static, lbrpc.WithOutlierDetection(lbrpc.OutlierDetection{Consecutive: -1})}},
		{"consecutive above int32", []lbrpc.Option{static, lbrpc.WithOutlierDetection(lbrpc.OutlierDetection{Consecutive: 1 << 32})}},
		{"negative ejection", []lbrpc.Option{static, lbrpc.WithOutlierDetection(lbrpc.OutlierDetection{BaseEjection: -time.Second})}},
		{"max ejection below base", []lbrpc.Option{static, lbrpc.WithOutlierDetection(lbrpc.OutlierDetection{BaseEjection: time.Minute, MaxEjection: time.Second})}},
		{"ejected percent over 100", []lbrpc.Option{static, lbrpc.WithOutlierDetection(lbrpc.OutlierDetection{MaxEjectedPercent: 101})}},
		{"negative ejected percent", []lbrpc.Option{static, lbrpc.WithOutlierDetection(lbrpc.OutlierDetection{MaxEjectedPercent: -1})}},
		{"negative node breaker timeout", []lbrpc.Option{static, lbrpc.WithNodeBreaker(gobreaker.Settings{Timeout: -time.Second})}},
		{"negative health interval", []lbrpc.Option{static, lbrpc.WithHealthCheck(lbrpc.HealthCheck{Interval: -time.Second})}},
		{"negative health threshold", []lbrpc.Option{static, lbrpc.WithHealthCheck(lbrpc.HealthCheck{Unhealthy: -1})}},
		{"bad health method", []lbrpc.Option{static, lbrpc.WithHealthCheck(lbrpc.HealthCheck{Method: "Check"})}},
		{"TCP health check with method", []lbrpc.Option{static, lbrpc.WithHealthCheck(lbrpc.HealthCheck{TCP: true, Method: "Health.Check"})}},
		{"no slow start window", []lbrpc.Option{static, lbrpc.WithSlowStart(lbrpc.SlowStart{})}},
		{"negative aggression", []lbrpc.Option{static, lbrpc.WithSlowStart(lbrpc.SlowStart{Window: time.Second, Aggression: -1})}},
		{"panic threshold over 100", []lbrpc.Option{static, lbrpc.WithPanicThreshold(101)}},
		{"negative panic threshold", []lbrpc.Option{static, lbrpc.WithPanicThreshold(-1)}},
		{"min share over 1", []lbrpc.Option{static, lbrpc.WithSlowStart(lbrpc.SlowStart{Window: time.Second, MinShare: 1.5})}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := lbrpc.New(tc.opts...)
			if err == nil {
				c.Close()
				t.Fatal("New succeeded, want an error")
			}
		})
	}
}

// refusingRegistry cannot be watched.
type refusingRegistry struct{}

func (refusingRegistry) Watch(context.Context) (registry.Watcher, error) {
	return nil, errors.New("refused")
}

// When New fails, it closes WithTransport's transport, whichever step
// fails and wherever the option stands: the client owns it from New on.
func TestNewClosesTransportOnError(t *testing.T) {
	static := lbrpc.WithRegistry(registry.Static("127.0.0.1:1"))
	for _, tc := range []struct {
		name string
		opts func(tr transport.Transport) []lbrpc.Option
	}{
		{"bad option before it", func(tr transport.Transport) []lbrpc.Option {
			return []lbrpc.Option{static, lbrpc.WithRetry(-1), lbrpc.WithTransport(tr)}
		}},
		{"no registry", func(tr transport.Transport) []lbrpc.Option {
			return []lbrpc.Option{lbrpc.WithTransport(tr)}
		}},
		{"middleware conflict", func(tr transport.Transport) []lbrpc.Option {
			return []lbrpc.Option{static, lbrpc.WithTransport(tr), lbrpc.WithChain(), lbrpc.WithRetry(1)}
		}},
		{"transport options with it", func(tr transport.Transport) []lbrpc.Option {
			return []lbrpc.Option{static, lbrpc.WithTransport(tr), lbrpc.WithTransportOptions(transport.WithDialTimeout(time.Second))}
		}},
		{"registry refuses", func(tr transport.Transport) []lbrpc.Option {
			return []lbrpc.Option{lbrpc.WithRegistry(refusingRegistry{}), lbrpc.WithTransport(tr)}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := transport.New()
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			c, err := lbrpc.New(tc.opts(tr)...)
			if err == nil {
				c.Close()
				t.Fatal("New succeeded, want an error")
			}
			var reply string
			if err := tr.Call(context.Background(), "127.0.0.1:1", "Hello.Say", "x", &reply); !errors.Is(err, transport.ErrClosed) {
				t.Fatalf("a call on the transport after New failed: %v, want transport.ErrClosed", err)
			}
		})
	}
}

func TestNoNodes(t *testing.T) {
	c, err := lbrpc.New(lbrpc.WithRegistry(registry.Static()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var reply string
	if err := c.Call(context.Background(), "Hello.Say", "x", &reply); !errors.Is(err, lbrpc.ErrNoNodes) {
		t.Fatalf("err = %v, want ErrNoNodes", err)
	}
}

// failingRegistry's watcher fails every Next: the registry has gone away.
type failingRegistry struct{ err error }

func (r failingRegistry) Watch(context.Context) (registry.Watcher, error) {
	return &failingWatcher{err: r.err, stop: make(chan struct{})}, nil
}

type failingWatcher struct {
	err  error
	stop chan struct{}
	once sync.Once
}

func (w *failingWatcher) Next() ([]registry.Node, error) {
	select {
	case <-w.stop:
		return nil, registry.ErrStopped
	default:
		return nil, w.err
	}
}
func (w *failingWatcher) Stop() error { w.once.Do(func() { close(w.stop) }); return nil }

func TestRegistryGoneAway(t *testing.T) {
	errGone := errors.New("registry unreachable")
	c, err := lbrpc.New(lbrpc.WithRegistry(failingRegistry{errGone}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var reply string
	err = c.Call(context.Background(), "Hello.Say", "x", &reply)
	if !errors.Is(err, lbrpc.ErrNoNodes) || !errors.Is(err, errGone) {
		t.Fatalf("err = %v, want ErrNoNodes wrapping the registry's error", err)
	}
	if _, err := lbrpc.New(lbrpc.WithRegistry(watchErrRegistry{})); !errors.Is(err, errWatch) {
		t.Fatalf("New with a failing Watch: err = %v, want %v", err, errWatch)
	}
}

var errWatch = errors.New("cannot watch")

type watchErrRegistry struct{}

func (watchErrRegistry) Watch(context.Context) (registry.Watcher, error) { return nil, errWatch }

// A registry that fails after a good set leaves the client on that set.
func TestRegistryFailureKeepsLastGoodSet(t *testing.T) {
	servers := rpctest.Start(t, 1, rpctest.Gob)
	sets := make(chan []registry.Node)
	errs := make(chan error)
	c, err := lbrpc.New(lbrpc.WithRegistry(flakyRegistry{sets, errs}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sets <- nodes(servers...)
	errs <- errors.New("lost the source")
	errs <- errors.New("still lost")
	var reply string
	if err := c.Call(context.Background(), "Hello.Say", "x", &reply); err != nil {
		t.Fatalf("call after registry errors: %v", err)
	}
	if len(c.Nodes()) != 1 {
		t.Fatalf("nodes = %v, want the last good set", c.Nodes())
	}
}

type flakyRegistry struct {
	sets chan []registry.Node
	errs chan error
}

func (r flakyRegistry) Watch(context.Context) (registry.Watcher, error) {
	return &flakyWatcher{r: r, stop: make(chan struct{})}, nil
}

type flakyWatcher struct {
	r    flakyRegistry
	stop chan struct{}
	once sync.Once
}

func (w *flakyWatcher) Next() ([]registry.Node, error) {
	select {
	case s := <-w.r.sets:
		return s, nil
	case err := <-w.r.errs:
		return nil, err
	case <-w.stop:
		return nil, registry.ErrStopped
	}
}
func (w *flakyWatcher) Stop() error { w.once.Do(func() { close(w.stop) }); return nil }

func TestClosedClient(t *testing.T) {
	servers := rpctest.Start(t, 1, rpctest.Gob)
	c := newClient(t, servers)
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	var reply string
	if err := c.Call(context.Background(), "Hello.Say", "x", &reply); !errors.Is(err, lbrpc.ErrClosed) {
		t.Fatalf("err = %v, want ErrClosed", err)
	}
	call := c.Go(context.Background(), "Hello.Say", "x", &reply, nil)
	if got := <-call.Done; !errors.Is(got.Error, lbrpc.ErrClosed) {
		t.Fatalf("Go after Close: err = %v, want ErrClosed", got.Error)
	}
}

// Close fails pending calls with ErrClosed, at once.
func TestCloseFailsPendingCalls(t *testing.T) {
	servers := rpctest.Start(t, 1, rpctest.Gob)
	servers[0].SetLatency(time.Hour)
	c := newClient(t, servers)
	const n = 5
	results := make(chan error, n)
	var replies [n]string
	for i := 0; i < n; i++ {
		go func() { results <- c.Call(context.Background(), "Hello.Say", "x", &replies[i]) }()
	}
	call := c.Go(context.Background(), "Hello.Say", "x", new(string), nil)
	rpctest.Eventually(t, "calls to reach the server", func() bool { return servers[0].Calls() == n+1 })
	c.Close()
	for i := 0; i < n; i++ {
		if err := <-results; !errors.Is(err, lbrpc.ErrClosed) {
			t.Errorf("pending call: err = %v, want ErrClosed", err)
		}
	}
	if got := <-call.Done; !errors.Is(got.Error, lbrpc.ErrClosed) {
		t.Errorf("pending Go call: err = %v, want ErrClosed", got.Error)
	}
	for i := range replies {
		if replies[i] != "" {
			t.Errorf("reply %d written after failure: %q", i, replies[i])
		}
	}
}

// Nothing writes into the caller's reply after Call returned: the server
// answers after the deadline, and the test reads the reply at once. Run with
// -race: a late write would be a data race.
func TestNoWriteAfterReturn(t *testing.T) {
	servers := rpctest.Start(t, 1, rpctest.Gob)
	servers[0].SetLatency(20 * time.Millisecond)
	c := newClient(t, servers, lbrpc.WithTransportOptions(transport.WithBackoff(time.Millisecond, 5*time.Millisecond)))
	for i := 0; i < 20; i++ {
		reply := "untouched"
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		err := c.Call(ctx, "Hello.Say", "late", &reply)
		cancel()
		if err == nil {
			t.Fatalf("call succeeded, want a deadline or node-down error")
		}
		if reply != "untouched" { // read right after return, racing any late write
			t.Fatalf("reply = %q after a timed-out call", reply)
		}
		reply = "mine" // and write it too
	}
	// Let the late answers arrive, so a late write would have happened.
	servers[0].SetLatency(0)
	rpctest.Eventually(t, "the node to answer again", func() bool {
		var reply string
		return c.Call(context.Background(), "Hello.Say", "x", &reply) == nil
	})
}

func TestGo(t *testing.T) {
	servers := rpctest.Start(t, 2, rpctest.Gob)
	c := newClient(t, servers)
	done := make(chan *lbrpc.Call, 4)
	replies := make([]string, 4)
	for i := range replies {
		c.Go(context.Background(), "Hello.Say", "go", &replies[i], done)
	}
	for range replies {
		call := <-done
		if call.Error != nil {
			t.Fatalf("Go: %v", call.Error)
		}
		if *call.Reply.(*string) != "hello, go" {
			t.Fatalf("reply = %q", *call.Reply.(*string))
		}
	}
	unbuffered := c.Go(context.Background(), "Hello.Say", "x", new(string), make(chan *lbrpc.Call))
	if !errors.Is(unbuffered.Error, lbrpc.ErrUnbufferedDone) {
		t.Fatalf("unbuffered done: err = %v, want ErrUnbufferedDone", unbuffered.Error)
	}
	bad := <-c.Go(context.Background(), "Hello.Say", "x", nil, nil).Done
	if !errors.Is(bad.Error, lbrpc.ErrBadReply) {
		t.Fatalf("Go with nil reply: err = %v, want ErrBadReply", bad.Error)
	}
}

// WithTimeout bounds calls whose context has none, and only those.
func TestDefaultTimeout(t *testing.T) {
	servers := rpctest.Start(t, 1, rpctest.Gob)
	servers[0].SetLatency(time.Hour)
	c := newClient(t, servers, lbrpc.WithTimeout(10*time.Millisecond))
	var reply string
	err := c.Call(context.Background(), "Hello.Say", "x", &reply)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
	var te *transport.Error
	if !errors.As(err, &te) || te.Addr != servers[0].Addr {
		t.Fatalf("err = %v, want a *transport.Error naming %s", err, servers[0].Addr)
	}
}

// Retries go to another node, and an application error is not retried.
func TestRetryGoesElsewhereButNotForServerErrors(t *testing.T) {
	servers := rpctest.Start(t, 3, rpctest.Gob)
	c := newClient(t, servers, lbrpc.WithRetry(3))
	servers[0].Kill()
	servers[1].Kill()
	for i := 0; i < 6; i++ {
		var who string
		if err := c.Call(context.Background(), "Hello.Who", "", &who); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if who != servers[2].Addr {
			t.Fatalf("answered by %q, want the live node", who)
		}
	}
	base := servers[2].Calls()
	var reply string
	err := c.Call(context.Background(), "Hello.Fail", "once", &reply)
	if _, ok := errors.AsType[rpc.ServerError](err); !ok {
		t.Fatalf("err = %v, want rpc.ServerError", err)
	}
	if got := servers[2].Calls() - base; got != 1 {
		t.Fatalf("application error ran %d times, want 1 (no retry)", got)
	}
}

// A dial that runs out of the dial timeout (a node that drops SYNs) is the
// node's failure, not the caller's deadline: it is retried elsewhere and
// counts against the node.
func TestDialTimeoutRetriedAndCounted(t *testing.T) {
	servers := rpctest.Start(t, 1, rpctest.Gob)
	const black = "127.0.0.1:9"
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		if addr == black {
			<-ctx.Done() // net's own error for the timeout, below
		}
		return d.DialContext(ctx, network, addr)
	}
	c := newClient(t, nil, lbrpc.WithRegistry(registry.Static(black, servers[0].Addr)),
		lbrpc.WithPicker(picker.PickFirst()), lbrpc.WithRetry(1),
		lbrpc.WithTransportOptions(transport.WithDialer(dial), transport.WithDialTimeout(50*time.Millisecond), transport.WithLazyDial()))
	var reply string
	if err := c.Call(context.Background(), "Hello.Say", "x", &reply); err != nil {
		t.Fatalf("err = %v, want the dial timeout retried on the other node", err)
	}
	if s := c.State()[0]; s.Failures != 1 || errors.Is(s.LastErr, context.DeadlineExceeded) {
		t.Fatalf("blackholed node %+v, want one failure, not a deadline", s)
	}
	if _, ok := errors.AsType[*net.OpError](c.State()[0].LastErr); !ok {
		t.Errorf("blackholed node's error %v does not reach net's *net.OpError", c.State()[0].LastErr)
	}
}

// Without retries, a dead node's failure carries its address.
func TestTransportErrorCarriesAddress(t *testing.T) {
	servers := rpctest.Start(t, 1, rpctest.Gob)
	c := newClient(t, servers)
	servers[0].Kill()
	var reply string
	err := c.Call(context.Background(), "Hello.Say", "x", &reply)
	var te *transport.Error
	if !errors.As(err, &te) || te.Addr != servers[0].Addr {
		t.Fatalf("err = %v, want *transport.Error for %s", err, servers[0].Addr)
	}
}

func TestCircuitBreakerOpens(t *testing.T) {
	servers := rpctest.Start(t, 1, rpctest.Gob)
	var opened atomic.Bool
	c := newClient(t, servers, lbrpc.WithCircuitBreaker(gobreaker.Settings{
		ReadyToTrip: middleware.ConsecutiveFailures(3),
		Timeout:     time.Hour,
		OnStateChange: func(_ string, _, to gobreaker.State) {
			if to == gobreaker.StateOpen {
				opened.Store(true)
			}
		},
	}))
	var reply string
	for i := 0; i < 5; i++ { // application errors do not trip it
		c.Call(context.Background(), "Hello.Fail", "x", &reply)
	}
	if opened.Load() {
		t.Fatal("breaker opened on application errors")
	}
	servers[0].Kill()
	for i := 0; i < 3; i++ {
		c.Call(context.Background(), "Hello.Say", "x", &reply)
	}
	err := c.Call(context.Background(), "Hello.Say", "x", &reply)
	if !errors.Is(err, lbrpc.ErrCircuitOpen) || !opened.Load() {
		t.Fatalf("err = %v, want ErrCircuitOpen after 3 transport failures", err)
	}
}

func TestRateLimitFailFast(t *testing.T) {
	servers := rpctest.Start(t, 1, rpctest.Gob)
	c := newClient(t, servers, lbrpc.WithRateLimit(rate.Every(time.Hour), 2, middleware.FailFast))
	var reply string
	for i := 0; i < 2; i++ {
		if err := c.Call(context.Background(), "Hello.Say", "x", &reply); err != nil {
			t.Fatalf("call %d within burst: %v", i, err)
		}
	}
	if err := c.Call(context.Background(), "Hello.Say", "x", &reply); !errors.Is(err, lbrpc.ErrRateLimited) {
		t.Fatalf("err = %v, want ErrRateLimited", err)
	}
}

// In wait mode a call never waits past its deadline.
func TestRateLimitWaitHonoursDeadline(t *testing.T) {
	servers := rpctest.Start(t, 1, rpctest.Gob)
	c := newClient(t, servers, lbrpc.WithRateLimit(rate.Every(time.Hour), 1, middleware.Wait))
	var reply string
	if err := c.Call(context.Background(), "Hello.Say", "x", &reply); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.Call(ctx, "Hello.Say", "x", &reply); !errors.Is(err, lbrpc.ErrRateLimited) {
		t.Fatalf("err = %v, want ErrRateLimited without waiting an hour", err)
	}
}

// A connection that breaks under a call is retried for an idempotent method
// and not for one marked NonIdempotent: the server may have run it.
func TestNonIdempotentNotResent(t *testing.T) {
	for _, tc := range []struct {
		name        string
		policy      middleware.RetryPolicy
		wantRetried bool
	}{
		{"idempotent", middleware.RetryPolicy{Max: 2}, true},
		{"non-idempotent", middleware.RetryPolicy{Max: 2, NonIdempotent: []string{"Hello.Say"}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			servers := rpctest.Start(t, 2, rpctest.Gob)
			c := newClient(t, servers, lbrpc.WithRetryPolicy(tc.policy), lbrpc.WithPicker(picker.RoundRobin()))
			var reply string
			for i := 0; i < 2; i++ { // connect to both
				if err := c.Call(context.Background(), "Hello.Say", "x", &reply); err != nil {
					t.Fatal(err)
				}
			}
			servers[0].SetLatency(time.Hour)
			servers[1].SetLatency(time.Hour)
			errc := make(chan error, 1)
			go func() { errc <- c.Call(context.Background(), "Hello.Say", "x", &reply) }()
			rpctest.Eventually(t, "the call to reach a server", func() bool { return servers[0].Calls()+servers[1].Calls() == 3 })
			first, other := servers[0], servers[1]
			if other.Calls() == 2 {
				first, other = other, first
			}
			other.SetLatency(0)
			first.Kill() // the connection breaks under the call
			err := <-errc
			if tc.wantRetried {
				if err != nil {
					t.Fatalf("idempotent call not saved by retry: %v", err)
				}
				if other.Calls() != 2 {
					t.Fatalf("the other node got %d calls, want 2", other.Calls())
				}
				return
			}
			var te *transport.Error
			if !errors.As(err, &te) || te.Unsent() || te.Addr != first.Addr {
				t.Fatalf("err = %v, want the broken connection's error", err)
			}
			if other.Calls() != 1 {
				t.Fatalf("non-idempotent call was re-sent")
			}
		})
	}
}

// fence watches the node sets a client gives its picker and its transport.
type fence struct {
	mu         sync.Mutex
	tr, pk     map[string]bool // the last sets given to each
	violations []string
}

func addrSet[T any](xs []T, addr func(T) string) map[string]bool {
	m := make(map[string]bool, len(xs))
	for _, x := range xs {
		m[addr(x)] = true
	}
	return m
}

type fencedTransport struct {
	*transport.Pool
	f *fence
}

func (t fencedTransport) Update(addrs []string) {
	t.f.mu.Lock()
	next := addrSet(addrs, func(a string) string { return a })
	for a := range t.f.pk {
		if !next[a] {
			t.f.violations = append(t.f.violations, "the transport dropped "+a+" while the picker could still pick it")
		}
	}
	t.f.tr = next
	t.f.mu.Unlock()
	t.Pool.Update(addrs)
}

type fencedPicker struct {
	picker.Picker
	f *fence
}

func (p fencedPicker) Update(nodes []registry.Node) {
	p.f.mu.Lock()
	for _, n := range nodes {
		if !p.f.tr[n.Addr] {
			p.f.violations = append(p.f.violations, "the picker got "+n.Addr+" before the transport")
		}
	}
	p.f.pk = addrSet(nodes, func(n registry.Node) string { return n.Addr })
	p.f.mu.Unlock()
	p.Picker.Update(nodes)
}

// The transport hears of a node before the picker can pick it, and drains
// it only after the picker stopped picking it: a node that leaves and
// comes back is never refused as removed while the picker offers it.
func TestNodeSetReachesTransportAroundPicker(t *testing.T) {
	servers := rpctest.Start(t, 2, rpctest.Gob)
	a := registry.Node{Addr: servers[0].Addr, Weight: 1}
	b := registry.Node{Addr: servers[1].Addr, Weight: 1}
	pool, err := transport.New()
	if err != nil {
		t.Fatal(err)
	}
	f := &fence{}
	push := make(pushRegistry)
	c, err := lbrpc.New(lbrpc.WithRegistry(push), lbrpc.WithTransport(fencedTransport{pool, f}),
		lbrpc.WithPicker(fencedPicker{picker.RoundRobin(), f}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 6 { // each send waits for the watcher, so for the set before it to be applied
		if i%2 == 0 {
			push <- []registry.Node{a, b}
		} else {
			push <- []registry.Node{a}
		}
	}
	push <- []registry.Node{b}
	mustCall(t, c, 2)
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.violations) > 0 {
		t.Fatalf("node-set order broken:\n%s", strings.Join(f.violations, "\n"))
	}
}

// Close fails a Call waiting in the chain (here for a rate-limit token,
// 2.5s away) with ErrClosed at once, not when its token comes.
func TestCloseEndsCallWaitingInChain(t *testing.T) {
	s := rpctest.Start(t, 1, rpctest.Gob)
	c, err := lbrpc.New(
		lbrpc.WithRegistry(registry.Static(rpctest.Addrs(s)...)),
		lbrpc.WithRateLimit(rate.Limit(0.4), 1, middleware.Wait),
	)
	if err != nil {
		t.Fatal(err)
	}
	var reply string
	if err := c.Call(context.Background(), "Hello.Say", "x", &reply); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		var r string
		errc <- c.Call(context.Background(), "Hello.Say", "x", &r)
	}()
	time.Sleep(50 * time.Millisecond) // the call waits for a token
	c.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, lbrpc.ErrClosed) {
			t.Fatalf("pending call: err = %v, want ErrClosed", err)
		}
	case <-time.After(time.Second): // a hang guard: the token is 2.5s away
		err := <-errc
		t.Fatalf("pending Call still blocked 1s after Close returned (it ended later with %v)", err)
	}
}

// stoppedRegistry's watcher reports that its source went away: Next
// returns ErrStopped although Stop was not called.
type stoppedRegistry struct{}

func (stoppedRegistry) Watch(context.Context) (registry.Watcher, error) { return stoppedWatcher{}, nil }

type stoppedWatcher struct{}

func (stoppedWatcher) Next() ([]registry.Node, error) { return nil, registry.ErrStopped }
func (stoppedWatcher) Stop() error                    { return nil }

// If the watcher ends (ErrStopped) before its first set, calls fail at once
// with ErrNoNodes carrying the registry's error, rather than wait for a set
// that will never come.
func TestWatcherEndsBeforeFirstSet(t *testing.T) {
	c, err := lbrpc.New(lbrpc.WithRegistry(stoppedRegistry{}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var reply string
	err = c.Call(ctx, "Hello.Say", "x", &reply)
	if ctx.Err() != nil {
		t.Fatalf("Call waited until its deadline (err = %v): the registry loop ended without marking the client ready", err)
	}
	if !errors.Is(err, lbrpc.ErrNoNodes) || !errors.Is(err, registry.ErrStopped) {
		t.Fatalf("err = %v, want ErrNoNodes and registry.ErrStopped", err)
	}
}
