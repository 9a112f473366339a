package etcd

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/connectivity"

	"github.com/lbrpc/lbrpc/registry"
)

// New returns a registry of the nodes of service, read from the keys under
// prefix/service/ (see WithPrefix) through client.
//
// New does no I/O. The registry does not close client; close it after
// stopping every Watcher.
func New(client *clientv3.Client, service string, opts ...Option) (registry.Registry, error) {
	if client == nil {
		return nil, errors.New("lbrpc/registry/etcd: nil client")
	}
	if err := checkService(service); err != nil {
		return nil, err
	}
	c, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	return &etcdRegistry{client: client, prefix: c.servicePrefix(service), cfg: c}, nil
}

type etcdRegistry struct {
	client *clientv3.Client
	prefix string
	cfg    config
}

// Watch starts a Watcher. It does no I/O: the first Next reports the current
// set, or an error if etcd cannot be read. A nil ctx is
// registry.ErrNilContext.
func (r *etcdRegistry) Watch(ctx context.Context) (registry.Watcher, error) {
	if ctx == nil {
		return nil, registry.ErrNilContext
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// The watcher lives until Stop or until the client is closed.
	wctx, cancel := context.WithCancel(r.client.Ctx())
	w := &watcher{
		client:  r.client,
		prefix:  r.prefix,
		cfg:     r.cfg,
		cancel:  cancel,
		stopped: make(chan struct{}),
		wake:    make(chan struct{}, 1),
		up:      make(chan struct{}, 1),
	}
	w.wg.Add(1)
	go w.run(wctx)
	if conn := r.client.ActiveConnection(); conn != nil {
		w.wg.Add(1)
		go w.monitor(wctx, conn)
	}
	return w, nil
}

// watcher is the etcd registry.Watcher. One goroutine (run) lists, watches
// and keeps the node map; another (monitor) follows the gRPC connection state
// so that an unreachable etcd is noticed even while a watch waits quietly.
// They hand results to Next through the fields under mu.
type watcher struct {
	client *clientv3.Client
	prefix string
	cfg    config

	cancel   context.CancelFunc
	wg       sync.WaitGroup
	stopped  chan struct{}
	stopOnce sync.Once

	wake chan struct{} // cap 1: there is something for Next
	up   chan struct{} // cap 1: the connection became ready

	mu            sync.Mutex
	snap          []registry.Node // pending snapshot, if hasSnap
	hasSnap       bool
	failure       error            // pending failure
	bad           map[string]error // pending bad-value errors by key
	unreachable   bool             // the connection is in TRANSIENT_FAILURE
	cancelAttempt context.CancelCauseFunc
}

// Next returns, in this order, a pending snapshot, a pending failure (with a
// nil set) and pending bad-value errors (with a nil set), and otherwise waits
// for one. Snapshots are full: a newer one replaces an unread older one.
func (w *watcher) Next() ([]registry.Node, error) {
	for {
		select {
		case <-w.stopped:
			return nil, registry.ErrStopped
		default:
		}
		if nodes, err, ok := w.take(); ok {
			return nodes, err
		}
		select {
		case <-w.wake:
		case <-w.stopped:
			return nil, registry.ErrStopped
		}
	}
}

func (w *watcher) take() ([]registry.Node, error, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.hasSnap:
		nodes := w.snap
		w.snap, w.hasSnap = nil, false
		return nodes, nil, true
	case w.failure != nil:
		err := w.failure
		w.failure = nil
		return nil, err, true
	case len(w.bad) > 0:
		errs := make([]error, 0, len(w.bad))
		for _, k := range slices.Sorted(maps.Keys(w.bad)) {
			errs = append(errs, w.bad[k])
		}
		clear(w.bad)
		if len(errs) == 1 {
			return nil, errs[0], true
		}
		return nil, errors.Join(errs...), true
	}
	return nil, nil, false
}

