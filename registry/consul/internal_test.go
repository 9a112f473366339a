package consul

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lbrpc/lbrpc/registry"
	"github.com/lbrpc/lbrpc/registry/consul/internal/fakeconsul"
)

func TestBackoff(t *testing.T) {
	const base, max = 100 * time.Millisecond, time.Second
	tests := []struct {
		n    int
		r    float64
		want time.Duration
	}{
		{1, 0.5, 100 * time.Millisecond},
		{1, 0, 80 * time.Millisecond},
		{2, 0.5, 200 * time.Millisecond},
		{4, 0.5, 800 * time.Millisecond},
		{5, 0.99, time.Second}, // 1.196 * 1s, capped
		{5, 0.5, time.Second},
		{5, 0, 800 * time.Millisecond},
		{1000, 0.5, time.Second},
	}
	for _, tt := range tests {
		if got := backoff(base, max, tt.n, tt.r); got != tt.want {
			t.Errorf("backoff(%v, %v, %d, %v) = %v, want %v", base, max, tt.n, tt.r, got, tt.want)
		}
	}
}

func TestNextIndex(t *testing.T) {
	tests := []struct{ prev, got, want uint64 }{
		{0, 10, 10},
		{10, 10, 10}, // wait elapsed: block again on the same index
		{10, 12, 12},
		{10, 5, 0}, // backwards: start over
		{0, 0, 1},  // never block on 0
		{1, 0, 0},  // 0 after 1 is backwards
	}
	for _, tt := range tests {
		if got := nextIndex(tt.prev, tt.got); got != tt.want {
			t.Errorf("nextIndex(%d, %d) = %d, want %d", tt.prev, tt.got, got, tt.want)
		}
	}
}

// virtualClock stands in for time in the watcher: sleeping advances it at
// once and is recorded.
type virtualClock struct {
	mu     sync.Mutex
	now    time.Time
	sleeps []time.Duration
	stopAt int // cancel the sleep (as Stop would) once this many are recorded
}

func (c *virtualClock) option() Option {
	return func(cfg *config) {
		cfg.now = func() time.Time {
			c.mu.Lock()
			defer c.mu.Unlock()
			return c.now
		}
		cfg.sleep = func(ctx context.Context, d time.Duration) error {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.sleeps = append(c.sleeps, d)
			c.now = c.now.Add(d)
			if len(c.sleeps) >= c.stopAt {
				return context.Canceled
			}
			return ctx.Err()
		}
	}
}

// TestPacingAgainstBrokenAgent checks, in virtual time, that against an
// agent that never blocks every query waits out the minimum interval.
func TestPacingAgainstBrokenAgent(t *testing.T) {
	a := fakeconsul.New()
	defer a.Close()
	if err := a.Register(api.AgentServiceRegistration{Name: "web", Address: "10.0.0.1", Port: 4000}); err != nil {
		t.Fatal(err)
	}
	a.BreakBlocking(0)
	clock := &virtualClock{now: time.Unix(1e9, 0), stopAt: 20}
	r, err := New(a.Client(), "web", clock.option())
	if err != nil {
		t.Fatal(err)
	}
	w, _ := r.Watch(context.Background())
	defer w.Stop()
	if _, err := w.Next(); err != nil {
		t.Fatal(err)
	}
	// The set never changes, so Next loops until the clock stops it.
	if _, err := w.Next(); !errors.Is(err, registry.ErrStopped) {
		t.Fatalf("Next = %v, want ErrStopped from the stopped clock", err)
	}
	for i, d := range clock.sleeps {
		if d != minQueryInterval {
			t.Errorf("sleep %d = %v, want %v", i, d, minQueryInterval)
		}
	}
}

// TestBackoffAgainstDownAgent checks, in virtual time, that retries after
// failures back off exponentially within bounds.
func TestBackoffAgainstDownAgent(t *testing.T) {
	a := fakeconsul.New()
	defer a.Close()
	a.SetDown(true)
	const base, max = time.Second, 8 * time.Second
	clock := &virtualClock{now: time.Unix(1e9, 0), stopAt: 1 << 30}
	r, err := New(a.Client(), "web", WithBackoff(base, max), clock.option())
	if err != nil {
		t.Fatal(err)
	}
	w, _ := r.Watch(context.Background())
	defer w.Stop()
	for i := range 8 {
		if nodes, err := w.Next(); err == nil || nodes != nil {
			t.Fatalf("Next #%d = %v, %v; want a nil set and an error", i, nodes, err)
		}
	}
	// No pause before the first query; then one per retry.
	if len(clock.sleeps) != 7 {
		t.Fatalf("%d sleeps, want 7: %v", len(clock.sleeps), clock.sleeps)
	}
	for i, d := range clock.sleeps {
		exp := min(base<<i, max)
		lo, hi := time.Duration(float64(exp)*0.8), min(time.Duration(float64(exp)*1.2), max)
		if d < lo || d > hi {
			t.Errorf("retry %d paused %v, want within [%v, %v]", i+1, d, lo, hi)
		}
	}
}
