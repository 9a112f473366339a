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

	"go.opentelemetry.io/otel/metric"

	"github.com/lbrpc/lbrpc/middleware"
	"github.com/lbrpc/lbrpc/picker"
	"github.com/lbrpc/lbrpc/registry"
	"github.com/lbrpc/lbrpc/transport"
)

// Client load-balances net/rpc calls over the nodes of a registry.
// It is safe for concurrent use.
//
// The picker chooses among the client's ready set: the registry's nodes
// less those the transport cannot reach, those ejected as outliers
// (WithOutlierDetection, on by default), those whose breaker is open
// (WithNodeBreaker) and those failing their health check
// (WithHealthCheck). State shows each node's standing.
type Client struct {
	epoch    time.Time // origin of the latencies measured for the picker
	cfg      config
	invoke   middleware.Invoker
	picker   picker.Picker
	tr       transport.Transport
	watcher  registry.Watcher
	reporter registry.FailureReporter // nil unless the watcher wants failures

	health    transport.Health // nil if the transport does not tell
	applyMu   sync.Mutex       // serialises ready-set updates; guards the fields below and nodeState's
	lastReady []registry.Node  // what the picker was last given
	changed   chan struct{}    // the ready set may have changed

	ctx      context.Context // cancelled by Close; bounds health checks
	cancel   context.CancelFunc
	ready    chan struct{} // closed once the registry answered
	isReady  atomic.Bool
	closing  chan struct{}
	closed   atomic.Bool
	loop     sync.WaitGroup                  // the registry loop and the follower
	probes   sync.WaitGroup                  // the health check goroutines
	nodes    atomic.Pointer[[]registry.Node] // the registry's set
	states   atomic.Pointer[nodeStates]      // per-node state, for the nodes of the set
	panicked atomic.Bool                     // no node is fit to serve: picking among all
	watchErr atomic.Pointer[error]           // the registry's last error, nil after a good set

	goMu    sync.Mutex
	goCalls map[*Call]context.CancelCauseFunc // calls made with Go, cancelled by Close
	goWG    sync.WaitGroup

	gauges metric.Registration // WithMetrics's; nil without
}

