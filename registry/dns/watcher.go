package dns

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/lbrpc/lbrpc/registry"
)

var _ registry.FailureReporter = (*watcher)(nil)

// watcher resolves in one goroutine (run) and hands the news to Next, as the
// etcd registry's watcher does: a set that Next has not taken yet is
// replaced by a newer one, never queued, since the client only needs the
// newest snapshot; a failure waits behind an unread set, so that Next returns
// the set and then the failure; a newer set replaces an unread failure,
// since it ends the failure.
type watcher struct {
	r      *Registry
	ctx    context.Context // cancelled by Stop
	cancel context.CancelFunc
	done   chan struct{} // closed when run returns
	early  chan struct{} // one pending ReportFailure
	ready  chan struct{} // one wake-up for Next

	mu      sync.Mutex
	snap    []registry.Node // pending set, if hasSnap; not yet taken by Next
	hasSnap bool
	failure error           // pending failure, taken after snap
	cur     []registry.Node // the last set queued for Next, sorted
	known   bool            // cur is valid
	failing bool            // an error was queued and no set since
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
// streak. A set resolved before a failure and not yet taken is returned
// first, then the failure's error. After a failure the set is reported again
// even if unchanged, so that the client knows the failure is over.
func (w *watcher) Next() ([]registry.Node, error) {
	for {
		if w.ctx.Err() != nil {
			return nil, registry.ErrStopped
		}
		if nodes, err, ok := w.take(); ok {
			return nodes, err
		}
		select {
		case <-w.ready:
		case <-w.ctx.Done():
		}
	}
}

// take removes and returns the pending set, or else the pending failure;
// ok is false when there is neither.
func (w *watcher) take() (nodes []registry.Node, err error, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.hasSnap:
		nodes = slices.Clone(w.snap)
		w.snap, w.hasSnap = nil, false
		return nodes, nil, true
	case w.failure != nil:
		err = w.failure
		w.failure = nil
		return nil, err, true
	}
	return nil, nil, false
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
		// Queued behind an unread set, which stays the client's last good
		// one.
		w.failing = true
		w.failure = &LookupError{Name: w.r.name, Err: err}
	case err != nil:
		return // reported once per streak; the client keeps its last good set
	case w.failing || !w.known || !slices.EqualFunc(nodes, w.cur, sameNode):
		w.failing, w.known, w.cur = false, true, nodes
		w.snap, w.hasSnap, w.failure = nodes, true, nil
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
