package middleware_test

import (
	"context"
	"errors"
	"fmt"
	"net/rpc"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/lbrpc/lbrpc/internal/rpctest"
	"github.com/lbrpc/lbrpc/middleware"
	"github.com/lbrpc/lbrpc/picker"
	"github.com/lbrpc/lbrpc/transport"
)

// transitions records a breaker's state changes. It is safe for concurrent
// use.
type transitions struct {
	mu   sync.Mutex
	name string
	seen []string
}

func (tr *transitions) onChange(name string, from, to gobreaker.State) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.name = name
	tr.seen = append(tr.seen, from.String()+">"+to.String())
}

func (tr *transitions) get() []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return slices.Clone(tr.seen)
}

// breakerOver returns an invoker running calls through a breaker made from
// st to a send step that returns *next and counts the calls that reach it.
type breakerOver struct {
	mu      sync.Mutex
	next    error
	reached int
	invoke  middleware.Invoker
}

func newBreaker(st gobreaker.Settings) *breakerOver {
	b := &breakerOver{}
	b.invoke = middleware.CircuitBreaker(st)(func(context.Context, *middleware.Call) error {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.reached++
		return b.next
	})
	return b
}

// call makes one call whose send step returns err.
func (b *breakerOver) call(err error) error {
	b.mu.Lock()
	b.next = err
	b.mu.Unlock()
	return b.invoke(context.Background(), &middleware.Call{ServiceMethod: "S.M"})
}

func (b *breakerOver) reachedCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.reached
}

// isOpen reports whether err is the breaker refusing a call.
func isOpen(err error) bool { return errors.Is(err, middleware.ErrCircuitOpen) }

func TestCircuitBreakerOpens(t *testing.T) {
	for _, n := range []uint32{1, 3, 5} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			var tr transitions
			b := newBreaker(gobreaker.Settings{
				ReadyToTrip:   middleware.ConsecutiveFailures(n),
				Timeout:       time.Minute,
				OnStateChange: tr.onChange,
			})
			for i := range n {
				want := dialErr("a:1")
				if err := b.call(want); err != want {
					t.Fatalf("failure %d: err = %v, want the send step's %v", i, err, want)
				}
			}
			if got := b.reachedCount(); got != int(n) {
				t.Fatalf("%d calls reached the node, want %d", got, n)
			}
			err := b.call(nil)
			if !errors.Is(err, middleware.ErrCircuitOpen) || !errors.Is(err, gobreaker.ErrOpenState) {
				t.Fatalf("after %d failures: err = %v, want ErrCircuitOpen wrapping gobreaker.ErrOpenState", n, err)
			}
			if got := b.reachedCount(); got != int(n) {
				t.Fatalf("an open breaker let a call through (%d reached, want %d)", got, n)
			}
			if got, want := tr.get(), []string{"closed>open"}; !slices.Equal(got, want) {
				t.Fatalf("transitions = %q, want %q", got, want)
			}
			if tr.name != "lbrpc" {
				t.Fatalf("OnStateChange got name %q, want the default %q", tr.name, "lbrpc")
			}
		})
	}
}

func TestCircuitBreakerSuccessResets(t *testing.T) {
	b := newBreaker(gobreaker.Settings{ReadyToTrip: middleware.ConsecutiveFailures(2), Timeout: time.Minute})
	for range 5 {
		b.call(dialErr("a:1"))
		if err := b.call(nil); err != nil {
			t.Fatalf("err = %v: a success between failures should keep the breaker closed", err)
		}
	}
}

