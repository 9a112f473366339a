package middleware_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/lbrpc/lbrpc/internal/rpctest"
	"github.com/lbrpc/lbrpc/middleware"
)

// counted returns a send step that counts the calls reaching it.
func counted(n *atomic.Int64) middleware.Invoker {
	return func(context.Context, *middleware.Call) error {
		n.Add(1)
		return nil
	}
}

// spent returns a limiter with one token a year and its burst of one
// already taken: every call finds it empty.
func spent(t *testing.T) *rate.Limiter {
	t.Helper()
	l := rate.NewLimiter(rate.Every(365*24*time.Hour), 1)
	if !l.Allow() {
		t.Fatal("a fresh limiter refused its burst")
	}
	return l
}

func TestRateLimitFailFast(t *testing.T) {
	var reached atomic.Int64
	l := rate.NewLimiter(rate.Every(time.Hour), 3)
	invoke := middleware.RateLimit(l, middleware.FailFast)(counted(&reached))
	for i := range 3 {
		if err := invoke(context.Background(), &middleware.Call{}); err != nil {
			t.Fatalf("call %d within the burst: %v", i, err)
		}
	}
	for i := range 3 {
		if err := invoke(context.Background(), &middleware.Call{}); err != middleware.ErrRateLimited {
			t.Fatalf("call %d past the burst: err = %v, want ErrRateLimited", i, err)
		}
	}
	if got := reached.Load(); got != 3 {
		t.Fatalf("%d calls reached next, want 3", got)
	}
}

func TestRateLimitWait(t *testing.T) {
	// A burst of one at 100 a second: the later calls wait for their token
	// and then go through. Only the outcome is checked, not the time.
	var reached atomic.Int64
	l := rate.NewLimiter(100, 1)
	invoke := middleware.RateLimit(l, middleware.Wait)(counted(&reached))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 5 {
		if err := invoke(ctx, &middleware.Call{}); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if got := reached.Load(); got != 5 {
		t.Fatalf("%d calls reached next, want 5", got)
	}
}

func TestRateLimitWaitPastDeadline(t *testing.T) {
	// The token comes in a year, the deadline in a minute: fail at once,
	// without waiting and without calling next.
	var reached atomic.Int64
	l := spent(t)
	invoke := middleware.RateLimit(l, middleware.Wait)(counted(&reached))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := invoke(ctx, &middleware.Call{})
	if !errors.Is(err, middleware.ErrRateLimited) {
		t.Fatalf("err = %v, want ErrRateLimited", err)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v: the deadline has not passed, it should not say so", err)
	}
	if ctx.Err() != nil {
		t.Fatal("the call waited until the deadline")
	}
	if got := reached.Load(); got != 0 {
		t.Fatalf("%d calls reached next, want 0", got)
	}
}

func TestRateLimitWaitBurstZero(t *testing.T) {
	// A limiter with no burst can never give a token: Wait says so at once.
	var reached atomic.Int64
	invoke := middleware.RateLimit(rate.NewLimiter(10, 0), middleware.Wait)(counted(&reached))
	if err := invoke(context.Background(), &middleware.Call{}); !errors.Is(err, middleware.ErrRateLimited) {
		t.Fatalf("err = %v, want ErrRateLimited", err)
	}
	if got := reached.Load(); got != 0 {
		t.Fatalf("%d calls reached next, want 0", got)
	}
}

func TestRateLimitContextEnded(t *testing.T) {
	for _, tc := range []struct {
		name    string
		limiter func(t *testing.T) *rate.Limiter
		ctx     func() (context.Context, context.CancelFunc)
		want    error
	}{
		{
			name:    "cancelled with tokens free",
			limiter: func(*testing.T) *rate.Limiter { return rate.NewLimiter(rate.Inf, 0) },
			ctx:     cancelled,
			want:    context.Canceled,
		},
		{
			name:    "cancelled without tokens",
			limiter: spent,
			ctx:     cancelled,
			want:    context.Canceled,
		},
		{
			name:    "deadline passed",
			limiter: spent,
			ctx: func() (context.Context, context.CancelFunc) {
				return context.WithDeadline(context.Background(), time.Unix(0, 0))
			},
			want: context.DeadlineExceeded,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var reached atomic.Int64
			invoke := middleware.RateLimit(tc.limiter(t), middleware.Wait)(counted(&reached))
			ctx, cancel := tc.ctx()
			defer cancel()
			err := invoke(ctx, &middleware.Call{})
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want it to wrap %v", err, tc.want)
			}
			if got := reached.Load(); got != 0 {
				t.Fatalf("%d calls reached next, want 0", got)
			}
		})
	}
}

