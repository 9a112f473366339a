package lbrpc

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lbrpc/lbrpc/middleware"
	"github.com/lbrpc/lbrpc/picker"
	"github.com/lbrpc/lbrpc/registry"
	"github.com/lbrpc/lbrpc/transport"
)

// Client load-balances net/rpc calls over the nodes of a registry.
// It is safe for concurrent use.
type Client struct {
	cfg      config
	invoke   middleware.Invoker
	picker   picker.Picker
	tr       transport.Transport
	watcher  registry.Watcher
	reporter registry.FailureReporter // nil unless the watcher wants failures

	health  transport.Health // nil if the transport does not tell
	applyMu sync.Mutex       // serialises picker updates
	changed chan struct{}    // a node's reachability changed

	ready    chan struct{} // closed once the registry answered
	isReady  atomic.Bool
	closing  chan struct{}
	closed   atomic.Bool
	loop     sync.WaitGroup                  // the registry loop
	nodes    atomic.Pointer[[]registry.Node] // the registry's set
	panicked atomic.Bool                     // every node is unreachable: picking among all
	watchErr atomic.Pointer[error]           // the registry's last error, nil after a good set

	goMu    sync.Mutex
	goCalls map[*Call]context.CancelCauseFunc // calls made with Go, cancelled by Close
	goWG    sync.WaitGroup
}

// New returns a client configured by opts. It starts watching the registry
// (Registry.Watch is the only I/O it does; the first node set is awaited by
// the first calls, not by New) and, unless the transport is lazy, dialling
// the nodes as they arrive.
func New(opts ...Option) (*Client, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	if cfg.registry == nil {
		return nil, errors.New("lbrpc: no registry: use WithRegistry")
	}
	mws, err := cfg.middleware()
	if err != nil {
		return nil, err
	}
	tr := cfg.transport
	if tr == nil {
		if tr, err = transport.New(cfg.trOpts...); err != nil {
			return nil, err
		}
	} else if len(cfg.trOpts) > 0 {
		return nil, errors.New("lbrpc: WithTransportOptions applies to the default transport, not to WithTransport's")
	}
	w, err := cfg.registry.Watch(context.Background())
	if err != nil {
		tr.Close()
		return nil, fmt.Errorf("lbrpc: watching registry: %w", err)
	}
	c := &Client{
		cfg:     cfg,
		picker:  cfg.picker,
		tr:      tr,
		watcher: w,
		ready:   make(chan struct{}),
		closing: make(chan struct{}),
		goCalls: map[*Call]context.CancelCauseFunc{},
	}
	c.reporter, _ = w.(registry.FailureReporter)
	c.nodes.Store(&[]registry.Node{})
	c.invoke = middleware.Chain(mws...)(c.send)
	if h, ok := tr.(transport.Health); ok {
		c.health = h
		c.changed = make(chan struct{}, 1)
		h.Notify(func() {
			select {
			case c.changed <- struct{}{}:
			default: // a refresh is already due
			}
		})
		c.loop.Add(1)
		go c.followHealth()
	}
	c.loop.Add(1)
	go c.watch()
	return c, nil
}

// followHealth refreshes the picker when the transport's view of node
// reachability changes.
func (c *Client) followHealth() {
	defer c.loop.Done()
	for {
		select {
		case <-c.changed:
			c.applyMu.Lock()
			c.updatePicker(*c.nodes.Load())
			c.applyMu.Unlock()
		case <-c.closing:
			return
		}
	}
}

// watch applies the registry's node sets until the watcher stops.
func (c *Client) watch() {
	defer c.loop.Done()
	var fails int
	for {
		nodes, err := c.watcher.Next()
		if c.closed.Load() || errors.Is(err, registry.ErrStopped) {
			return
		}
		if err != nil {
			// Keep the last good set. A registry that fails at once again
			// and again is slowed down rather than spun.
			c.watchErr.Store(&err)
			c.markReady()
			fails++
			select {
			case <-time.After(min(time.Duration(fails)*10*time.Millisecond, time.Second)):
			case <-c.closing:
				return
			}
			continue
		}
		fails = 0
		c.watchErr.Store(nil)
		c.apply(registry.Dedup(nodes))
		c.markReady()
	}
}

func (c *Client) apply(nodes []registry.Node) {
	addrs := make([]string, len(nodes))
	for i, n := range nodes {
		addrs[i] = n.Addr
	}
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	c.nodes.Store(&nodes)
	// The picker first, so that removed nodes stop being picked before the
	// transport drains them.
	c.updatePicker(nodes)
	c.tr.Update(addrs)
}

// updatePicker gives the picker the nodes fit to serve: those the transport
// can reach, or all of them when it can reach none (panic mode: better to
// try than to fail everything). c.applyMu is held.
func (c *Client) updatePicker(nodes []registry.Node) {
	ready := nodes
	if c.health != nil {
		ready = make([]registry.Node, 0, len(nodes))
		for _, n := range nodes {
			if c.health.Reachable(n.Addr) {
				ready = append(ready, n)
			}
		}
		if len(ready) == 0 {
			ready = nodes
		}
	}
	c.panicked.Store(len(nodes) > 0 && len(ready) == len(nodes) && c.health != nil && !c.anyReachable(nodes))
	c.picker.Update(ready)
}

func (c *Client) anyReachable(nodes []registry.Node) bool {
	for _, n := range nodes {
		if c.health.Reachable(n.Addr) {
			return true
		}
	}
	return false
}

func (c *Client) markReady() {
	if !c.isReady.Swap(true) {
		close(c.ready)
	}
}

// Nodes returns the node set the client uses now.
func (c *Client) Nodes() []registry.Node {
	return slices.Clone(*c.nodes.Load())
}