func TestCircuitBreakerWhatCounts(t *testing.T) {
	// Each error is returned 10 times to a breaker that would open on the
	// second consecutive failure.
	for _, tc := range []struct {
		name  string
		err   error
		opens bool
	}{
		{"dial", dialErr("a:1"), true},
		{"broken", brokenErr("a:1"), true},
		{"deadline", context.DeadlineExceeded, true},
		{"call deadline", &transport.Error{Addr: "a:1", Op: transport.OpCall, Err: context.DeadlineExceeded}, true},
		{"no nodes", picker.ErrNoNodes, true},
		{"joined transport errors", errors.Join(dialErr("a:1"), brokenErr("b:1")), true},
		{"server error", rpc.ServerError("boom"), false},
		{"joined ending in server error", errors.Join(dialErr("a:1"), rpc.ServerError("boom")), false},
		{"canceled", context.Canceled, false},
		{"call canceled", &transport.Error{Addr: "a:1", Op: transport.OpCall, Err: context.Canceled}, false},
		{"rate limited", middleware.ErrRateLimited, false},
		{"wrapped rate limited", fmt.Errorf("%w: rate: Wait(n=1) would exceed context deadline", middleware.ErrRateLimited), false},
		{"bad args", fmt.Errorf("%w: gob: cannot encode nil value", transport.ErrBadArgs), false},
		{"client closed", middleware.ErrClosed, false},
		{"success", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBreaker(gobreaker.Settings{ReadyToTrip: middleware.ConsecutiveFailures(2), Timeout: time.Minute})
			opened := false
			for range 10 {
				err := b.call(tc.err)
				if isOpen(err) {
					opened = true
					break
				}
				if err != tc.err {
					t.Fatalf("err = %v, want the send step's %v as is", err, tc.err)
				}
			}
			if opened != tc.opens {
				t.Fatalf("breaker opened = %v, want %v", opened, tc.opens)
			}
		})
	}
}

func TestCircuitBreakerExclusionsDoNotReset(t *testing.T) {
	// An excluded call counts neither way: it does not break a run of
	// failures.
	b := newBreaker(gobreaker.Settings{ReadyToTrip: middleware.ConsecutiveFailures(2), Timeout: time.Minute})
	b.call(dialErr("a:1"))
	b.call(context.Canceled)
	b.call(dialErr("a:1"))
	if err := b.call(nil); !isOpen(err) {
		t.Fatalf("err = %v, want ErrCircuitOpen: fail, cancel, fail is two failures in a row", err)
	}
}

func TestCircuitBreakerUserRules(t *testing.T) {
	// The caller's IsSuccessful and IsExcluded replace the defaults.
	t.Run("IsSuccessful", func(t *testing.T) {
		b := newBreaker(gobreaker.Settings{
			ReadyToTrip:  middleware.ConsecutiveFailures(1),
			Timeout:      time.Minute,
			IsSuccessful: func(err error) bool { return err == nil },
		})
		b.call(rpc.ServerError("boom"))
		if err := b.call(nil); !isOpen(err) {
			t.Fatalf("err = %v, want ErrCircuitOpen: IsSuccessful counts server errors as failures", err)
		}
	})
	t.Run("IsExcluded", func(t *testing.T) {
		errIgnored := errors.New("ignored")
		b := newBreaker(gobreaker.Settings{
			ReadyToTrip: middleware.ConsecutiveFailures(1),
			Timeout:     time.Minute,
			IsExcluded:  func(err error) bool { return errors.Is(err, errIgnored) },
		})
		b.call(errIgnored)
		if err := b.call(context.Canceled); isOpen(err) {
			t.Fatal("breaker opened on an error IsExcluded ignores")
		}
		// The default exclusion of context.Canceled is replaced.
		if err := b.call(nil); !isOpen(err) {
			t.Fatalf("err = %v, want ErrCircuitOpen: context.Canceled is not excluded by the user's rule", err)
		}
	})
}

func TestCircuitBreakerName(t *testing.T) {
	var tr transitions
	b := newBreaker(gobreaker.Settings{
		Name:          "payments",
		ReadyToTrip:   middleware.ConsecutiveFailures(1),
		Timeout:       time.Minute,
		OnStateChange: tr.onChange,
	})
	b.call(dialErr("a:1"))
	if tr.name != "payments" {
		t.Fatalf("OnStateChange got name %q, want %q", tr.name, "payments")
	}
}

// trip opens b with one failure and waits, in a bounded poll, for the
// breaker to let a probe through; the probe's send step returns probe.
func trip(t *testing.T, b *breakerOver, probe error) error {
	t.Helper()
	b.call(dialErr("a:1"))
	if err := b.call(nil); !isOpen(err) {
		t.Fatalf("err = %v, want ErrCircuitOpen after a failure", err)
	}
	var err error
	rpctest.Eventually(t, "a half-open probe", func() bool {
		err = b.call(probe)
		return !isOpen(err)
	})
	return err
}

