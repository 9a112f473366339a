package transport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/rpc"
	"reflect"
	"sync"
	"sync/atomic"
	"time"
)

// ErrBadReply is returned for a reply that is not a non-nil pointer.
var ErrBadReply = errors.New("lbrpc: reply must be a non-nil pointer")

// ErrReplyMismatch is the cause of a call whose answer could not be decoded
// into the reply given (a reply of another type than the method's): the
// server ran the method and answered, and the caller's reply is untouched.
// It is the caller's error, not the node's, and is not retried. With the
// built-in codecs the connection goes on serving the other calls; with a
// codec of WithCodec, which may have read half the answer, net/rpc ends
// the connection as for any read error.
var ErrReplyMismatch = errors.New("lbrpc: the answer does not fit the reply")

// Transport carries calls to nodes by address.
type Transport interface {
	// Call sends one call to the node at addr and waits for its answer or
	// for ctx to end. reply is written only on success.
	Call(ctx context.Context, addr, serviceMethod string, args, reply any) error
	// Update tells the transport the current node set: new nodes may be
	// dialled ahead, removed nodes are drained and closed.
	Update(addrs []string)
	// Close fails pending calls with ErrClosed and closes every connection.
	Close() error
}

// Health is implemented by transports that know which nodes they cannot
// reach, so that the client picks among the others. The client finds it by
// type assertion.
type Health interface {
	// Reachable reports whether addr may take calls now: false while the
	// transport is waiting to redial it after failures.
	Reachable(addr string) bool
	// Notify registers f, called whenever a node's reachability changes.
	// f must return at once (the client only flags the change).
	Notify(f func())
}

// Pool is the default Transport: one net/rpc connection per node.
// It is safe for concurrent use.
type Pool struct {
	cfg config

	ctx     context.Context // cancelled by Close; bounds dials
	cancel  context.CancelFunc
	closing chan struct{}
	closed  atomic.Bool
	wg      sync.WaitGroup

	mu       sync.Mutex // guards writes to nodes, draining, retiring, gone
	nodes    atomic.Pointer[map[string]*node]
	draining map[*node]*time.Timer
	retiring map[*conn]*time.Timer // connections retired after an encoding error, open for their answers
	gone     map[string]time.Time  // the addresses Updates removed, and when
	notify   atomic.Pointer[func()]
}

var (
	_ Transport = (*Pool)(nil)
	_ Health    = (*Pool)(nil)
)

// New returns a Pool configured by opts.
func New(opts ...Option) (*Pool, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	p := &Pool{
		cfg:      cfg,
		closing:  make(chan struct{}),
		draining: map[*node]*time.Timer{},
		retiring: map[*conn]*time.Timer{},
		gone:     map[string]time.Time{},
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.nodes.Store(&map[string]*node{})
	return p, nil
}

// chans recycles the done channels of calls that completed; a channel of an
// abandoned call may still receive, so it is never returned.
var chans = sync.Pool{New: func() any { return make(chan *rpc.Call, 1) }}

// Call implements Transport. An address the pool has not seen is dialled on
// first use; one that the last Update removed fails with an *Error wrapping
// ErrNodeRemoved (a call picked before that Update: safe to retry elsewhere).
func (p *Pool) Call(ctx context.Context, addr, serviceMethod string, args, reply any) error {
	rv := reflect.ValueOf(reply)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return ErrBadReply
	}
	if p.closed.Load() {
		return ErrClosed
	}
	n := p.node(addr)
	if n == nil || !n.acquire() {
		return &Error{Addr: addr, Op: OpDial, Err: ErrNodeRemoved}
	}
	defer n.release()

	for tries := 0; ; tries++ {
		c, err := n.conn(ctx)
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return &Error{Addr: addr, Op: OpDial, Err: err}
		}
		call, err := p.send(ctx, n, c, serviceMethod, args, rv)
		if call == nil {
			return err
		}
		switch {
		case call.Error == nil:
			n.answered(c)
			return nil
		case errors.As(call.Error, new(rpc.ServerError)):
			n.answered(c) // the node is alive; the method failed
			return call.Error
		case errors.Is(call.Error, ErrBadArgs):
			return call.Error // the codec retired the connection, not failed it
		case errors.Is(call.Error, ErrReplyMismatch):
			n.answered(c)
			return call.Error
		case c.refused(call.Error):
			// Nothing was written: the connection was shut while idle (the
			// server closed it) or retired. Once on a new one; then the
			// node is not answering.
			n.lost(c, call.Error)
			if tries == 0 {
				continue
			}
			return &Error{Addr: addr, Op: OpDial, Err: call.Error}
		}
		// Anything else leaves the connection in doubt (EOF, reset, or a
		// codec error reading an answer).
		n.broken(c)
		if p.closed.Load() {
			return ErrClosed
		}
		return &Error{Addr: addr, Op: OpCall, Err: call.Error}
	}
}