// Transport returns the client's transport, for its state (the default
// transport is a *transport.Pool).
func (c *Client) Transport() transport.Transport { return c.tr }

// Call calls serviceMethod ("Service.Method") on a node and waits for the
// answer, for ctx to end, or for the client to close. reply must be a
// non-nil pointer; it is written only on success, and never after Call
// returns.
func (c *Client) Call(ctx context.Context, serviceMethod string, args, reply any) error {
	if err := c.check(ctx, serviceMethod, reply); err != nil {
		return err
	}
	if c.cfg.timeout > 0 {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, c.cfg.timeout)
			defer cancel()
		}
	}
	if !c.isReady.Load() {
		select {
		case <-c.ready:
		case <-ctx.Done():
			return fmt.Errorf("lbrpc: waiting for the registry: %w", ctx.Err())
		case <-c.closing:
			return ErrClosed
		}
	}
	return c.invoke(ctx, &middleware.Call{ServiceMethod: serviceMethod, Args: args, Reply: reply})
}

// check validates a call's input.
func (c *Client) check(ctx context.Context, serviceMethod string, reply any) error {
	if c.closed.Load() {
		return ErrClosed
	}
	if ctx == nil {
		return ErrNilContext
	}
	if dot := strings.LastIndexByte(serviceMethod, '.'); dot <= 0 || dot == len(serviceMethod)-1 {
		return fmt.Errorf("%w: %q", ErrBadMethod, serviceMethod)
	}
	if rv := reflect.ValueOf(reply); rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("%w: got %T", ErrBadReply, reply)
	}
	return nil
}

// Panicking reports whether the client is in panic mode: no node of the set
// is reachable, so it picks among all of them rather than failing every call.
func (c *Client) Panicking() bool { return c.panicked.Load() }

// send is the innermost invoker: pick a node, carry the call to it, and
// tell the picker how it went.
func (c *Client) send(ctx context.Context, call *middleware.Call) error {
	err := c.attempt(ctx, call)
	// A node removed between pick and send never saw the call: pick again.
	// This is not a retry, and it ends: each pass excludes one more node.
	for i := 0; i < 3 && errors.Is(err, transport.ErrNodeRemoved) && ctx.Err() == nil; i++ {
		err = c.attempt(ctx, call)
	}
	return err
}

func (c *Client) attempt(ctx context.Context, call *middleware.Call) error {
	res, err := c.picker.Pick(ctx, picker.Info{ServiceMethod: call.ServiceMethod, Tried: call.Tried})
	if err != nil {
		if errors.Is(err, ErrNoNodes) {
			if werr := c.watchErr.Load(); werr != nil {
				return fmt.Errorf("%w (registry: %w)", err, *werr)
			}
		}
		return err
	}
	call.Addr = res.Node.Addr
	var start time.Time
	if res.Done != nil {
		start = time.Now()
	}
	err = c.tr.Call(ctx, call.Addr, call.ServiceMethod, call.Args, call.Reply)
	if res.Done != nil {
		res.Done(picker.DoneInfo{Err: err, Latency: time.Since(start)})
	}
	if err != nil && c.reporter != nil {
		if _, ok := errors.AsType[*transport.Error](err); ok && ctx.Err() == nil {
			c.reporter.ReportFailure(call.Addr, err)
		}
	}
	return err
}

// Call is a call made with Go, as rpc.Call is for rpc.Client.Go.
type Call struct {
	ServiceMethod string
	Args          any
	Reply         any
	Error         error      // set when the call is complete
	Done          chan *Call // receives the Call when it is complete
}

// Go starts a call and returns at once; done receives the Call when it
// ends. If done is nil a new channel is made. done must be buffered: an
// unbuffered one is not used, and the returned Call carries
// ErrUnbufferedDone with nothing sent. Close cancels calls made with Go.
func (c *Client) Go(ctx context.Context, serviceMethod string, args, reply any, done chan *Call) *Call {
	call := &Call{ServiceMethod: serviceMethod, Args: args, Reply: reply, Done: done}
	if call.Done == nil {
		call.Done = make(chan *Call, 10)
	} else if cap(call.Done) == 0 {
		call.Error = ErrUnbufferedDone
		return call
	}
	if err := c.check(ctx, serviceMethod, reply); err != nil {
		call.Error = err
		call.Done <- call
		return call
	}
	ctx, cancel := context.WithCancelCause(ctx)
	c.goMu.Lock()
	if c.closed.Load() {
		c.goMu.Unlock()
		cancel(ErrClosed)
		call.Error = ErrClosed
		call.Done <- call
		return call
	}
	c.goCalls[call] = cancel
	c.goWG.Add(1)
	c.goMu.Unlock()
	go func() {
		defer c.goWG.Done()
		err := c.Call(ctx, serviceMethod, args, reply)
		if cause := context.Cause(ctx); errors.Is(cause, ErrClosed) {
			err = ErrClosed
		}
		c.goMu.Lock()
		delete(c.goCalls, call)
		c.goMu.Unlock()
		cancel(nil)
		call.Error = err
		select {
		case call.Done <- call:
		default: // like net/rpc: a full done channel is the caller's fault
		}
	}()
	return call
}

// Close stops the registry watch, fails pending calls with ErrClosed, closes
// every connection, and waits for the client's goroutines. Calls after Close
// return ErrClosed. Close is idempotent.
func (c *Client) Close() error {
	c.goMu.Lock()
	if c.closed.Swap(true) {
		c.goMu.Unlock()
		return nil
	}
	close(c.closing)
	for _, cancel := range c.goCalls {
		cancel(ErrClosed)
	}
	c.goMu.Unlock()
	werr := c.watcher.Stop()
	c.loop.Wait()
	terr := c.tr.Close()
	c.goWG.Wait()
	return errors.Join(werr, terr)
}