// Stop stops the watcher's goroutines and waits for them. It is safe to call
// more than once and from any goroutine.
func (w *watcher) Stop() error {
	w.stopOnce.Do(func() {
		close(w.stopped)
		w.cancel()
	})
	w.wg.Wait()
	return nil
}

func (w *watcher) signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// monitor follows the connection state. Entering TRANSIENT_FAILURE (no
// endpoint reachable) cancels the current list or watch, which run reports
// as ErrUnreachable; becoming READY again cuts run's backoff short.
func (w *watcher) monitor(ctx context.Context, conn interface {
	GetState() connectivity.State
	WaitForStateChange(context.Context, connectivity.State) bool
}) {
	defer w.wg.Done()
	state := conn.GetState()
	for {
		w.mu.Lock()
		down := state == connectivity.TransientFailure
		if down && !w.unreachable && w.cancelAttempt != nil {
			w.cancelAttempt(ErrUnreachable)
		}
		w.unreachable = down
		w.mu.Unlock()
		if state == connectivity.Ready {
			w.signal(w.up)
		}
		if !conn.WaitForStateChange(ctx, state) {
			return
		}
		state = conn.GetState()
	}
}

// entry is what run knows of one key.
type entry struct {
	node registry.Node
	err  error // bad value; node is unset
	rev  int64 // ModRevision of the value
}

// state is run's own view; only run touches it.
type state struct {
	entries  map[string]entry
	sent     []registry.Node // last snapshot handed to Next
	haveSent bool
	reported map[string]int64 // bad keys already reported, by ModRevision
	failed   bool             // a failure was reported since the last snapshot
}

func (w *watcher) run(ctx context.Context) {
	defer w.wg.Done()
	st := &state{reported: map[string]int64{}}
	bo := newBackoff(w.cfg)
	for {
		err := w.session(ctx, st, &bo)
		if w.isStopped() {
			return
		}
		if ctx.Err() != nil { // the client was closed
			w.fail(st, fmt.Errorf("lbrpc/registry/etcd: client closed: %w", context.Cause(ctx)))
			return
		}
		if err == nil { // compacted: list again at once
			continue
		}
		w.fail(st, err)
		t := time.NewTimer(bo.next())
		select {
		case <-ctx.Done():
		case <-t.C:
		case <-w.up:
		}
		t.Stop()
	}
}

func (w *watcher) isStopped() bool {
	select {
	case <-w.stopped:
		return true
	default:
		return false
	}
}

// session lists the prefix, reports the snapshot and follows the watch. It
// returns nil when the watch fell behind compaction and must list again, and
// the failure otherwise.
func (w *watcher) session(ctx context.Context, st *state, bo *backoff) error {
	actx, done := w.beginAttempt(ctx)
	defer done()
	rctx := clientv3.WithRequireLeader(actx)

	resp, err := w.client.Get(rctx, w.prefix, clientv3.WithPrefix())
	if err != nil {
		return attemptErr(actx, fmt.Errorf("lbrpc/registry/etcd: list %s: %w", w.prefix, err))
	}
	st.entries = make(map[string]entry, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		st.entries[string(kv.Key)] = w.decode(kv)
	}
	w.publish(st)
	rev := resp.Header.Revision
	if w.cfg.listHook != nil {
		w.cfg.listHook(rev)
	}

	wch := w.client.Watch(rctx, w.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithCreatedNotify())
	for {
		var wr clientv3.WatchResponse
		var ok bool
		select {
		case <-actx.Done():
			return context.Cause(actx)
		case wr, ok = <-wch:
		}
		if !ok {
			return attemptErr(actx, fmt.Errorf("lbrpc/registry/etcd: watch %s: closed", w.prefix))
		}
		if wr.CompactRevision != 0 || errors.Is(wr.Err(), rpctypes.ErrCompacted) {
			return nil
		}
		if err := wr.Err(); err != nil {
			return attemptErr(actx, fmt.Errorf("lbrpc/registry/etcd: watch %s: %w", w.prefix, err))
		}
		if wr.Created {
			bo.reset() // list and watch both work
		}
		if len(wr.Events) == 0 {
			continue
		}
		for _, ev := range wr.Events {
			key := string(ev.Kv.Key)
			if ev.Type == mvccpb.DELETE {
				delete(st.entries, key)
			} else {
				st.entries[key] = w.decode(ev.Kv)
			}
		}
		w.publish(st)
	}
}