// send makes the call on c and waits for its end. It returns the ended
// call, or nil and the error that ended the wait (ctx, Close).
func (p *Pool) send(ctx context.Context, n *node, c *conn, serviceMethod string, args any, rv reflect.Value) (*rpc.Call, error) {
	// A fresh value per attempt: net/rpc decodes a late answer into the
	// value it was given, and that must never be the caller's reply.
	fresh := newReply(rv.Type().Elem())
	done := chans.Get().(chan *rpc.Call)
	call := c.Go(serviceMethod, args, fresh.Interface(), done) // never waits for the peer (coalesce.go)
	select {
	case <-call.Done:
		chans.Put(done)
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			n.timedOut(c)
		}
		return nil, &Error{Addr: n.addr, Op: OpCall, Err: ctx.Err()}
	case <-p.closing:
		return nil, ErrClosed
	}
	if call.Error == nil {
		if err := c.codec.mismatch(call.Reply); err != nil {
			call.Error = err
			return call, nil
		}
		rv.Elem().Set(fresh.Elem())
	}
	return call, nil
}

// newReply returns a pointer to a new value of type t, at an address of its
// own: the codec wrapper keeps the answers that did not fit by reply
// (watchCodec.misfits), and reflect.New gives every zero-size value the
// same address, so a zero-size t is placed in a value that is not.
func newReply(t reflect.Type) reflect.Value {
	if t.Size() != 0 {
		return reflect.New(t)
	}
	box := reflect.StructOf([]reflect.StructField{{Name: "V", Type: t}, {Name: "Pad", Type: reflect.TypeFor[byte]()}})
	return reflect.New(box).Elem().Field(0).Addr()
}

