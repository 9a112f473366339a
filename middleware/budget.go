package middleware

import (
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// RetryBudget caps retries to a share of calls, so that retries cannot
// multiply the load on a service that is already failing (Finagle's retry
// budget). Every call deposits ratio of a retry; every retry withdraws one.
// On top, minPerSecond retries per second are always allowed, so that a
// client with little traffic can still retry.
//
// A RetryBudget is safe for concurrent use.
type RetryBudget struct {
	ratio int64 // thousandths of a retry deposited per call
	floor *rate.Limiter

	balance atomic.Int64 // thousandths of a retry
}

// budgetCap bounds the balance, so a long healthy spell does not bank an
// unbounded burst of retries.
const budgetCap = 100 * 1000

// NewRetryBudget returns a budget allowing ratio retries per call (0.2 means
// 20%) plus minPerSecond retries per second (banked for up to ten
// seconds). At most 100 retries' worth of
// deposits are kept. Values are clamped: ratio to [0, 100], minPerSecond
// to [0, 1e6]; NaN counts as zero. The ratio is kept in thousandths, so a
// ratio below 0.001 allows no retries of its own.
func NewRetryBudget(ratio, minPerSecond float64) *RetryBudget {
	ratio, minPerSecond = clamp(ratio, 100), clamp(minPerSecond, 1e6)
	// As in Finagle, the floor holds ten seconds' worth of retries.
	burst := 0
	if minPerSecond > 0 {
		burst = max(int(minPerSecond*10), 1)
	}
	return &RetryBudget{
		ratio: int64(ratio * 1000),
		floor: rate.NewLimiter(rate.Limit(minPerSecond), burst),
	}
}

func (b *RetryBudget) deposit() {
	if b.ratio == 0 {
		return
	}
	for {
		old := b.balance.Load()
		nw := min(old+b.ratio, budgetCap)
		if nw == old || b.balance.CompareAndSwap(old, nw) {
			return
		}
	}
}

// allows reports whether withdraw(now) would succeed, taking nothing. Other
// calls may empty the budget before this one withdraws.
func (b *RetryBudget) allows(now time.Time) bool {
	return b.balance.Load() >= 1000 || b.floor.TokensAt(now) >= 1
}

// withdraw takes one retry from the budget, reporting false when it is empty.
func (b *RetryBudget) withdraw(now time.Time) bool {
	for {
		old := b.balance.Load()
		if old < 1000 {
			return b.floor.AllowN(now, 1)
		}
		if b.balance.CompareAndSwap(old, old-1000) {
			return true
		}
	}
}

func clamp(v, hi float64) float64 {
	if !(v > 0) { // also NaN
		return 0
	}
	return min(v, hi)
}
