package consul

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lbrpc/lbrpc/registry"
)

// TagsMetaKey is the Node.Meta key that holds an instance's Consul tags,
// joined with commas in the order Consul returns them. The dot keeps it apart
// from service metadata, whose keys Consul limits to letters, digits, "-" and
// "_".
const TagsMetaKey = "consul.tags"

// Defaults of the Option settings.
const (
	// DefaultWaitTime is the longest a blocking query waits (WithWaitTime);
	// it is Consul's own default.
	DefaultWaitTime = 5 * time.Minute
	// DefaultBackoffBase is the pause after the first failed query
	// (WithBackoff).
	DefaultBackoffBase = 500 * time.Millisecond
	// DefaultBackoffMax is the longest pause between failed queries
	// (WithBackoff).
	DefaultBackoffMax = 30 * time.Second
)

// minQueryInterval is the least time between the starts of two queries of
// one watcher. Consul's blocking-query documentation asks clients to rate
// limit; this also keeps a misbehaving agent that answers at once (index 0,
// an index that never moves, an index that goes backwards) from making the
// watcher spin.
const minQueryInterval = 100 * time.Millisecond

// Option configures New.
type Option func(*config)

type config struct {
	tag         string
	wait        time.Duration
	query       api.QueryOptions
	backoffBase time.Duration
	backoffMax  time.Duration

	// Time, injected by tests.
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error
}

func defaultConfig() config {
	return config{
		wait:        DefaultWaitTime,
		backoffBase: DefaultBackoffBase,
		backoffMax:  DefaultBackoffMax,
		now:         time.Now,
		sleep:       sleepCtx,
	}
}

// WithTag keeps only instances that carry tag (Consul's catalog compares
// tags without regard to case). The empty tag, the default, keeps all instances.
func WithTag(tag string) Option {
	return func(c *config) { c.tag = tag }
}

// WithWaitTime sets how long each blocking query may wait for a change
// before Consul answers with the unchanged set; d must be positive. Consul
// caps it at 10 minutes and adds up to d/16 of jitter. The default is
// DefaultWaitTime. An api.Config HttpClient with a Timeout shorter than d
// makes every quiet wait fail.
func WithWaitTime(d time.Duration) Option {
	return func(c *config) { c.wait = d }
}

// WithBackoff bounds the pause before retrying after a failed query: base
// after the first failure, doubling with each further failure up to max,
// with ±20% jitter, never above max. It needs 0 < base <= max. The defaults
// are DefaultBackoffBase and DefaultBackoffMax.
func WithBackoff(base, max time.Duration) Option {
	return func(c *config) { c.backoffBase, c.backoffMax = base, max }
}

// WithQueryOptions sets the query options sent with every query, for
// settings such as Datacenter, AllowStale, Filter or NodeMeta. (The
// datacenter, token, namespace and partition of the api.Client's Config
// apply without it.) The watcher manages blocking itself, so q's WaitIndex,
// WaitTime and WaitHash must be zero; any context set on q is replaced by
// the watcher's.
func WithQueryOptions(q api.QueryOptions) Option {
	return func(c *config) { c.query = q }
}

// New returns a Registry of the passing instances of service, as reported by
// Consul's health endpoint (GET /v1/health/service/<service>?passing).
// New checks its arguments and performs no I/O.
//
// Each instance becomes a Node: Addr is Service.Address (Node.Address when
// that is empty) joined with Service.Port; Weight is Service.Weights.Passing,
// or 1 when it is not positive, so a Consul instance is never drained by
// weight; Meta is a copy of Service.Meta plus the tags under TagsMetaKey, nil
// when both are empty. Instances without an address or a port are skipped.
// Each snapshot is sorted by Addr; of instances sharing an Addr the one with
// the lowest service ID is kept.
//
// Each Watcher runs its own chain of blocking queries in the goroutine that
// calls Next, so it owns no goroutines:
//
//   - The first Next returns the current set, even an empty one.
//   - Later calls block in blocking queries until the set differs from the
//     last one returned. Consul may answer without a change; those answers are
//     not reported. An index that goes backwards resets the chain to index 0,
//     as Consul's documentation asks, an index of 0 is taken as 1, and two
//     queries never start less than 100ms apart, so a misbehaving agent cannot
//     make the watcher spin.
//   - A failed query makes Next return the error (wrapping the api error) and
//     a nil set; the caller keeps its last good set. The following Next first
//     waits out the backoff (see WithBackoff) and then queries without an
//     index; the first set after a failure is returned even if unchanged, so
//     the caller learns that Consul is back.
//   - Stop cancels the query in flight; Next then returns registry.ErrStopped.
//     Stop is idempotent.
//
// The api.Client is shared, not owned: closing its transport is the caller's
// business.
func New(client *api.Client, service string, opts ...Option) (registry.Registry, error) {
	if client == nil {
		return nil, errors.New("lbrpc/registry/consul: nil api.Client")
	}
	if err := checkName("service name", service); err != nil {
		return nil, err
	}
	cfg := defaultConfig()
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	switch {
	case cfg.wait <= 0:
		return nil, fmt.Errorf("lbrpc/registry/consul: wait time %v is not positive", cfg.wait)
	case cfg.backoffBase <= 0 || cfg.backoffMax < cfg.backoffBase:
		return nil, fmt.Errorf("lbrpc/registry/consul: backoff needs 0 < base <= max, got base %v, max %v", cfg.backoffBase, cfg.backoffMax)
	case cfg.query.WaitIndex != 0 || cfg.query.WaitTime != 0 || cfg.query.WaitHash != "":
		return nil, errors.New("lbrpc/registry/consul: WithQueryOptions: WaitIndex, WaitTime and WaitHash are managed by the watcher; use WithWaitTime")
	}
	return &consulRegistry{client: client, service: service, cfg: cfg}, nil
}