func TestCircuitBreakerHalfOpen(t *testing.T) {
	for _, tc := range []struct {
		name  string
		probe error
		want  []string
	}{
		{"probe succeeds", nil, []string{"closed>open", "open>half-open", "half-open>closed"}},
		{"probe fails", dialErr("a:1"), []string{"closed>open", "open>half-open", "half-open>open"}},
		{"probe server error", rpc.ServerError("boom"), []string{"closed>open", "open>half-open", "half-open>closed"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var tr transitions
			b := newBreaker(gobreaker.Settings{
				ReadyToTrip:   middleware.ConsecutiveFailures(1),
				Timeout:       20 * time.Millisecond,
				OnStateChange: tr.onChange,
			})
			if err := trip(t, b, tc.probe); err != tc.probe {
				t.Fatalf("probe: err = %v, want the send step's %v", err, tc.probe)
			}
			if got := tr.get(); !slices.Equal(got, tc.want) {
				t.Fatalf("transitions = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestCircuitBreakerHalfOpenOneProbe(t *testing.T) {
	// While the half-open probe is in flight, other calls are refused with
	// ErrCircuitOpen wrapping gobreaker.ErrTooManyRequests.
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	var blocking sync.Once
	var mu sync.Mutex
	block := false
	invoke := middleware.CircuitBreaker(gobreaker.Settings{
		ReadyToTrip: middleware.ConsecutiveFailures(1),
		Timeout:     20 * time.Millisecond,
	})(func(context.Context, *middleware.Call) error {
		mu.Lock()
		b := block
		mu.Unlock()
		if !b {
			return dialErr("a:1")
		}
		blocking.Do(func() { entered <- struct{}{} })
		<-release
		return nil
	})
	call := func() error { return invoke(context.Background(), &middleware.Call{ServiceMethod: "S.M"}) }

	call() // opens
	mu.Lock()
	block = true
	mu.Unlock()
	probe := make(chan error, 1)
	go func() {
		var err error
		for {
			if err = call(); !isOpen(err) {
				break
			}
			time.Sleep(time.Millisecond)
		}
		probe <- err
	}()
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		close(release)
		<-probe
		t.Fatal("timed out waiting for the half-open probe")
	}
	err := call()
	close(release)
	if !isOpen(err) || !errors.Is(err, gobreaker.ErrTooManyRequests) {
		t.Fatalf("second call while probing: err = %v, want ErrCircuitOpen wrapping ErrTooManyRequests", err)
	}
	if err := <-probe; err != nil {
		t.Fatalf("probe: err = %v, want nil", err)
	}
	if err := call(); err != nil {
		t.Fatalf("after a good probe: err = %v, want nil", err)
	}
}

func TestCircuitBreakerFailureRatio(t *testing.T) {
	// FailureRatio(0.5, 4): the breaker opens on a failure once 4 calls
	// were counted and half of them failed.
	for _, tc := range []struct {
		name  string
		calls []error
		opens bool
	}{
		{"too few calls", []error{dialErr("a"), dialErr("a"), dialErr("a")}, false},
		{"half of four", []error{nil, nil, dialErr("a"), dialErr("a")}, true},
		{"below half", []error{nil, nil, nil, dialErr("a"), dialErr("a")}, false},
		{"below half then half", []error{nil, nil, nil, dialErr("a"), dialErr("a"), dialErr("a")}, true},
		{"server errors are successes", []error{rpc.ServerError("x"), rpc.ServerError("x"), rpc.ServerError("x"), dialErr("a"), dialErr("a")}, false},
		{"exclusions are not counted", []error{context.Canceled, context.Canceled, context.Canceled, context.Canceled,
			nil, nil, dialErr("a"), dialErr("a")}, true},
		{"exclusions do not make up the minimum", []error{context.Canceled, context.Canceled, context.Canceled,
			dialErr("a"), dialErr("a"), dialErr("a")}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBreaker(gobreaker.Settings{ReadyToTrip: middleware.FailureRatio(0.5, 4), Timeout: time.Minute})
			for i, e := range tc.calls {
				if err := b.call(e); isOpen(err) {
					t.Fatalf("call %d refused: the breaker opened early", i)
				}
			}
			if got := isOpen(b.call(nil)); got != tc.opens {
				t.Fatalf("breaker open = %v, want %v", got, tc.opens)
			}
		})
	}
}

func TestFailureRatio(t *testing.T) {
	for _, tc := range []struct {
		ratio float64
		min   uint32
		c     gobreaker.Counts
		want  bool
	}{
		{0.5, 4, gobreaker.Counts{Requests: 3, TotalFailures: 3}, false},
		{0.5, 4, gobreaker.Counts{Requests: 4, TotalSuccesses: 2, TotalFailures: 2}, true},
		{0.5, 4, gobreaker.Counts{Requests: 4, TotalSuccesses: 3, TotalFailures: 1}, false},
		{0.5, 4, gobreaker.Counts{Requests: 10, TotalSuccesses: 5, TotalFailures: 5}, true},
		{0.5, 4, gobreaker.Counts{Requests: 10, TotalSuccesses: 6, TotalFailures: 4}, false},
		{1, 1, gobreaker.Counts{Requests: 2, TotalSuccesses: 1, TotalFailures: 1}, false},
		{1, 1, gobreaker.Counts{Requests: 2, TotalFailures: 2}, true},
		{0, 0, gobreaker.Counts{Requests: 1, TotalSuccesses: 1}, true},
		// Excluded calls count neither way.
		{0.5, 4, gobreaker.Counts{Requests: 10, TotalExclusions: 6, TotalSuccesses: 2, TotalFailures: 2}, true},
		{0.5, 4, gobreaker.Counts{Requests: 10, TotalExclusions: 7, TotalSuccesses: 1, TotalFailures: 2}, false},
		// Nor do calls in flight: Requests counts them, before they end.
		{0.5, 4, gobreaker.Counts{Requests: 10, TotalFailures: 4}, true},
		{0.5, 4, gobreaker.Counts{Requests: 13, TotalSuccesses: 1, TotalFailures: 3}, true},
		{0.25, 4, gobreaker.Counts{Requests: 4, TotalFailures: 1}, false},
	} {
		if got := middleware.FailureRatio(tc.ratio, tc.min)(tc.c); got != tc.want {
			t.Errorf("FailureRatio(%v, %d)(%+v) = %v, want %v", tc.ratio, tc.min, tc.c, got, tc.want)
		}
	}
}

func TestConsecutiveFailures(t *testing.T) {
	for _, tc := range []struct {
		n, failures uint32
		want        bool
	}{
		{3, 2, false},
		{3, 3, true},
		{3, 4, true},
		{1, 1, true},
	} {
		c := gobreaker.Counts{Requests: 10, ConsecutiveFailures: tc.failures, TotalFailures: tc.failures}
		if got := middleware.ConsecutiveFailures(tc.n)(c); got != tc.want {
			t.Errorf("ConsecutiveFailures(%d) with %d in a row = %v, want %v", tc.n, tc.failures, got, tc.want)
		}
	}
}

func TestBreakerFailure(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"server error", rpc.ServerError("boom"), false},
		{"wrapped server error", fmt.Errorf("x: %w", rpc.ServerError("boom")), false},
		{"joined with server error", errors.Join(dialErr("a:1"), rpc.ServerError("boom")), false},
		{"answer not fitting the reply", fmt.Errorf("%w: gob: type mismatch", transport.ErrReplyMismatch), false},
		{"dial", dialErr("a:1"), true},
		{"broken", brokenErr("a:1"), true},
		{"bare shutdown", rpc.ErrShutdown, true},
		{"deadline", context.DeadlineExceeded, true},
		{"no nodes", picker.ErrNoNodes, true},
		{"plain", errors.New("x"), true},
		// Not failures of the node, but excluded by CircuitBreaker's
		// default IsExcluded rather than here.
		{"canceled", context.Canceled, true},
		{"rate limited", middleware.ErrRateLimited, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := middleware.BreakerFailure(tc.err); got != tc.want {
				t.Fatalf("BreakerFailure(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

func TestCircuitBreakerConcurrent(t *testing.T) {
	// Under -race: concurrent calls share one breaker, and once it opens
	// every call is refused.
	var tr transitions
	b := newBreaker(gobreaker.Settings{
		ReadyToTrip:   middleware.ConsecutiveFailures(5),
		Timeout:       time.Minute,
		OnStateChange: tr.onChange,
	})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				b.call(dialErr("a:1"))
			}
		})
	}
	wg.Wait()
	if got, want := tr.get(), []string{"closed>open"}; !slices.Equal(got, want) {
		t.Fatalf("transitions = %q, want %q", got, want)
	}
	// In-flight calls at the trip may also have reached the node, but not
	// many more than the five that tripped it.
	if got := b.reachedCount(); got < 5 || got > 5+8 {
		t.Fatalf("%d calls reached the node, want 5 to 13", got)
	}
	if err := b.call(nil); !isOpen(err) {
		t.Fatalf("err = %v, want ErrCircuitOpen", err)
	}
}

// BenchmarkCircuitBreaker times a closed breaker on calls that succeed,
// against the bare send step.
func BenchmarkCircuitBreaker(b *testing.B) {
	send := func(context.Context, *middleware.Call) error { return nil }
	benchInvokers(b, []benchCase{
		{"baseline", send},
		{"closed", middleware.CircuitBreaker(gobreaker.Settings{})(send)},
	})
	b.Run("open", func(b *testing.B) {
		invoke := middleware.CircuitBreaker(gobreaker.Settings{
			ReadyToTrip: middleware.ConsecutiveFailures(1),
			Timeout:     time.Hour,
		})(func(context.Context, *middleware.Call) error { return errors.New("down") })
		invoke(context.Background(), &middleware.Call{}) // opens it
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			ctx := context.Background()
			call := new(middleware.Call) // reused: the allocations reported are the middleware's
			for pb.Next() {
				*call = middleware.Call{ServiceMethod: "HelloService.Say"}
				if err := invoke(ctx, call); !isOpen(err) {
					b.Fatalf("err = %v, want ErrCircuitOpen", err)
				}
			}
		})
	})
}

