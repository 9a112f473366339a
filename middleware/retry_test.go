package middleware_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/rpc"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lbrpc/lbrpc/internal/rpctest"
	"github.com/lbrpc/lbrpc/middleware"
	"github.com/lbrpc/lbrpc/picker"
	"github.com/lbrpc/lbrpc/transport"
)

// noBackoff makes retries immediate: a jitter drawn from [0, 1ns) is 0.
const noBackoff = time.Nanosecond

// fast returns p with no backoff and, unless p has one, a budget that never
// runs dry.
func fast(p middleware.RetryPolicy) middleware.RetryPolicy {
	p.BaseBackoff, p.MaxBackoff = noBackoff, noBackoff
	if p.Budget == nil {
		p.Budget = middleware.NewRetryBudget(100, 0) // deposits 100 retries a call
	}
	return p
}

// run calls ServiceMethod through Retry(p) over f and returns the call and
// its error.
func run(ctx context.Context, p middleware.RetryPolicy, f *fakeSend, serviceMethod string) (*middleware.Call, error) {
	call := &middleware.Call{ServiceMethod: serviceMethod}
	return call, middleware.Retry(p)(f.invoke)(ctx, call)
}

func TestRetryable(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"dial", dialErr("a:1"), true},
		{"node down", &transport.Error{Addr: "a:1", Op: transport.OpDial, Err: transport.ErrNodeDown}, true},
		{"node removed", &transport.Error{Addr: "a:1", Op: transport.OpDial, Err: transport.ErrNodeRemoved}, true},
		{"call shutdown", brokenErr("a:1"), true},
		{"call unexpected EOF", &transport.Error{Addr: "a:1", Op: transport.OpCall, Err: io.ErrUnexpectedEOF}, true},
		{"wrapped dial", fmt.Errorf("outer: %w", dialErr("a:1")), true},
		{"bare rpc.ErrShutdown", rpc.ErrShutdown, true},
		{"server error", rpc.ServerError("boom"), false},
		{"wrapped server error", fmt.Errorf("outer: %w", rpc.ServerError("boom")), false},
		{"canceled", context.Canceled, false},
		{"deadline", context.DeadlineExceeded, false},
		{"call canceled", &transport.Error{Addr: "a:1", Op: transport.OpCall, Err: context.Canceled}, false},
		{"call deadline", &transport.Error{Addr: "a:1", Op: transport.OpCall, Err: context.DeadlineExceeded}, false},
		{"no nodes", picker.ErrNoNodes, false},
		// As the client reports it while the registry fails, with a net.Error.
		{"no nodes, registry's DNS error", fmt.Errorf("%w (registry: %w)", picker.ErrNoNodes, &net.DNSError{Err: "server misbehaving", Name: "_rpc._tcp.example.com", IsTemporary: true}), false},
		{"no nodes, registry's EOF", fmt.Errorf("%w (registry: %w)", picker.ErrNoNodes, io.ErrUnexpectedEOF), false},
		{"client closed", transport.ErrClosed, false},
		{"circuit open", middleware.ErrCircuitOpen, false},
		{"rate limited", middleware.ErrRateLimited, false},
		{"plain", errors.New("lbrpc: something else"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := middleware.Retryable(tc.err); got != tc.want {
				t.Fatalf("Retryable(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

// TestUnsent checks that Unsent walks the whole error tree: in a chain the
// outermost error that says sent or unsent decides, and a join is unsent
// only if some part says unsent and none says sent, in any order.
func TestUnsent(t *testing.T) {
	dial, broken, plain := dialErr("a:1"), brokenErr("b:1"), errors.New("x")
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"dial", dial, true},
		{"wrapped dial", fmt.Errorf("outer: %w", dial), true},
		{"joined dial", errors.Join(plain, dial), true},
		{"call", broken, false},
		{"bare rpc.ErrShutdown", rpc.ErrShutdown, false},
		{"server error", rpc.ServerError("boom"), false},
		{"plain", plain, false},
		// The outermost error with an opinion decides.
		{"dial wrapping call", &transport.Error{Addr: "a:1", Op: transport.OpDial, Err: broken}, true},
		{"call wrapping dial", &transport.Error{Addr: "b:1", Op: transport.OpCall, Err: dial}, false},
		// A join, as Retry returns: unsent only if no part may have been sent.
		{"join dial, call", errors.Join(dial, broken), false},
		{"join call, dial", errors.Join(broken, dial), false},
		{"join of dials", errors.Join(dial, dialErr("c:1")), true},
		{"join of no opinions", errors.Join(plain, rpc.ErrShutdown), false},
		{"empty join", errors.Join(nil), false},
		{"wrapped join dial, call", fmt.Errorf("outer: %w", errors.Join(dial, broken)), false},
		{"join in join, sent deep", errors.Join(dial, errors.Join(plain, fmt.Errorf("w: %w", broken))), false},
		{"join in join, unsent", errors.Join(errors.Join(plain, dial), plain), true},
		{"Errorf with two %w", fmt.Errorf("%w; %w", broken, dial), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := middleware.Unsent(tc.err); got != tc.want {
				t.Fatalf("Unsent(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

func TestRetryWhichErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		mk   func(addr string) error
		want int // attempts with Max 3
	}{
		{"dial", dialErr, 4},
		{"call shutdown", brokenErr, 4},
		{"server error", func(string) error { return rpc.ServerError("boom") }, 1},
		{"canceled", func(string) error { return context.Canceled }, 1},
		{"deadline", func(string) error { return context.DeadlineExceeded }, 1},
		{"no nodes", func(string) error { return picker.ErrNoNodes }, 1},
		{"plain", func(string) error { return errors.New("lbrpc: no nodes available") }, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := always(tc.mk)
			_, err := run(context.Background(), fast(middleware.RetryPolicy{Max: 3}), f, "S.M")
			if err == nil {
				t.Fatal("err = nil, want the attempts' error")
			}
			if got := f.attempts(); got != tc.want {
				t.Fatalf("attempts = %d, want %d (err %v)", got, tc.want, err)
			}
		})
	}
}

func TestRetryMax(t *testing.T) {
	for _, tc := range []struct {
		max, fails, want int
	}{
		{max: -1, fails: 10, want: 1},
		{max: 0, fails: 10, want: 1},
		{max: 1, fails: 10, want: 2},
		{max: 3, fails: 10, want: 4},
		{max: 3, fails: 2, want: 3}, // succeeds on the third
		{max: 3, fails: 0, want: 1},
	} {
		t.Run(fmt.Sprintf("max=%d/fails=%d", tc.max, tc.fails), func(t *testing.T) {
			f := &fakeSend{err: func(n int) error {
				if n < tc.fails {
					return dialErr(nodeAddr(n))
				}
				return nil
			}}
			_, err := run(context.Background(), fast(middleware.RetryPolicy{Max: tc.max}), f, "S.M")
			if got := f.attempts(); got != tc.want {
				t.Fatalf("attempts = %d, want %d", got, tc.want)
			}
			if wantErr := tc.fails >= tc.want; (err != nil) != wantErr {
				t.Fatalf("err = %v, want error: %v", err, wantErr)
			}
		})
	}
}

func TestRetryAttemptAndTried(t *testing.T) {
	f := always(dialErr)
	call, _ := run(context.Background(), fast(middleware.RetryPolicy{Max: 3}), f, "S.M")
	for k, got := range f.seen {
		want := attempt{Attempt: k, Addr: nodeAddr(k)}
		for i := range k {
			want.Tried = append(want.Tried, nodeAddr(i))
		}
		if got.Attempt != want.Attempt || !slices.Equal(got.Tried, want.Tried) {
			t.Fatalf("attempt %d saw Attempt=%d Tried=%q, want Attempt=%d Tried=%q",
				k, got.Attempt, got.Tried, want.Attempt, want.Tried)
		}
	}
	if call.Attempt != 3 {
		t.Fatalf("call.Attempt = %d after 4 attempts, want 3", call.Attempt)
	}
	if want := []string{nodeAddr(0), nodeAddr(1), nodeAddr(2)}; !slices.Equal(call.Tried, want) {
		t.Fatalf("call.Tried = %q, want %q", call.Tried, want)
	}
	if call.Addr != nodeAddr(3) {
		t.Fatalf("call.Addr = %q, want the last attempt's %q", call.Addr, nodeAddr(3))
	}
}

func TestRetryAddrResetBetweenAttempts(t *testing.T) {
	// An attempt that fails before a node is picked leaves Addr empty, and
	// Retry does not carry the previous attempt's node over or list "".
	var seen []attempt
	send := func(_ context.Context, call *middleware.Call) error {
		seen = append(seen, attempt{call.Attempt, call.Addr, slices.Clone(call.Tried)})
		if call.Attempt == 1 {
			return rpc.ErrShutdown // no node set
		}
		call.Addr = nodeAddr(call.Attempt)
		return dialErr(call.Addr)
	}
	call := &middleware.Call{ServiceMethod: "S.M"}
	middleware.Retry(fast(middleware.RetryPolicy{Max: 2}))(send)(context.Background(), call)
	if len(seen) != 3 {
		t.Fatalf("attempts = %d, want 3", len(seen))
	}
	for k, a := range seen {
		if a.Addr != "" {
			t.Fatalf("attempt %d started with Addr %q, want empty", k, a.Addr)
		}
	}
	if want := []string{nodeAddr(0)}; !slices.Equal(seen[2].Tried, want) {
		t.Fatalf("attempt 2 saw Tried = %q, want %q", seen[2].Tried, want)
	}
	if want := []string{nodeAddr(0)}; !slices.Equal(call.Tried, want) {
		t.Fatalf("call.Tried = %q, want %q", call.Tried, want)
	}
}

func TestRetryNonIdempotent(t *testing.T) {
	const pay = "Bank.Pay"
	for _, tc := range []struct {
		name   string
		method string
		mk     func(addr string) error
		want   int
	}{
		{"non-idempotent unsent", pay, dialErr, 4},
		{"non-idempotent maybe sent", pay, brokenErr, 1},
		{"non-idempotent bare shutdown", pay, func(string) error { return rpc.ErrShutdown }, 1},
		{"idempotent maybe sent", "Bank.Balance", brokenErr, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := always(tc.mk)
			p := fast(middleware.RetryPolicy{Max: 3, NonIdempotent: []string{pay}})
			if _, err := run(context.Background(), p, f, tc.method); err == nil {
				t.Fatal("err = nil, want the attempts' error")
			}
			if got := f.attempts(); got != tc.want {
				t.Fatalf("attempts = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestRetryNonIdempotentCopied(t *testing.T) {
	// Retry keeps its own copy of the list.
	list := []string{"Bank.Pay"}
	p := fast(middleware.RetryPolicy{Max: 3, NonIdempotent: list})
	retry := middleware.Retry(p)
	list[0] = "Bank.Other"
	f := always(brokenErr)
	retry(f.invoke)(context.Background(), &middleware.Call{ServiceMethod: "Bank.Pay"})
	if got := f.attempts(); got != 1 {
		t.Fatalf("attempts = %d, want 1: changing the caller's slice changed the policy", got)
	}
}

// TestRetryNestedNonIdempotent checks that a Retry around another Retry
// never re-sends a NonIdempotent method that one of the inner Retry's
// attempts may have delivered, whatever the order of the attempts' errors
// in the join the inner Retry returns.
func TestRetryNestedNonIdempotent(t *testing.T) {
	const pay = "Bank.Pay"
	for _, tc := range []struct {
		name string
		f    *fakeSend
		want int // attempts with an inner and an outer Retry of Max 1
	}{
		// The inner Retry's retry may have reached the server.
		{"unsent then maybe sent", failing(dialErr(nodeAddr(0)), brokenErr(nodeAddr(1)), brokenErr(nodeAddr(2))), 2},
		{"maybe sent at once", always(brokenErr), 1},
		{"all unsent", always(dialErr), 4}, // (1+1) attempts, twice
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := fast(middleware.RetryPolicy{Max: 1, NonIdempotent: []string{pay}})
			inv := middleware.Retry(p)(middleware.Retry(p)(tc.f.invoke))
			if err := inv(context.Background(), &middleware.Call{ServiceMethod: pay}); err == nil {
				t.Fatal("err = nil, want the attempts' errors")
			}
			if got := tc.f.attempts(); got != tc.want {
				t.Fatalf("%d attempts of non-idempotent %s, want %d", got, pay, tc.want)
			}
		})
	}
}

func TestRetryIf(t *testing.T) {
	isServer := func(_ *middleware.Call, err error) bool {
		_, ok := errors.AsType[rpc.ServerError](err)
		return ok
	}
	never := func(*middleware.Call, error) bool { return false }
	yes := func(*middleware.Call, error) bool { return true }
	for _, tc := range []struct {
		name    string
		retryIf func(*middleware.Call, error) bool
		method  string
		mk      func(addr string) error
		want    int
	}{
		{"retries server errors", isServer, "S.M", func(string) error { return rpc.ServerError("busy") }, 4},
		{"replaces the default", isServer, "S.M", dialErr, 1},
		{"never", never, "S.M", dialErr, 1},
		{"any error", yes, "S.M", func(string) error { return errors.New("x") }, 4},
		{"still honours NonIdempotent", yes, "Bank.Pay", brokenErr, 1},
		{"NonIdempotent unsent", yes, "Bank.Pay", dialErr, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := always(tc.mk)
			p := fast(middleware.RetryPolicy{Max: 3, RetryIf: tc.retryIf, NonIdempotent: []string{"Bank.Pay"}})
			run(context.Background(), p, f, tc.method)
			if got := f.attempts(); got != tc.want {
				t.Fatalf("attempts = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestRetryIfSeesCall(t *testing.T) {
	var got []int
	p := fast(middleware.RetryPolicy{Max: 2, RetryIf: func(call *middleware.Call, err error) bool {
		if call.ServiceMethod != "S.M" || !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("RetryIf(%+v, %v): unexpected call or error", call, err)
		}
		got = append(got, call.Attempt)
		return true
	}})
	run(context.Background(), p, always(dialErr), "S.M")
	if want := []int{0, 1}; !slices.Equal(got, want) {
		t.Fatalf("RetryIf saw attempts %v, want %v", got, want)
	}
}

func TestRetryStopsWhenContextEnds(t *testing.T) {
	for _, tc := range []struct {
		name    string
		retryIf func(*middleware.Call, error) bool
	}{
		{"default rule", nil},
		{"RetryIf true", func(*middleware.Call, error) bool { return true }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			f := &fakeSend{err: func(n int) error {
				cancel() // the caller gives up during the attempt
				return dialErr(nodeAddr(n))
			}}
			_, err := run(ctx, fast(middleware.RetryPolicy{Max: 3, RetryIf: tc.retryIf}), f, "S.M")
			if got := f.attempts(); got != 1 {
				t.Fatalf("attempts = %d after cancel, want 1", got)
			}
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Fatalf("err = %v, want the attempt's error", err)
			}
		})
	}
}

func TestRetryCancelDuringBackoff(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := always(dialErr)
	p := middleware.RetryPolicy{Max: 3, BaseBackoff: time.Hour, MaxBackoff: time.Hour,
		Budget: middleware.NewRetryBudget(100, 0)}
	done := make(chan error, 1)
	go func() {
		_, err := run(ctx, p, f, "S.M")
		done <- err
	}()
	rpctest.Eventually(t, "the first attempt", func() bool { return f.attempts() == 1 })
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) || !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("err = %v, want context.Canceled with the attempt's error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Retry still sleeping after ctx was cancelled")
	}
	if got := f.attempts(); got != 1 {
		t.Fatalf("attempts = %d, want 1", got)
	}
}

// A client closed before a retry without backoff: the retry is not made.
func TestRetryClosedWithoutBackoff(t *testing.T) {
	f := always(dialErr)
	closing := make(chan struct{})
	close(closing)
	p := middleware.RetryPolicy{Max: 3, BaseBackoff: time.Nanosecond, MaxBackoff: time.Nanosecond,
		Budget: middleware.NewRetryBudget(100, 0)}
	call := &middleware.Call{ServiceMethod: "S.M", Closing: closing}
	err := middleware.Retry(p)(f.invoke)(context.Background(), call)
	if !errors.Is(err, middleware.ErrClosed) || f.attempts() != 1 {
		t.Fatalf("err = %v after %d attempts, want ErrClosed after 1", err, f.attempts())
	}
}

func TestRetryNoSleepPastDeadline(t *testing.T) {
	// The backoff is drawn from [0, 146 years); the chance that it fits in
	// the minute left is about 1e-8.
	const huge = time.Duration(1 << 62)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	f := always(dialErr)
	p := middleware.RetryPolicy{Max: 3, BaseBackoff: huge, MaxBackoff: huge,
		Budget: middleware.NewRetryBudget(100, 0)}
	done := make(chan error, 1)
	go func() {
		_, err := run(ctx, p, f, "S.M")
		done <- err
	}()
	var err error
	select {
	case err = <-done:
	case <-time.After(5 * time.Second):
		cancel()
		<-done
		t.Fatal("Retry slept for a backoff that outlasts the ctx deadline")
	}
	if got := f.attempts(); got != 1 {
		t.Fatalf("attempts = %d, want 1: the backoff outlasts the deadline", got)
	}
	// The call ends with the last error, not a join of it with itself.
	var te *transport.Error
	if !errors.As(err, &te) || err != error(te) {
		t.Fatalf("err = %v (%T), want the attempt's *transport.Error as is", err, err)
	}
}

// TestRetryEndedContextCostsNoBudget checks that a call whose ctx ends
// before its retry is made, during the attempt or during the backoff sleep,
// takes nothing from the budget, whether the retry would have come from
// deposits or from the floor: the next call may still use all of it.
func TestRetryEndedContextCostsNoBudget(t *testing.T) {
	for _, tc := range []struct {
		name             string
		ratio, perSecond float64
		inBackoff        bool // end ctx during the backoff, not the attempt
		want             int  // retries of the next call
	}{
		{"attempt/deposits", 1, 0, false, 2}, // one deposited by each call
		{"backoff/deposits", 1, 0, true, 2},
		{"attempt/floor", 0, 0.05, false, 1}, // the floor's one, refilled in 20s
		{"backoff/floor", 0, 0.05, true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := middleware.NewRetryBudget(tc.ratio, tc.perSecond)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			first := &fakeSend{err: func(n int) error {
				if !tc.inBackoff {
					cancel()
				}
				return dialErr(nodeAddr(n))
			}}
			p := middleware.RetryPolicy{Max: 10, BaseBackoff: noBackoff, MaxBackoff: noBackoff, Budget: b}
			if tc.inBackoff {
				p.BaseBackoff, p.MaxBackoff = time.Hour, time.Hour
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				run(ctx, p, first, "S.M")
			}()
			defer func() { cancel(); <-done }() // also if Eventually fails
			if tc.inBackoff {
				rpctest.Eventually(t, "the first attempt", func() bool { return first.attempts() == 1 })
				cancel()
			}
			<-done
			if got := first.attempts(); got != 1 {
				t.Fatalf("first call made %d attempts, want 1", got)
			}

			f := always(dialErr)
			p.BaseBackoff, p.MaxBackoff = noBackoff, noBackoff
			run(context.Background(), p, f, "S.M")
			if got := f.attempts() - 1; got != tc.want {
				t.Fatalf("next call made %d retries, want %d: the first took from the budget", got, tc.want)
			}
		})
	}
}

func TestRetryJoinsErrors(t *testing.T) {
	errs := []error{
		dialErr(nodeAddr(0)),
		brokenErr(nodeAddr(1)),
		rpc.ServerError("boom"), // not retried: ends the call
	}
	f := failing(errs...)
	_, err := run(context.Background(), fast(middleware.RetryPolicy{Max: 5}), f, "S.M")
	if got := f.attempts(); got != 3 {
		t.Fatalf("attempts = %d, want 3", got)
	}
	for _, want := range append(errs, syscall.ECONNREFUSED, rpc.ErrShutdown) {
		if !errors.Is(err, want) {
			t.Errorf("errors.Is(err, %v) = false, want true; err = %v", want, err)
		}
	}
	if se, ok := errors.AsType[rpc.ServerError](err); !ok || se != "boom" {
		t.Errorf("errors.As(err, rpc.ServerError) = %q, %v; want \"boom\", true", se, ok)
	}
	if te, ok := errors.AsType[*transport.Error](err); !ok || te.Op != transport.OpDial {
		t.Errorf("errors.As(err, *transport.Error) = %v, %v; want the first (dial) error", te, ok)
	}
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("err is %T, want an errors.Join", err)
	}
	if got := joined.Unwrap(); !slices.Equal(got, errs) {
		t.Fatalf("joined errors = %v, want each attempt's once, in order: %v", got, errs)
	}
	for _, e := range errs {
		if !strings.Contains(err.Error(), e.Error()) {
			t.Errorf("err message %q does not mention %q", err, e)
		}
	}
}

func TestRetryJoinsUpToMax(t *testing.T) {
	f := always(dialErr)
	_, err := run(context.Background(), fast(middleware.RetryPolicy{Max: 2}), f, "S.M")
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("err is %T, want an errors.Join", err)
	}
	if got := len(joined.Unwrap()); got != 3 {
		t.Fatalf("joined %d errors, want one per attempt (3): %v", got, err)
	}
}

func TestRetrySingleErrorNotJoined(t *testing.T) {
	// A call that was not retried returns its error as is, so a caller may
	// compare or type-assert it.
	for _, want := range []error{rpc.ServerError("boom"), context.Canceled, picker.ErrNoNodes} {
		f := failing(want)
		_, err := run(context.Background(), fast(middleware.RetryPolicy{Max: 3}), f, "S.M")
		if err != want {
			t.Errorf("err = %#v, want %#v as is", err, want)
		}
	}
}

func TestRetrySuccessAfterRetry(t *testing.T) {
	f := failing(dialErr(nodeAddr(0)), brokenErr(nodeAddr(1)))
	call, err := run(context.Background(), fast(middleware.RetryPolicy{Max: 3}), f, "S.M")
	if err != nil {
		t.Fatalf("err = %v, want nil after a successful retry", err)
	}
	if call.Attempt != 2 || call.Addr != nodeAddr(2) {
		t.Fatalf("call = Attempt %d Addr %q, want Attempt 2 Addr %q", call.Attempt, call.Addr, nodeAddr(2))
	}
}

func TestRetryBackoffSleeps(t *testing.T) {
	// Not a timing test: it checks that retries with the default backoff
	// (10ms base) still run, and all of them.
	f := always(dialErr)
	p := middleware.RetryPolicy{Max: 2, Budget: middleware.NewRetryBudget(100, 0)}
	if _, err := run(context.Background(), p, f, "S.M"); err == nil {
		t.Fatal("err = nil, want the attempts' error")
	}
	if got := f.attempts(); got != 3 {
		t.Fatalf("attempts = %d, want 3", got)
	}
}

func TestRetryDefaultBudget(t *testing.T) {
	// The default budget is NewRetryBudget(0.2, 10): a fresh Retry may make
	// the floor's ten seconds' worth (100) of retries at once, more only as
	// calls deposit or time passes.
	f := always(dialErr)
	p := middleware.RetryPolicy{Max: 1000, BaseBackoff: noBackoff, MaxBackoff: noBackoff}
	run(context.Background(), p, f, "S.M")
	// The floor refills at 10/s: allow a few more on a slow run.
	if got := f.attempts(); got < 101 || got > 150 {
		t.Fatalf("attempts = %d, want 101 (1 + the floor's 100)", got)
	}
}

// BenchmarkRetryNoError times Retry on calls that succeed at once: the cost
// every call pays for retry being on (a budget deposit).
func BenchmarkRetryNoError(b *testing.B) {
	send := func(_ context.Context, call *middleware.Call) error {
		call.Addr = "10.0.0.1:4000"
		return nil
	}
	benchInvokers(b, []benchCase{
		{"baseline", send},
		{"retry", middleware.Retry(middleware.RetryPolicy{Max: 3})(send)},
		{"retry-no-deposit", middleware.Retry(middleware.RetryPolicy{Max: 3,
			Budget: middleware.NewRetryBudget(0, 10)})(send)},
	})
}

// BenchmarkRetryOnce times a call whose first attempt fails and whose retry
// succeeds, with no backoff.
func BenchmarkRetryOnce(b *testing.B) {
	send := func(_ context.Context, call *middleware.Call) error {
		call.Addr = nodeAddr(call.Attempt)
		if call.Attempt == 0 {
			return &transport.Error{Addr: call.Addr, Op: transport.OpDial, Err: syscall.ECONNREFUSED}
		}
		return nil
	}
	invoke := middleware.Retry(fast(middleware.RetryPolicy{Max: 3}))(send)
	b.ReportAllocs()
	ctx := context.Background()
	call := new(middleware.Call)
	for b.Loop() {
		*call = middleware.Call{ServiceMethod: "HelloService.Say"}
		if err := invoke(ctx, call); err != nil {
			b.Fatal(err)
		}
	}
}

// Each Retry counts its own retries, whatever call.Attempt says: a Call that
// arrives with Attempt already moved (by an outer Retry, or made by hand)
// still gets Max retries, and Attempt keeps numbering the call's attempts.
func TestRetryCountsItsOwnRetries(t *testing.T) {
	for _, tc := range []struct {
		name         string
		start        int // call.Attempt on entry
		outer, inner int // Max of an outer and an inner Retry; outer 0: inner alone
		wantAttempts int
	}{
		{name: "fresh call", start: 0, inner: 2, wantAttempts: 3},
		{name: "Attempt set by hand", start: 5, inner: 2, wantAttempts: 3},
		{name: "nested", outer: 1, inner: 2, wantAttempts: 6}, // (1+2) attempts, twice
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := always(dialErr)
			inv := middleware.Retry(fast(middleware.RetryPolicy{Max: tc.inner}))(f.invoke)
			if tc.outer > 0 {
				inv = middleware.Retry(fast(middleware.RetryPolicy{Max: tc.outer}))(inv)
			}
			call := &middleware.Call{ServiceMethod: "S.M", Attempt: tc.start}
			if err := inv(context.Background(), call); err == nil {
				t.Fatal("err = nil, want the attempts' errors")
			}
			if got := f.attempts(); got != tc.wantAttempts {
				t.Fatalf("%d attempts, want %d", got, tc.wantAttempts)
			}
			for k, a := range f.seen {
				if want := tc.start + k; a.Attempt != want {
					t.Fatalf("attempt %d saw Attempt=%d, want %d", k, a.Attempt, want)
				}
			}
		})
	}
}

// A Retry sleeping its backoff stops when the client closes
// (Call.Closing), as when ctx ends, and returns the attempt's error.
func TestRetryClosingDuringBackoff(t *testing.T) {
	f := always(dialErr)
	p := middleware.RetryPolicy{Max: 3, BaseBackoff: time.Hour, MaxBackoff: time.Hour,
		Budget: middleware.NewRetryBudget(100, 0)}
	closing := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		call := &middleware.Call{ServiceMethod: "S.M", Closing: closing}
		done <- middleware.Retry(p)(f.invoke)(context.Background(), call)
	}()
	rpctest.Eventually(t, "the first attempt", func() bool { return f.attempts() == 1 })
	close(closing)
	select {
	case err := <-done:
		if !errors.Is(err, middleware.ErrClosed) || !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("err = %v, want ErrClosed with the attempt's error", err)
		}
		if got := middleware.ErrorType(err); got != "closed" {
			t.Fatalf("ErrorType(%v) = %q, want closed", err, got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Retry still sleeping after Closing fired")
	}
	if got := f.attempts(); got != 1 {
		t.Fatalf("attempts = %d, want 1", got)
	}
}