// checkName rejects names that would not survive as one URL path segment.
func checkName(what, s string) error {
	switch {
	case s == "":
		return fmt.Errorf("lbrpc/registry/consul: empty %s", what)
	case strings.ContainsAny(s, "/?#%") || strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f }):
		return fmt.Errorf("lbrpc/registry/consul: %s %q contains '/', '?', '#', '%%', a space or a control character", what, s)
	}
	return nil
}

type consulRegistry struct {
	client  *api.Client
	service string
	cfg     config
}

// Watch returns a Watcher; it performs no I/O (the first Next queries). A
// nil ctx is registry.ErrNilContext.
func (r *consulRegistry) Watch(ctx context.Context) (registry.Watcher, error) {
	if ctx == nil {
		return nil, registry.ErrNilContext
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(context.Background())
	return &watcher{r: r, ctx: wctx, cancel: cancel}, nil
}

type watcher struct {
	r      *consulRegistry
	ctx    context.Context // canceled by Stop
	cancel context.CancelFunc

	// Guarded by the one-caller rule of Next.
	index     uint64 // WaitIndex of the next query; 0 means don't block
	last      []registry.Node
	sent      bool      // last holds the set last returned, and no failure since
	failures  int       // consecutive failed queries
	lastStart time.Time // start of the previous query
}

func (w *watcher) Next() ([]registry.Node, error) {
	for {
		if err := w.pause(); err != nil {
			return nil, registry.ErrStopped
		}
		entries, meta, err := w.query()
		if err != nil {
			if w.ctx.Err() != nil {
				return nil, registry.ErrStopped
			}
			w.failures++
			w.index = 0
			w.sent = false // report the set again once Consul answers
			return nil, fmt.Errorf("lbrpc/registry/consul: query service %q: %w", w.r.service, err)
		}
		w.failures = 0
		w.index = nextIndex(w.index, meta.LastIndex)
		nodes := toNodes(entries)
		if w.sent && equalNodes(nodes, w.last) {
			continue
		}
		w.sent, w.last = true, nodes
		return slices.Clone(nodes), nil
	}
}

// pause waits out the backoff after a failure and the minimum query
// interval.
func (w *watcher) pause() error {
	if err := w.ctx.Err(); err != nil {
		return err
	}
	now := w.r.cfg.now()
	var d time.Duration
	if !w.lastStart.IsZero() {
		d = w.lastStart.Add(minQueryInterval).Sub(now)
	}
	if w.failures > 0 {
		d = max(d, backoff(w.r.cfg.backoffBase, w.r.cfg.backoffMax, w.failures, rand.Float64()))
	}
	if d > 0 {
		if err := w.r.cfg.sleep(w.ctx, d); err != nil {
			return err
		}
		now = w.r.cfg.now()
	}
	w.lastStart = now
	return nil
}

func (w *watcher) query() ([]*api.ServiceEntry, *api.QueryMeta, error) {
	q := w.r.cfg.query // a copy
	q.WaitIndex = w.index
	q.WaitTime = w.r.cfg.wait
	return w.r.client.Health().Service(w.r.service, w.r.cfg.tag, true, q.WithContext(w.ctx))
}

func (w *watcher) Stop() error {
	w.cancel()
	return nil
}

// nextIndex returns the WaitIndex to use after an answer carrying got, per
// the "Implementation Details" of Consul's blocking-query documentation.
func nextIndex(prev, got uint64) uint64 {
	switch {
	case got < prev:
		return 0 // went backwards: start over
	case got == 0:
		return 1 // never block on 0, which would not block
	}
	return got
}

// backoff returns the pause before retry number n (n >= 1): base doubling up
// to max, with ±20% jitter from r in [0, 1), capped at max.
func backoff(base, max time.Duration, n int, r float64) time.Duration {
	d := base
	for i := 1; i < n && d < max; i++ {
		d *= 2
	}
	d = min(d, max)
	d = time.Duration(float64(d) * (0.8 + 0.4*r))
	return min(d, max)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// toNodes maps health entries to a sorted, deduplicated snapshot, never nil.
func toNodes(entries []*api.ServiceEntry) []registry.Node {
	type instance struct {
		node registry.Node
		id   string
	}
	all := make([]instance, 0, len(entries))
	for _, e := range entries {
		if e == nil || e.Service == nil {
			continue
		}
		s := e.Service
		host := s.Address
		if host == "" && e.Node != nil {
			host = e.Node.Address
		}
		if host == "" || s.Port <= 0 || s.Port > 65535 {
			continue
		}
		n := registry.Node{Addr: net.JoinHostPort(host, strconv.Itoa(s.Port)), Weight: s.Weights.Passing}
		if n.Weight <= 0 {
			n.Weight = 1
		}
		if len(s.Meta) > 0 {
			n.Meta = maps.Clone(s.Meta)
		}
		if len(s.Tags) > 0 {
			if n.Meta == nil {
				n.Meta = make(map[string]string, 1)
			}
			n.Meta[TagsMetaKey] = strings.Join(s.Tags, ",")
		}
		all = append(all, instance{n, s.ID})
	}
	slices.SortFunc(all, func(a, b instance) int {
		return cmp.Or(strings.Compare(a.node.Addr, b.node.Addr), strings.Compare(a.id, b.id))
	})
	nodes := make([]registry.Node, 0, len(all))
	for _, in := range all {
		nodes = append(nodes, in.node)
	}
	return registry.Dedup(nodes)
}

func equalNodes(a, b []registry.Node) bool {
	return slices.EqualFunc(a, b, func(x, y registry.Node) bool {
		return x.Addr == y.Addr && x.Weight == y.Weight && maps.Equal(x.Meta, y.Meta)
	})
}