// FailureRatio judges the calls that ended: calls in flight (which gobreaker
// counts in Requests before they run) neither dilute the share of failures
// nor make up minRequests.
func TestFailureRatioIgnoresCallsInFlight(t *testing.T) {
	for _, tc := range []struct {
		name      string
		ratio     float64
		min       uint32
		inFlight  int
		failures  int
		wantTrips bool
	}{
		{"dilution", 0.5, 4, 10, 6, true},
		{"min met by in-flight", 0.25, 4, 3, 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cb := middleware.CircuitBreaker(gobreaker.Settings{ReadyToTrip: middleware.FailureRatio(tc.ratio, tc.min), Timeout: time.Minute})
			release := make(chan struct{})
			var wg sync.WaitGroup
			var entered sync.WaitGroup
			entered.Add(tc.inFlight)
			slow := cb(func(context.Context, *middleware.Call) error { entered.Done(); <-release; return nil })
			for range tc.inFlight {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_ = slow(context.Background(), &middleware.Call{ServiceMethod: "S.M"})
				}()
			}
			entered.Wait()
			failing := cb(func(context.Context, *middleware.Call) error {
				return &transport.Error{Addr: "a:1", Op: transport.OpDial, Err: syscall.ECONNREFUSED}
			})
			for range tc.failures {
				_ = failing(context.Background(), &middleware.Call{ServiceMethod: "S.M"})
			}
			err := failing(context.Background(), &middleware.Call{ServiceMethod: "S.M"})
			close(release)
			wg.Wait()
			if tripped := errors.Is(err, middleware.ErrCircuitOpen); tripped != tc.wantTrips {
				t.Errorf("%d completed calls, all failed, %d in flight: tripped=%v, want %v", tc.failures, tc.inFlight, tripped, tc.wantTrips)
			}
		})
	}
}