func cancelled() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx, cancel
}

func TestRateLimitCancelWhileWaiting(t *testing.T) {
	var reached atomic.Int64
	l := spent(t)
	invoke := middleware.RateLimit(l, middleware.Wait)(counted(&reached))
	ctx, cancel := context.WithCancel(context.Background()) // no deadline: the wait begins
	done := make(chan error, 1)
	go func() { done <- invoke(ctx, &middleware.Call{}) }()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want it to wrap context.Canceled", err)
		}
		if errors.Is(err, middleware.ErrRateLimited) {
			t.Fatalf("err = %v: a cancelled caller is not rate limited", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the wait did not end when ctx was cancelled")
	}
	if got := reached.Load(); got != 0 {
		t.Fatalf("%d calls reached next, want 0", got)
	}
}

func TestRateLimitOneTokenPerCall(t *testing.T) {
	// RateLimit outside Retry takes one token per call, however many
	// attempts the call makes.
	for _, mode := range []middleware.RateLimitMode{middleware.FailFast, middleware.Wait} {
		l := rate.NewLimiter(rate.Every(time.Hour), 2)
		f := always(dialErr)
		invoke := middleware.Chain(
			middleware.RateLimit(l, mode),
			middleware.Retry(fast(middleware.RetryPolicy{Max: 3})),
		)(f.invoke)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		for i := range 2 {
			if err := invoke(ctx, &middleware.Call{}); errors.Is(err, middleware.ErrRateLimited) {
				t.Fatalf("mode %v: call %d was rate limited, want two calls of four attempts each", mode, i)
			}
		}
		if got := f.attempts(); got != 8 {
			t.Fatalf("mode %v: %d attempts, want 8", mode, got)
		}
		if err := invoke(ctx, &middleware.Call{}); !errors.Is(err, middleware.ErrRateLimited) {
			t.Fatalf("mode %v: third call: err = %v, want ErrRateLimited", mode, err)
		}
		cancel()
	}
}

func TestRateLimitedNotRetried(t *testing.T) {
	// RateLimit inside Retry (a user's chain): a refusal is not retried.
	var reached atomic.Int64
	invoke := middleware.Chain(
		middleware.Retry(fast(middleware.RetryPolicy{Max: 3})),
		middleware.RateLimit(spent(t), middleware.FailFast),
	)(counted(&reached))
	if err := invoke(context.Background(), &middleware.Call{}); err != middleware.ErrRateLimited {
		t.Fatalf("err = %v, want ErrRateLimited as is", err)
	}
}

// BenchmarkRateLimit times the limiter's cost on a limit that never bites,
// against the bare send step.
func BenchmarkRateLimit(b *testing.B) {
	send := func(context.Context, *middleware.Call) error { return nil }
	benchInvokers(b, []benchCase{
		{"baseline", send},
		{"failfast", middleware.RateLimit(rate.NewLimiter(1e12, 1e9), middleware.FailFast)(send)},
		{"wait", middleware.RateLimit(rate.NewLimiter(1e12, 1e9), middleware.Wait)(send)},
		{"wait-inf", middleware.RateLimit(rate.NewLimiter(rate.Inf, 0), middleware.Wait)(send)},
	})
}

// A call waiting for its token stops when the client closes
// (Call.Closing) with ErrClosed, and gives the token back.
func TestRateLimitWaitClosing(t *testing.T) {
	var reached atomic.Int64
	l := rate.NewLimiter(rate.Every(time.Hour), 1)
	l.Allow() // the next token is an hour away
	invoke := middleware.RateLimit(l, middleware.Wait)(counted(&reached))
	closing := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- invoke(context.Background(), &middleware.Call{ServiceMethod: "S.M", Closing: closing})
	}()
	rpctest.Eventually(t, "the call to reserve its token", func() bool { return l.TokensAt(time.Now()) < 0 })
	close(closing)
	select {
	case err := <-done:
		if !errors.Is(err, middleware.ErrClosed) {
			t.Fatalf("err = %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("call still waiting for its token after Closing fired")
	}
	if reached.Load() != 0 {
		t.Fatal("next was called")
	}
	if got := l.TokensAt(time.Now()); got < -0.01 {
		t.Fatalf("tokens = %v after the wait was abandoned, want the reservation given back", got)
	}
}
