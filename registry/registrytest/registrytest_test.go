package registrytest_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/lbrpc/lbrpc/registry"
	"github.com/lbrpc/lbrpc/registry/registrytest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestStatic(t *testing.T) {
	registrytest.Run(t, func(t *testing.T) registrytest.Source {
		var held []registry.Node // Set and Watch run on the test goroutine
		return registrytest.Source{
			Registry: watchFunc(func(ctx context.Context) (registry.Watcher, error) {
				return registry.StaticNodes(held...).Watch(ctx)
			}),
			Set: func(_ context.Context, nodes []registry.Node) error {
				held = slices.Clone(nodes)
				return nil
			},
			Fixed: true,
		}
	})
}

func TestChannelRegistry(t *testing.T) {
	registrytest.Run(t, func(t *testing.T) registrytest.Source {
		r := &chanRegistry{}
		return registrytest.Source{
			Registry: r,
			Set: func(_ context.Context, nodes []registry.Node) error {
				r.set(nodes)
				return nil
			},
			Fail: func(context.Context) error {
				r.publish(update{err: errDown})
				return nil
			},
			Restore: func(context.Context) error {
				r.publish(update{nodes: r.current()})
				return nil
			},
		}
	})
}

type watchFunc func(ctx context.Context) (registry.Watcher, error)

func (f watchFunc) Watch(ctx context.Context) (registry.Watcher, error) { return f(ctx) }

var errDown = errors.New("chanRegistry: source down")

// chanRegistry is the kind of registry a user writes: every change is
// pushed to each Watcher through a one-slot channel that keeps only the
// latest news.
type chanRegistry struct {
	mu    sync.Mutex
	nodes []registry.Node
	subs  []chan update
}

type update struct {
	nodes []registry.Node
	err   error
}

func (r *chanRegistry) Watch(ctx context.Context) (registry.Watcher, error) {
	if ctx == nil {
		return nil, registry.ErrNilContext
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	c := make(chan update, 1)
	c <- update{nodes: r.nodes}
	r.subs = append(r.subs, c)
	return &chanWatcher{c: c, stop: make(chan struct{})}, nil
}

func (r *chanRegistry) set(nodes []registry.Node) {
	nodes = registry.Dedup(nodes)
	r.mu.Lock()
	r.nodes = nodes
	r.mu.Unlock()
	r.publish(update{nodes: nodes})
}

func (r *chanRegistry) current() []registry.Node {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.nodes
}

func (r *chanRegistry) publish(u update) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.subs {
		select {
		case <-c: // drop news nobody has read yet; u supersedes it
		default:
		}
		c <- u
	}
}

type chanWatcher struct {
	c    chan update
	stop chan struct{}
	once sync.Once
}

func (w *chanWatcher) Next() ([]registry.Node, error) {
	select {
	case <-w.stop:
		return nil, registry.ErrStopped
	default:
	}
	select {
	case u := <-w.c:
		return slices.Clone(u.nodes), u.err
	case <-w.stop:
		return nil, registry.ErrStopped
	}
}

func (w *chanWatcher) Stop() error {
	w.once.Do(func() { close(w.stop) })
	return nil
}