// New returns a client configured by opts. It starts watching the registry
// (Registry.Watch is the only I/O it does; the first node set is awaited by
// the first calls, not by New) and, unless the transport is lazy, dialling
// the nodes as they arrive.
func New(opts ...Option) (_ *Client, err error) {
	cfg := defaultConfig()
	defer func() {
		// The client owns WithTransport's transport from New on, even when
		// there is no client to close it.
		if err != nil && cfg.transport != nil {
			cfg.transport.Close()
		}
	}()
	for _, o := range opts {
		// Every option is applied, so that a WithTransport after a bad
		// option is still closed.
		if o == nil {
			continue
		}
		if oerr := o(&cfg); oerr != nil && err == nil {
			err = oerr
		}
	}
	if err != nil {
		return nil, err
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
		if cfg.transport == nil {
			tr.Close()
		}
		return nil, fmt.Errorf("lbrpc: watching registry: %w", err)
	}
	c := &Client{
		epoch:   time.Now(),
		cfg:     cfg,
		picker:  cfg.picker,
		tr:      tr,
		watcher: w,
		ready:   make(chan struct{}),
		closing: make(chan struct{}),
		goCalls: map[*Call]context.CancelCauseFunc{},
		changed: make(chan struct{}, 1),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.reporter, _ = w.(registry.FailureReporter)
	c.nodes.Store(&[]registry.Node{})
	c.states.Store(&nodeStates{})
	c.invoke = middleware.Chain(mws...)(c.send)
	if cfg.metrics {
		if c.gauges, err = c.observe(cfg.mp); err != nil {
			w.Stop()
			if cfg.transport == nil {
				tr.Close()
			}
			return nil, fmt.Errorf("lbrpc: metrics: %w", err)
		}
	}
	if h, ok := tr.(transport.Health); ok {
		c.health = h
		h.Notify(c.signal)
	}
	c.loop.Add(2)
	go c.follow()
	go c.watch()
	return c, nil
}

// watch applies the registry's node sets until the watcher stops.
func (c *Client) watch() {
	defer c.loop.Done()
	var fails int
	for {
		nodes, err := c.watcher.Next()
		if c.closed.Load() {
			return
		}
		if errors.Is(err, registry.ErrStopped) {
			// The registry ended on its own. The client keeps the set it
			// has; calls made before any set fail with ErrNoNodes and this
			// error rather than wait for one.
			c.watchErr.Store(&err)
			c.markReady()
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
	// The transport learns of added nodes before the picker can pick them,
	// and drains removed ones only after the picker has stopped picking
	// them: a pick never finds the transport a step behind or ahead.
	both := addrs
	if prev := c.nodes.Load(); prev != nil && len(*prev) > 0 {
		in := make(map[string]bool, len(addrs))
		for _, a := range addrs {
			in[a] = true
		}
		both = slices.Clone(addrs)
		for _, n := range *prev {
			if !in[n.Addr] {
				both = append(both, n.Addr)
			}
		}
	}
	c.tr.Update(both)
	c.nodes.Store(&nodes)
	c.syncStates(nodes)
	c.refresh(true)
	if len(both) > len(addrs) {
		c.tr.Update(addrs)
	}
	c.signal() // the follower re-arms its timer for the new set
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
	err := c.invoke(ctx, &middleware.Call{ServiceMethod: serviceMethod, Args: args, Reply: reply, Closing: c.closing})
	if err != nil && c.closed.Load() {
		return closedErr(err)
	}
	return err
}

// closedErr is the error of a call that failed after Close: ErrClosed,
// whatever the chain was doing (waiting for a token, a backoff, an answer),
// unless the server answered or the args were bad.
func closedErr(err error) error {
	if answered(err) || errors.Is(err, ErrBadArgs) {
		return err
	}
	return ErrClosed
}

// answered reports whether err is the server's answer: an rpc.ServerError,
// or an answer that did not fit the reply (ErrReplyMismatch). It is the
// breaker's rule, so that the two cannot drift apart.
func answered(err error) bool {
	return err != nil && !middleware.BreakerFailure(err)
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
// is fit to serve (each is unreachable, ejected, failing its health check
// or behind an open breaker), or fewer than WithPanicThreshold's share are,
// so it picks among all of them rather than failing every call or
// swamping the few left. Node breakers and slow start are not consulted
// then.
func (c *Client) Panicking() bool { return c.panicked.Load() }

// send is the innermost invoker: pick a node, carry the call to it, and
// tell the picker how it went.
func (c *Client) send(ctx context.Context, call *middleware.Call) error {
	err := c.attempt(ctx, call, call.Tried)
	// A node removed between pick and send never saw the call: pick again,
	// from the picker's newer set, avoiding the node in case the picker has
	// not caught up. This is not a retry, and it is bounded.
	avoid := call.Tried
	for i := 0; i < 3 && errors.Is(err, transport.ErrNodeRemoved) && ctx.Err() == nil; i++ {
		avoid = append(avoid[:len(avoid):len(avoid)], call.Addr)
		err = c.attempt(ctx, call, avoid)
	}
	return err
}

// maxDeclines bounds the picks an attempt may decline (slow start, a node
// breaker refusing) before it takes what it is given: one per node of the
// set, up to this many, so that the cost of declining stays bounded.
const maxDeclines = 16

// attempt sends call to one node, picked avoiding the nodes in avoid.
func (c *Client) attempt(ctx context.Context, call *middleware.Call, avoid []string) error {
	info := picker.Info{ServiceMethod: call.ServiceMethod, Tried: avoid}
	var (
		res    picker.Result
		st     *nodeState
		onDone func(error) // the node breaker's
		limit  int         // picks this attempt may decline; set at the first
	)
	for picks := 0; ; picks++ {
		var err error
		res, err = c.picker.Pick(ctx, info)
		if err != nil {
			if errors.Is(err, ErrNoNodes) {
				if werr := c.watchErr.Load(); werr != nil {
					return fmt.Errorf("%w (registry: %w)", err, *werr)
				}
			}
			return err
		}
		st = c.state(res.Node.Addr)
		if st == nil || c.panicked.Load() {
			break
		}
		if picks == 0 && (c.cfg.slowStart != nil || st.breaker != nil) { // else nothing declines
			limit = min(len(*c.nodes.Load())-1, maxDeclines)
		}
		// The picker gives back a node this attempt declined once it has
		// no other: take it then.
		last := picks >= limit || (picks > 0 && slices.Contains(info.Tried[len(avoid):], st.addr))
		if c.cfg.slowStart != nil && !last && !c.admit(st) {
			info.Tried = decline(res, info.Tried)
			continue
		}
		if st.breaker == nil {
			break
		}
		if onDone, err = st.breaker.Allow(); err == nil {
			break
		}
		if last {
			res.Finish(picker.DoneInfo{Err: errPickUnused})
			return &transport.Error{Addr: st.addr, Op: transport.OpDial, Err: fmt.Errorf("%w: %w", ErrNodeCircuitOpen, err)}
		}
		info.Tried = decline(res, info.Tried)
	}
	call.Addr = res.Node.Addr
	var start time.Duration
	if res.Done != nil {
		start = time.Since(c.epoch) // the monotonic clock alone: half the cost of time.Now
	}
	err := c.tr.Call(ctx, call.Addr, call.ServiceMethod, call.Args, call.Reply)
	if res.Done != nil {
		d := picker.DoneInfo{Err: err, Latency: time.Since(c.epoch) - start}
		switch {
		case err == nil:
		case errors.Is(err, ErrBadArgs) || unsentTimeout(err):
			d.Err = errPickUnused // nothing was sent: it says nothing of the node
		case errors.Is(err, ErrReplyMismatch):
			d.Err = nil // the caller's error, but the node answered, in d.Latency
		}
		res.Finish(d)
	}
	if onDone != nil {
		onDone(err)
	}
	if st != nil {
		c.record(st, err)
	}
	if err != nil && c.reporter != nil && !notCounted(err) {
		if _, ok := errors.AsType[*transport.Error](err); ok && ctx.Err() == nil {
			c.reporter.ReportFailure(call.Addr, err)
		}
	}
	return err
}

// errPickUnused is the outcome given to a picker for a pick the client
// declined (slow start, a node breaker refusing) or whose args could not be
// encoded: nothing was sent, so, like a call its caller cancelled, it tells
// nothing about the node.
var errPickUnused = fmt.Errorf("lbrpc: pick declined: %w", context.Canceled)

// decline gives back a pick the attempt will not use and returns the
// attempt's tried list with the node added, so that the next pick avoids
// it. The list is copied: the call's own Tried is not touched.
func decline(res picker.Result, tried []string) []string {
	res.Finish(picker.DoneInfo{Err: errPickUnused})
	return append(tried[:len(tried):len(tried)], res.Node.Addr)
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
		call.done()
		return call
	}
	ctx, cancel := context.WithCancelCause(ctx)
	c.goMu.Lock()
	if c.closed.Load() {
		c.goMu.Unlock()
		cancel(ErrClosed)
		call.Error = ErrClosed
		call.done()
		return call
	}
	c.goCalls[call] = cancel
	c.goWG.Add(1)
	c.goMu.Unlock()
	go func() {
		defer c.goWG.Done()
		err := c.Call(ctx, serviceMethod, args, reply)
		if err != nil && errors.Is(context.Cause(ctx), ErrClosed) {
			err = closedErr(err)
		}
		c.goMu.Lock()
		delete(c.goCalls, call)
		c.goMu.Unlock()
		cancel(nil)
		call.Error = err
		call.done()
	}()
	return call
}

// done delivers the call without blocking: like net/rpc, a full done
// channel is the caller's fault, and the call is dropped.
func (call *Call) done() {
	select {
	case call.Done <- call:
	default:
	}
}

// Close stops the registry watch and the health checks, fails pending calls
// with ErrClosed, closes every connection, and waits for the client's
// goroutines. Calls after Close return ErrClosed. Close is idempotent.
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
	c.cancel()
	var gerr error
	if c.gauges != nil {
		gerr = c.gauges.Unregister()
	}
	werr := c.watcher.Stop()
	c.loop.Wait()
	c.probes.Wait()
	terr := c.tr.Close()
	c.goWG.Wait()
	return errors.Join(werr, terr, gerr)
}