// beginAttempt returns a context that the monitor cancels with ErrUnreachable
// when the connection fails, and the function that ends the attempt.
func (w *watcher) beginAttempt(ctx context.Context) (context.Context, func()) {
	actx, cancel := context.WithCancelCause(ctx)
	select { // only a connection that turns ready from now on counts
	case <-w.up:
	default:
	}
	w.mu.Lock()
	if w.unreachable {
		// The monitor saw the failure before this attempt began, and sees
		// no new one while the connection stays down: the client would
		// wait for it to be ready, without end.
		cancel(ErrUnreachable)
	}
	w.cancelAttempt = cancel
	w.mu.Unlock()
	return actx, func() {
		w.mu.Lock()
		w.cancelAttempt = nil
		w.mu.Unlock()
		cancel(nil)
	}
}

// attemptErr prefers the reason the attempt was cancelled to the error that
// the cancellation caused.
func attemptErr(actx context.Context, err error) error {
	if actx.Err() != nil {
		return context.Cause(actx)
	}
	return err
}

func (w *watcher) decode(kv *mvccpb.KeyValue) entry {
	key := string(kv.Key)
	n, err := decodeNode(strings.TrimPrefix(key, w.prefix), kv.Value)
	if err != nil {
		return entry{err: &BadValueError{Key: key, Err: err}, rev: kv.ModRevision}
	}
	return entry{node: n, rev: kv.ModRevision}
}

// publish hands Next the snapshot built from st.entries if it differs from
// the last one (or a failure came in between), and the bad values not yet
// reported.
func (w *watcher) publish(st *state) {
	keys := slices.Sorted(maps.Keys(st.entries))
	nodes := make([]registry.Node, 0, len(keys))
	var newBad []*BadValueError
	for _, key := range keys {
		e := st.entries[key]
		if e.err == nil {
			nodes = append(nodes, e.node)
			continue
		}
		if rev, ok := st.reported[key]; !ok || rev != e.rev {
			st.reported[key] = e.rev
			newBad = append(newBad, e.err.(*BadValueError))
		}
	}
	for key := range st.reported {
		if e, ok := st.entries[key]; !ok || e.err == nil {
			delete(st.reported, key)
		}
	}
	// Sorted by address; among duplicates the first key wins.
	slices.SortStableFunc(nodes, func(a, b registry.Node) int { return strings.Compare(a.Addr, b.Addr) })
	nodes = registry.Dedup(nodes)
	changed := st.failed || !st.haveSent || !slices.EqualFunc(nodes, st.sent, sameNode)

	w.mu.Lock()
	defer w.mu.Unlock()
	for key := range w.bad {
		if _, still := st.reported[key]; !still {
			delete(w.bad, key)
		}
	}
	for _, e := range newBad {
		if w.bad == nil {
			w.bad = map[string]error{}
		}
		w.bad[e.Key] = e
	}
	if changed {
		w.snap, w.hasSnap, w.failure = nodes, true, nil
		st.sent, st.haveSent, st.failed = slices.Clone(nodes), true, false
	}
	if changed || len(newBad) > 0 {
		w.signal(w.wake)
	}
}

func (w *watcher) fail(st *state, err error) {
	st.failed = true
	w.mu.Lock()
	w.failure = err
	w.mu.Unlock()
	w.signal(w.wake)
}

func sameNode(a, b registry.Node) bool {
	return a.Addr == b.Addr && a.Weight == b.Weight && maps.Equal(a.Meta, b.Meta)
}
