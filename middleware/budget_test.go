package middleware_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/lbrpc/lbrpc/middleware"
)

// retriesAllowed makes succeed successful calls and then one failing call
// through Retry with budget b and a Max that never binds, and returns how
// many retries the failing call made.
func retriesAllowed(t *testing.T, b *middleware.RetryBudget, succeed int) int {
	t.Helper()
	retry := middleware.Retry(middleware.RetryPolicy{Max: 1000, BaseBackoff: noBackoff, MaxBackoff: noBackoff, Budget: b})
	ok := retry(func(context.Context, *middleware.Call) error { return nil })
	for i := range succeed {
		if err := ok(context.Background(), &middleware.Call{ServiceMethod: "S.M"}); err != nil {
			t.Fatalf("successful call %d: %v", i, err)
		}
	}
	f := always(dialErr)
	retry(f.invoke)(context.Background(), &middleware.Call{ServiceMethod: "S.M"})
	return f.attempts() - 1
}

func TestRetryBudgetRatio(t *testing.T) {
	// Every call, the failing one too, deposits ratio of a retry, in
	// thousandths: with 0.2, five calls earn one retry.
	for _, tc := range []struct {
		ratio   float64
		succeed int
		want    int
	}{
		{0.2, 0, 0},   // 200/1000
		{0.2, 3, 0},   // 800
		{0.2, 4, 1},   // 1000
		{0.2, 5, 1},   // 1200
		{0.2, 9, 2},   // 2000
		{0.2, 10, 2},  // 2200
		{0.2, 49, 10}, // 10000
		{0.2, 50, 10}, // 10200
		{0.5, 9, 5},   // 5000
		{0.001, 999, 1},
		{0.001, 998, 0},
		{1, 0, 1},
		{1, 41, 42},
		{2.5, 1, 5},
	} {
		t.Run(fmt.Sprintf("ratio=%v/succeed=%d", tc.ratio, tc.succeed), func(t *testing.T) {
			got := retriesAllowed(t, middleware.NewRetryBudget(tc.ratio, 0), tc.succeed)
			if got != tc.want {
				t.Fatalf("retries = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestRetryBudgetZero(t *testing.T) {
	// No deposits and no floor: never a retry, however many calls succeed.
	for _, succeed := range []int{0, 1, 1000} {
		if got := retriesAllowed(t, middleware.NewRetryBudget(0, 0), succeed); got != 0 {
			t.Fatalf("after %d successes: retries = %d, want 0", succeed, got)
		}
	}
}

func TestRetryBudgetCap(t *testing.T) {
	// At most 100 retries' worth of deposits are kept.
	for _, tc := range []struct {
		ratio   float64
		succeed int
		want    int
	}{
		{1, 98, 99},
		{1, 99, 100},
		{1, 100, 100},
		{1, 1000, 100},
		{100, 0, 100},
		{1000, 5, 100},
	} {
		t.Run(fmt.Sprintf("ratio=%v/succeed=%d", tc.ratio, tc.succeed), func(t *testing.T) {
			got := retriesAllowed(t, middleware.NewRetryBudget(tc.ratio, 0), tc.succeed)
			if got != tc.want {
				t.Fatalf("retries = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestRetryBudgetFloor(t *testing.T) {
	// With no deposits the floor alone allows minPerSecond retries a
	// second, banked for ten seconds. The exact refill is checked in
	// virtual time by TestBudgetFloorVirtualTime; here the floor refills in
	// real time, so allow a few more on a slow run.
	for _, tc := range []struct {
		perSecond float64
		want      int
	}{
		{0.05, 1}, // at least one
		{0.5, 5},
		{1, 10},
		{3, 30},
	} {
		t.Run(fmt.Sprint(tc.perSecond), func(t *testing.T) {
			got := retriesAllowed(t, middleware.NewRetryBudget(0, tc.perSecond), 0)
			if got < tc.want || got > tc.want+int(tc.perSecond)+5 {
				t.Fatalf("retries = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestRetryBudgetNegative(t *testing.T) {
	for _, tc := range []struct {
		ratio, perSecond float64
		succeed          int
		min, max         int
	}{
		{-1, -1, 100, 0, 0},
		{-0.5, 0, 100, 0, 0},
		{0, -10, 100, 0, 0},
		{1, -10, 4, 5, 5},    // ratio only
		{-1, 1, 100, 10, 15}, // floor only
	} {
		t.Run(fmt.Sprintf("%v,%v", tc.ratio, tc.perSecond), func(t *testing.T) {
			got := retriesAllowed(t, middleware.NewRetryBudget(tc.ratio, tc.perSecond), tc.succeed)
			if got < tc.min || got > tc.max {
				t.Fatalf("retries = %d, want in [%d, %d]", got, tc.min, tc.max)
			}
		})
	}
}

func TestRetryBudgetShared(t *testing.T) {
	// Two Retry links with one budget: the calls of one pay for the
	// retries of the other.
	b := middleware.NewRetryBudget(0.5, 0)
	p := middleware.RetryPolicy{Max: 100, BaseBackoff: noBackoff, MaxBackoff: noBackoff, Budget: b}
	a := middleware.Retry(p)(func(context.Context, *middleware.Call) error { return nil })
	for range 9 {
		a(context.Background(), &middleware.Call{ServiceMethod: "A.M"})
	}
	f := always(dialErr)
	middleware.Retry(p)(f.invoke)(context.Background(), &middleware.Call{ServiceMethod: "B.M"})
	if got, want := f.attempts()-1, 5; got != want { // (9+1) * 0.5
		t.Fatalf("retries = %d, want %d", got, want)
	}
}

func TestRetryBudgetConcurrent(t *testing.T) {
	// Under -race: many calls deposit and withdraw at once, and retries
	// never exceed what was deposited.
	const (
		goroutines = 8
		calls      = 200
	)
	b := middleware.NewRetryBudget(0.25, 0)
	var retries atomic.Int64
	send := func(_ context.Context, call *middleware.Call) error {
		if call.Attempt > 0 {
			retries.Add(1)
			return nil
		}
		return dialErr("a:1")
	}
	invoke := middleware.Retry(middleware.RetryPolicy{Max: 1, BaseBackoff: noBackoff, MaxBackoff: noBackoff, Budget: b})(send)
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for range calls {
				invoke(context.Background(), &middleware.Call{ServiceMethod: "S.M"})
			}
		})
	}
	wg.Wait()
	total := goroutines * calls
	if got, max := retries.Load(), int64(total/4); got > max || got == 0 {
		t.Fatalf("retries = %d over %d calls, want in [1, %d]", got, total, max)
	}
}