// node returns the state of addr, adding it if the pool has not seen it,
// or nil if the last Update removed it: a call picked from a node set older
// than that Update must not dial a connection nothing would close until the
// next one.
func (p *Pool) node(addr string) *node {
	if n, ok := (*p.nodes.Load())[addr]; ok {
		return n
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	cur := *p.nodes.Load()
	if n, ok := cur[addr]; ok {
		return n
	}
	if _, ok := p.gone[addr]; ok {
		return nil
	}
	n := &node{p: p, addr: addr}
	next := make(map[string]*node, len(cur)+1)
	for k, v := range cur {
		next[k] = v
	}
	next[addr] = n
	p.nodes.Store(&next)
	return n
}

// Update implements Transport.
func (p *Pool) Update(addrs []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed.Load() {
		return
	}
	cur := *p.nodes.Load()
	next := make(map[string]*node, len(addrs))
	for _, a := range addrs {
		n, ok := cur[a]
		if !ok {
			n = &node{p: p, addr: a}
		}
		next[a] = n
	}
	// A call picked before an Update may reach the pool after it, or after
	// later ones: its node stays refused for a while after it left, and
	// until it returns.
	now := time.Now()
	for a, at := range p.gone {
		if _, back := next[a]; back || now.Sub(at) > p.cfg.drainTimeout {
			delete(p.gone, a)
		}
	}
	for a, n := range cur {
		if _, keep := next[a]; !keep {
			p.drain(n)
			p.gone[a] = now
		}
	}
	p.nodes.Store(&next)
	if !p.cfg.lazy {
		for _, n := range next {
			n.warm()
		}
	}
}

// drain closes n once its calls in flight end, or after the drain timeout.
// p.mu is held.
func (p *Pool) drain(n *node) {
	n.removed.Store(true)
	if n.inflight.Load() == 0 {
		n.shut()
		return
	}
	p.draining[n] = time.AfterFunc(p.cfg.drainTimeout, func() { p.drained(n) })
}

func (p *Pool) drained(n *node) {
	p.mu.Lock()
	if t, ok := p.draining[n]; ok {
		t.Stop()
		delete(p.draining, n)
	}
	p.mu.Unlock()
	n.shut()
}

// Reachable implements Health. Unknown nodes are reachable: a node is
// presumed up until a dial to it fails.
func (p *Pool) Reachable(addr string) bool {
	n, ok := (*p.nodes.Load())[addr]
	return !ok || !n.down.Load()
}

// Notify implements Health.
func (p *Pool) Notify(f func()) { p.notify.Store(&f) }

func (p *Pool) changed() {
	if f := p.notify.Load(); f != nil {
		(*f)()
	}
}

// Close implements Transport. It waits for the pool's dial goroutines.
func (p *Pool) Close() error {
	if p.closed.Swap(true) {
		return nil
	}
	p.cancel()
	close(p.closing)
	p.mu.Lock()
	for n, t := range p.draining {
		t.Stop()
		n.shut()
	}
	p.draining = nil
	for c, t := range p.retiring {
		t.Stop()
		c.close()
	}
	p.retiring = nil
	for _, n := range *p.nodes.Load() {
		n.shut()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return nil
}

// NodeState is a snapshot of one node's connection.
type NodeState struct {
	Addr      string
	Connected bool
	Reachable bool // see Health
	InFlight  int64
	Dials     int64 // successful dials
	Recycles  int64 // connections closed after MaxTimeouts timeouts in a row
	Failures  int   // dial failures and early breaks since the last answer
	LastErr   error // last dial or connection error, nil if none
}

// State reports the nodes of the current set, in no particular order.
func (p *Pool) State() []NodeState {
	nodes := *p.nodes.Load()
	out := make([]NodeState, 0, len(nodes))
	for _, n := range nodes {
		n.mu.Lock()
		s := NodeState{
			Addr:      n.addr,
			Connected: n.client.Load() != nil,
			Reachable: !n.down.Load(),
			InFlight:  n.inflight.Load(),
			Dials:     n.dials,
			Recycles:  n.recycles,
			Failures:  n.failures,
			LastErr:   n.lastErr,
		}
		n.mu.Unlock()
		out = append(out, s)
	}
	return out
}

// node is the connection state of one address.
type node struct {
	p    *Pool
	addr string

	client   atomic.Pointer[conn] // nil while not connected
	proven   atomic.Bool          // a call was answered on client
	timeouts atomic.Int32         // calls in a row that timed out on client
	inflight atomic.Int64
	removed  atomic.Bool
	down     atomic.Bool // waiting to redial after failures
	shutOnce sync.Once

	mu       sync.Mutex
	redial   *time.Timer   // the background redial after a failure
	dialing  chan struct{} // closed when the dial in progress ends
	failures int           // dial failures or early breaks in a row
	retryAt  time.Time     // no dial before this
	lastErr  error
	dials    int64
	recycles int64
}

func (n *node) acquire() bool {
	n.inflight.Add(1)
	if n.removed.Load() {
		n.release()
		return false
	}
	return true
}

func (n *node) release() {
	if n.inflight.Add(-1) == 0 && n.removed.Load() {
		n.p.drained(n)
	}
}

// conn returns the node's connection, dialling if there is none.
func (n *node) conn(ctx context.Context) (*conn, error) {
	if c := n.client.Load(); c != nil {
		return c, nil
	}
	waited := false
	for {
		n.mu.Lock()
		if c := n.client.Load(); c != nil {
			n.mu.Unlock()
			return c, nil
		}
		if n.p.closed.Load() {
			n.mu.Unlock()
			return nil, ErrClosed
		}
		if n.removed.Load() {
			n.mu.Unlock()
			return nil, &Error{Addr: n.addr, Op: OpDial, Err: ErrNodeRemoved}
		}
		ch := n.dialing
		if ch == nil {
			if waited {
				err := n.lastErr
				n.mu.Unlock()
				return nil, &Error{Addr: n.addr, Op: OpDial, Err: err}
			}
			if time.Now().Before(n.retryAt) {
				err := n.lastErr
				n.mu.Unlock()
				return nil, &Error{Addr: n.addr, Op: OpDial, Err: fmt.Errorf("%w: %w", ErrNodeDown, err)}
			}
			ch = n.startDial()
		}
		n.mu.Unlock()
		select {
		case <-ch:
			waited = true
		case <-ctx.Done():
			return nil, &Error{Addr: n.addr, Op: OpDial, Err: ctx.Err()}
		case <-n.p.closing:
			return nil, ErrClosed
		}
	}
}

// warm starts a dial if the node has no connection and may dial now.
func (n *node) warm() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.client.Load() == nil && n.dialing == nil && !time.Now().Before(n.retryAt) &&
		!n.removed.Load() && !n.p.closed.Load() {
		n.startDial()
	}
}

// startDial dials in a goroutine owned by the pool, so that one caller's
// cancelled context does not fail the dial others wait for. n.mu is held.
func (n *node) startDial() chan struct{} {
	ch := make(chan struct{})
	n.dialing = ch
	n.p.wg.Add(1)
	go n.dial(ch)
	return ch
}

func (n *node) dial(ch chan struct{}) {
	defer n.p.wg.Done()
	ctx, cancel := context.WithTimeout(n.p.ctx, n.p.cfg.dialTimeout)
	c, err := n.p.dialClient(ctx, n)
	cancel()
	if err != nil && errors.Is(err, context.DeadlineExceeded) && n.p.ctx.Err() == nil {
		// The dial timeout is the node's failure, not the deadline of a
		// caller, which the callers tell by context.DeadlineExceeded (not
		// retried, not counted against the node).
		err = &dialTimeoutError{err}
	}

	n.mu.Lock()
	changed := false
	switch {
	case err != nil:
		n.lastErr = err
		changed = n.failed()
	case n.removed.Load() || n.p.closed.Load():
		c.close()
	default:
		n.dials++
		n.proven.Store(false)
		n.timeouts.Store(0)
		n.client.Store(c)
		changed = n.down.Swap(false)
	}
	n.dialing = nil
	close(ch)
	n.mu.Unlock()
	if changed {
		n.p.changed()
	}
	if err == nil && c.codec.dead.Load() {
		// The server closed it at once, maybe before it was stored, where
		// its reader could not find it.
		n.lost(c, io.ErrUnexpectedEOF)
	}
}

// dialTimeoutError is a dial that ran out of WithDialTimeout. It hides its
// cause from errors.Is, which would match context.DeadlineExceeded (net's
// i/o timeout does).
type dialTimeoutError struct{ err error }

func (e *dialTimeoutError) Error() string { return e.err.Error() }
func (e *dialTimeoutError) Timeout() bool { return true }

// As lets errors.As reach the cause (a *net.OpError, say), which Is, for
// want of Unwrap, does not.
func (e *dialTimeoutError) As(target any) bool { return errors.As(e.err, target) }

// failed counts a failure, marks the node down, and schedules a redial in
// the background after the backoff, so that a node the picker avoids still
// comes back. It reports whether the node went down. n.mu is held.
func (n *node) failed() bool {
	n.failures++
	d := n.p.backoff(n.failures)
	n.retryAt = time.Now().Add(d)
	if n.removed.Load() || n.p.closed.Load() {
		return false
	}
	if n.redial != nil {
		n.redial.Stop()
	}
	n.redial = time.AfterFunc(d, n.warm)
	return !n.down.Swap(true)
}

// answered records that the node answered a call on its connection c.
func (n *node) answered(c *conn) {
	if n.client.Load() != c {
		return // a late answer on a connection since replaced proves nothing of the new one
	}
	if n.timeouts.Load() != 0 {
		n.timeouts.Store(0)
	}
	if !n.proven.Load() {
		n.proven.Store(true)
		n.mu.Lock()
		n.failures = 0
		n.mu.Unlock()
	}
}

// broken drops c after a connection failure. A connection that broke before
// answering anything counts as a failure, so a node that accepts and then
// drops connections is re-dialled with backoff, not in a loop.
func (n *node) broken(c *conn) {
	if n.take(c) {
		n.notify(n.replaceLocked(rpc.ErrShutdown))
		c.close()
	}
}

// take takes c off the node, if it is the node's connection, and returns
// with n.mu held then, so that the state the caller updates next (failures,
// the dial it starts) is c's: a dial started by a call or by warm cannot
// store a successor in between, which would then be counted as failed or
// overwritten. n.mu is released when take reports false, and by notify;
// the caller closes c after, so that no dial waits on a slow close.
func (n *node) take(c *conn) bool {
	n.mu.Lock()
	if !n.client.CompareAndSwap(c, nil) {
		n.mu.Unlock()
		return false
	}
	return true
}

// notify releases n.mu, taken by take, and tells the pool if the node's
// reachability changed.
func (n *node) notify(changed bool) {
	n.mu.Unlock()
	if changed {
		n.p.changed()
	}
}

// lost drops c when its reader failed (the server closed it, or it broke),
// even while no call was pending: net/rpc has already failed the calls
// pending on it, and refuses new ones with rpc.ErrShutdown, unwritten (see
// conn.refused). Its reader has ended it, so c is closed under net/rpc,
// through the codec wrapper.
func (n *node) lost(c *conn, err error) {
	if n.take(c) {
		n.notify(n.replaceLocked(err))
		c.codec.Close() // the wrapper: it closes the socket even if the codec does not
	}
}

// retire drops c after a request failed to encode: the node is not at
// fault, so a new connection is dialled at once, while c stays open for
// the answers to the calls it has sent, until the last one (idle: none) or
// the drain timeout.
func (n *node) retire(c *conn, idle bool) {
	if !n.take(c) {
		return
	}
	p := n.p
	if !n.removed.Load() && !p.closed.Load() && n.dialing == nil {
		n.startDial()
	}
	n.notify(false)
	p.mu.Lock()
	if idle || p.retiring == nil {
		p.mu.Unlock()
		c.close()
	} else {
		p.retiring[c] = time.AfterFunc(p.cfg.drainTimeout, func() { p.retired(c) })
		p.mu.Unlock()
	}
}

// retired closes a connection retire kept open, at its last answer or at
// the drain timeout.
func (p *Pool) retired(c *conn) {
	p.mu.Lock()
	if t, ok := p.retiring[c]; ok {
		t.Stop()
		delete(p.retiring, c)
	}
	p.mu.Unlock()
	c.close()
}

// replaceLocked follows the loss of the node's connection: a dial at once
// if the connection had answered, else a failure, with backoff. It reports
// whether the node went down. n.mu is held.
func (n *node) replaceLocked(err error) bool {
	n.lastErr = err
	if !n.proven.Load() {
		return n.failed()
	}
	// It worked until now: reconnect at once, in the background.
	if !n.removed.Load() && !n.p.closed.Load() && n.dialing == nil {
		n.startDial()
	}
	return false
}

// timedOut counts a timed-out call on c and recycles c after too many.
func (n *node) timedOut(c *conn) {
	if int(n.timeouts.Add(1)) < n.p.cfg.maxTimeouts {
		return
	}
	if !n.take(c) {
		return
	}
	n.recycles++
	n.lastErr = context.DeadlineExceeded
	n.notify(n.failed())
	c.close() // fails, and so frees, every call pending on c
}

// shut closes the node's connection for good.
func (n *node) shut() {
	n.shutOnce.Do(func() {
		n.mu.Lock() // orders this after any dial being started
		n.removed.Store(true)
		if n.redial != nil {
			n.redial.Stop()
		}
		n.mu.Unlock()
		if c := n.client.Swap(nil); c != nil {
			c.close()
		}
	})
}

// backoff returns the wait before the next dial after failures in a row:
// exponential, capped, with equal jitter so that clients spread out.
func (p *Pool) backoff(failures int) time.Duration {
	d := p.cfg.backoffBase
	for i := 1; i < failures && d < p.cfg.backoffMax; i++ {
		d *= 2
	}
	d = min(d, p.cfg.backoffMax)
	return d/2 + rand.N(d/2+1)
}

// dialClient opens a connection to n and wraps it in an rpc.Client, with
// write coalescing (coalesce.go) unless it is off.
func (p *Pool) dialClient(ctx context.Context, n *node) (*conn, error) {
	nc, err := p.cfg.dialer(ctx, "tcp", n.addr)
	if err != nil {
		return nil, err
	}
	if p.cfg.useHTTP {
		if err := httpConnect(ctx, nc, p.cfg.httpPath); err != nil {
			nc.Close()
			return nil, err
		}
	}
	codec := p.cfg.codec
	if codec == nil {
		codec = newGobCodec // net/rpc's, which rpc.NewClient would use
	}
	// Wrapped only now, so that the HTTP handshake is written as it was.
	co := newCoalescingConn(nc, p.cfg.coalesce)
	w := &watchCodec{node: n, co: co, ClientCodec: codec(co), wholeAnswers: p.cfg.wholeAnswers}
	c := &conn{Client: rpc.NewClientWithCodec(w), codec: w}
	w.owner.Store(c)
	return c, nil
}

// connected is the status line of net/rpc's HTTP handler.
const connected = "200 Connected to Go RPC"

// httpConnect performs the CONNECT handshake of rpc.DialHTTPPath, bounded by ctx.
func httpConnect(ctx context.Context, conn net.Conn, path string) error {
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	// Ending ctx sets a deadline in the past, which fails the handshake's
	// read or write at once.
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		conn.SetDeadline(time.Unix(1, 0))
		close(fired)
	})
	err := handshake(conn, path)
	if !stop() {
		// ctx ended, maybe just as the handshake did: wait for the past
		// deadline to be set, so that the reset below comes after it, and
		// fail anyway, as the dial has timed out.
		<-fired
		if err == nil {
			err = ctx.Err()
		}
	}
	conn.SetDeadline(time.Time{})
	return err
}

// handshake writes the CONNECT request and reads net/rpc's answer.
func handshake(conn net.Conn, path string) error {
	if _, err := io.WriteString(conn, "CONNECT "+path+" HTTP/1.0\n\n"); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: http.MethodConnect})
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.Status != connected {
		return fmt.Errorf("lbrpc: unexpected HTTP response %q", resp.Status)
	}
	return nil
}
