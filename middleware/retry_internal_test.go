package middleware

import (
	"fmt"
	"math"
	"testing"
	"time"
)

// TestRetryWindow checks the window the backoff is drawn from:
// BaseBackoff doubled per retry, capped at MaxBackoff, and saturating
// rather than overflowing when MaxBackoff is near the largest Duration.
func TestRetryWindow(t *testing.T) {
	const maxDur = time.Duration(math.MaxInt64)
	for _, tc := range []struct {
		base, max time.Duration
		n         int
		want      time.Duration
	}{
		{10 * time.Millisecond, time.Second, 0, 10 * time.Millisecond},
		{10 * time.Millisecond, time.Second, 1, 20 * time.Millisecond},
		{10 * time.Millisecond, time.Second, 6, 640 * time.Millisecond},
		{10 * time.Millisecond, time.Second, 7, time.Second},
		{10 * time.Millisecond, time.Second, 1000, time.Second},
		{time.Second, time.Second, 3, time.Second},
		{1, maxDur, 62, 1 << 62},
		{1, maxDur, 63, maxDur}, // 1<<63 overflows
		{1, maxDur, 1000, maxDur},
		{5 << 60, maxDur, 1, maxDur}, // 5<<61 overflows
		{3 << 60, maxDur, 1, 6 << 60},
		{3 << 60, maxDur, 2, maxDur}, // 12<<60 overflows
		{maxDur, maxDur, 5, maxDur},
		{1 << 62, 1 << 62, 5, 1 << 62},
	} {
		t.Run(fmt.Sprintf("%d/%d/%d", tc.base, tc.max, tc.n), func(t *testing.T) {
			p := RetryPolicy{BaseBackoff: tc.base, MaxBackoff: tc.max}
			if got := p.window(tc.n); got != tc.want {
				t.Fatalf("window(%d) = %d, want %d", tc.n, got, tc.want)
			}
			for range 10 {
				if d := p.backoff(tc.n); d < 0 || d >= tc.want {
					t.Fatalf("backoff(%d) = %d, want in [0, %d)", tc.n, d, tc.want)
				}
			}
		})
	}
}
