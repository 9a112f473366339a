package dns

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/lbrpc/lbrpc/registry"
)

var _ registry.FailureReporter = (*watcher)(nil)

// watcher resolves in one goroutine (run) and hands the latest news to Next.
// News that Next has not taken yet is replaced, never queued: the client
// only needs the newest snapshot.
type watcher struct {
	r      *Registry
	ctx    context.Context // cancelled by Stop
	cancel context.CancelFunc
	done   chan struct{} // closed when run returns
	early  chan struct{} // one pending ReportFailure
	ready  chan struct{} // one wake-up for Next

	mu      sync.Mutex
	pending *news           // not yet taken by Next
	cur     []registry.Node // the last set queued for Next, sorted
	known   bool            // cur is valid
	failing bool            // an error was reported and no set since
}

type news struct {
	nodes []registry.Node
	err   error
}

func startWatcher(r *Registry) *watcher {
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{
		r:      r,
		ctx:    ctx,
		cancel: cancel,
		done:   make(chan struct{}),
		early:  make(chan struct{}, 1),
		ready:  make(chan struct{}, 1),
	}
	go w.run()
	return w
}

// Next returns the first resolution's result at once, then waits for a set
// that differs from the last one, or for the first error of a failure
// streak. After a failure the set is reported again even if unchanged, so
// that the client knows the failure is over.
func (w *watcher) Next() ([]registry.Node, error) {
	for {
		if w.ctx.Err() != nil {
			return nil, registry.ErrStopped
		}
		w.mu.Lock()
		n := w.pending
		w.pending = nil
		w.mu.Unlock()
		if n != nil {
			return slices.Clone(n.nodes), n.err
		}
		select {
		case <-w.ready:
		case <-w.ctx.Done():
		}
	}
}

// Stop ends resolution, unblocks Next and waits for the resolving goroutine.
func (w *watcher) Stop() error {
	w.cancel()
	<-w.done
	return nil
}

// ReportFailure asks for an early resolution, since a node that cannot be
// reached may have moved. Reports that arrive before it runs are merged.
func (w *watcher) ReportFailure(string, error) {
	select {
	case w.early <- struct{}{}:
	default:
	}
}

func (w *watcher) run() {
	defer close(w.done)
	for {
		start := w.r.cfg.clock.Now()
		select {
		case <-w.early: // this resolution answers the reports made so far
		default:
		}
		w.resolve()
		if !w.sleep(start) {
			return
		}
	}
}

// sleep waits until the next resolution is due: an interval after start, or
// sooner after a ReportFailure, but not before minInterval after start. It
// returns false once stopped.
func (w *watcher) sleep(start time.Time) bool {
	clk := w.r.cfg.clock
	due := start.Add(w.r.cfg.interval)
	for {
		t := clk.NewTimer(due.Sub(clk.Now()))
		select {
		case <-w.ctx.Done():
			t.Stop()
			return false
		case <-t.C():
			return true
		case <-w.early:
			t.Stop()
			if soon := start.Add(w.r.cfg.minInterval); soon.Before(due) {
				due = soon
			}
		}
	}
}

func (w *watcher) resolve() {
	ctx, cancel := context.WithTimeout(w.ctx, w.r.cfg.timeout)
	nodes, err := w.r.lookup(ctx)
	cancel()
	if w.ctx.Err() != nil {
		return // stopped; the error says nothing about the source
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case err != nil && !w.failing:
		w.failing = true
		w.pending = &news{err: &LookupError{Name: w.r.name, Err: err}}
	case err != nil:
		return // reported once per streak; the client keeps its last good set
	case w.failing || !w.known || !slices.EqualFunc(nodes, w.cur, sameNode):
		w.failing, w.known, w.cur = false, true, nodes
		w.pending = &news{nodes: nodes}
	default:
		return
	}
	select {
	case w.ready <- struct{}{}:
	default:
	}
}

func sameNode(a, b registry.Node) bool { return a.Addr == b.Addr && a.Weight == b.Weight }

// clock is the time source of the re-resolution schedule; tests use a fake.
type clock interface {
	Now() time.Time
	NewTimer(d time.Duration) timer
}

type timer interface {
	C() <-chan time.Time
	Stop() bool
}

type realClock struct{}

func (realClock) Now() time.Time                 { return time.Now() }
func (realClock) NewTimer(d time.Duration) timer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ *time.Timer }

func (t realTimer) C() <-chan time.Time { return t.Timer.C }
