package lbrpc

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/lbrpc/lbrpc/middleware"
	"github.com/lbrpc/lbrpc/registry"
	"github.com/lbrpc/lbrpc/transport"
)

// nodeState is what the client knows of one node of its set. The fields
// written on the call path are atomics; the others belong to whoever holds
// c.applyMu (the registry loop and the follower).
type nodeState struct {
	addr string

	// Written on the call path.
	streak   atomic.Int32          // transport failures in a row (outlier detection)
	tripped  atomic.Bool           // streak reached the threshold: the follower decides
	lastErr  atomic.Pointer[error] // last failure to get an answer, calls and probes
	slowFrom atomic.Int64          // c.now() in ns when slow start began; 0: not slow starting
	breaker  *gobreaker.TwoStepCircuitBreaker[struct{}]
	openedAt atomic.Int64 // time.Now() in ns when the breaker last opened

	// Written by the node's health check goroutine.
	healthy atomic.Bool // the health check's verdict; true without one
	passes  int         // probes passed in a row (probe goroutine only)
	fails   int         // probes failed in a row (probe goroutine only)
	stop    context.CancelFunc

	// An outlier ejection, as the health check goroutine sees it: ejection
	// is written under c.applyMu, cleared by the probe goroutine.
	ejection atomic.Uint64 // number of the ejection in force (see seq); 0: none
	cleared  atomic.Uint64 // number of an ejection a passed probe ends; 0: none

	// Guarded by c.applyMu.
	unreached bool      // the transport could not reach it at the last refresh
	ready     bool      // in the ready set
	wasReady  bool      // in the ready set before this refresh
	ejected   bool      // outlier-ejected, until
	until     time.Time // end of the ejection in force
	ejections int       // the multiplier of the next ejection time
	backAt    time.Time // when the last ejection ended
	seq       uint64    // ejections ever, numbering them for ejection and cleared
}

// nodeStates is the immutable snapshot read on the call path.
type nodeStates map[string]*nodeState

// state returns the state of addr, nil if it is not in the set.
func (c *Client) state(addr string) *nodeState {
	return (*c.states.Load())[addr]
}

// signal asks the follower to recompute the ready set. It never blocks.
func (c *Client) signal() {
	select {
	case c.changed <- struct{}{}:
	default: // a refresh is already due
	}
}

// newNodeState returns the state of a node joining the set. c.applyMu is
// held.
func (c *Client) newNodeState(addr string) *nodeState {
	st := &nodeState{addr: addr}
	st.healthy.Store(true)
	if c.cfg.nodeBreaker != nil {
		bs := *c.cfg.nodeBreaker
		bs.Name = addr
		userChange := bs.OnStateChange
		bs.OnStateChange = func(name string, from, to gobreaker.State) {
			if to == gobreaker.StateOpen {
				st.openedAt.Store(time.Now().UnixNano())
			}
			c.signal()
			if userChange != nil {
				userChange(name, from, to)
			}
		}
		if bs.IsSuccessful == nil {
			bs.IsSuccessful = func(err error) bool { return !middleware.BreakerFailure(err) }
		}
		if bs.IsExcluded == nil {
			bs.IsExcluded = notCounted
		}
		st.breaker = gobreaker.NewTwoStepCircuitBreaker[struct{}](bs)
	}
	return st
}

// notCounted reports errors that say nothing new about the node: the
// caller cancelled, the client closed, the node left the set, the
// transport refused to send because it is waiting to redial after a failed
// dial (that dial's failure was counted, and the transport keeps the node
// out of the ready set meanwhile), or the call's deadline passed before
// anything was sent (a caller's spent deadline, or one that ran out
// waiting for a dial whose own failure, if it fails, is counted).
func notCounted(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, ErrClosed) ||
		errors.Is(err, transport.ErrNodeRemoved) || errors.Is(err, transport.ErrNodeDown) ||
		errors.Is(err, ErrBadArgs) || unsentTimeout(err)
}

// unsentTimeout reports a deadline that passed before the request was sent.
func unsentTimeout(err error) bool {
	te, ok := errors.AsType[*transport.Error](err)
	return ok && te.Op == transport.OpDial && errors.Is(te.Err, context.DeadlineExceeded)
}

// record counts the outcome of an attempt sent to st for outlier detection.
// It is on the call path: a success costs one atomic load.
func (c *Client) record(st *nodeState, err error) {
	if err == nil {
		if st.streak.Load() != 0 {
			st.streak.Store(0)
		}
		return
	}
	if answered(err) {
		if st.streak.Load() != 0 {
			st.streak.Store(0)
		}
		return
	}
	if notCounted(err) {
		return
	}
	last := err // a copy, so that err does not escape on the path of successes
	st.lastErr.Store(&last)
	if od := c.cfg.outlier; od != nil && st.streak.Add(1) == int32(od.Consecutive) {
		st.tripped.Store(true)
		c.signal()
	}
}

// admit reports whether a pick of st, a node maybe in slow start, is kept:
// with the node's current share as probability.
func (c *Client) admit(st *nodeState) bool {
	from := st.slowFrom.Load()
	if from == 0 {
		return true
	}
	elapsed := c.cfg.now().Sub(time.Unix(0, from))
	if elapsed >= c.cfg.slowStart.Window {
		st.slowFrom.CompareAndSwap(from, 0)
		return true
	}
	return rand.Float64() < c.cfg.slowStart.share(elapsed)
}

// share returns st's part of its full share of traffic now.
func (c *Client) share(st *nodeState, now time.Time) float64 {
	from := st.slowFrom.Load()
	if from == 0 || c.cfg.slowStart == nil {
		return 1
	}
	return c.cfg.slowStart.share(now.Sub(time.Unix(0, from)))
}

// syncStates makes the snapshot of node states match nodes: states of the
// nodes that stay are kept, new nodes get fresh ones (and health check
// goroutines), removed nodes' goroutines are stopped. c.applyMu is held.
func (c *Client) syncStates(nodes []registry.Node) {
	cur := *c.states.Load()
	next := make(nodeStates, len(nodes))
	for _, n := range nodes {
		st, ok := cur[n.Addr]
		if !ok {
			st = c.newNodeState(n.Addr)
			c.startProbes(st)
		}
		next[n.Addr] = st
	}
	for addr, st := range cur {
		if _, keep := next[addr]; !keep && st.stop != nil {
			st.stop()
		}
	}
	c.states.Store(&next)
}

// follow recomputes the ready set when something signals a change (a
// node's reachability, an outlier's streak, a breaker, a health check's
// verdict or a passed probe of an ejected node) and when a timed state ends
// (an ejection, an open breaker's timeout).
func (c *Client) follow() {
	defer c.loop.Done()
	t := time.NewTimer(time.Hour)
	t.Stop()
	for {
		select {
		case <-c.changed:
		case <-t.C:
		case <-c.closing:
			t.Stop()
			return
		}
		c.applyMu.Lock()
		wake := c.refresh(false)
		c.applyMu.Unlock()
		t.Stop()
		if wake > 0 {
			t.Reset(wake)
		}
	}
}

// refresh recomputes the ready set, gives it to the picker if it changed
// (or if force), and returns when it should run again for a timed state to
// end (0: no timed state). c.applyMu is held.
//
// A node is ready when the transport can reach it, it is not ejected, its
// breaker is not open and its health check passes. If no node is ready, or
// fewer than WithPanicThreshold's share, the picker gets them all (panic
// mode): trying is better than failing everything.
func (c *Client) refresh(force bool) time.Duration {
	nodes := *c.nodes.Load()
	states := *c.states.Load()
	now := c.cfg.now()
	var wake time.Duration
	soonest := func(d time.Duration) {
		d = max(d, time.Millisecond)
		if wake == 0 || d < wake {
			wake = d
		}
	}

	if od := c.cfg.outlier; od != nil {
		ejected := 0
		for _, n := range nodes {
			st := states[n.Addr]
			// Taken before the trips below: a request to end an ejection
			// never outlives the refresh that sees it.
			cleared := st.cleared.Swap(0)
			if !st.ejected {
				continue
			}
			if !now.Before(st.until) {
				st.reinstate(now)
				continue
			}
			if cleared != 0 && cleared == st.ejection.Load() {
				// A probe begun during this ejection passed (see
				// Client.clearEjection): the node is back now, with a new
				// streak; its ejection count stays, and decays as after any
				// ejection.
				st.reinstate(now)
				st.streak.Store(0)
				st.tripped.Store(false)
				continue
			}
			ejected++
			soonest(st.until.Sub(now))
		}
		for _, n := range nodes {
			st := states[n.Addr]
			if !st.tripped.Swap(false) {
				continue
			}
			// As Envoy does: the streak starts over whether or not the
			// node can be ejected now.
			st.streak.Store(0)
			if st.ejected || (ejected+1)*100 > od.MaxEjectedPercent*len(nodes) {
				continue
			}
			st.eject(now, od)
			ejected++
			soonest(st.until.Sub(now))
		}
	}

	ready := make([]registry.Node, 0, len(nodes))
	established := false // a node was serving before, at its full share
	realNow := time.Now()
	for _, n := range nodes {
		st := states[n.Addr]
		reachable := c.health == nil || c.health.Reachable(n.Addr)
		if !reachable && !st.unreached && c.reporter != nil {
			// The transport lost the node, maybe with no call failing (a
			// connection the node closed while idle, then a failed redial):
			// the registry hears of it as of a failed call.
			c.reporter.ReportFailure(n.Addr, &transport.Error{Addr: n.Addr, Op: transport.OpDial, Err: transport.ErrNodeDown})
		}
		st.unreached = !reachable
		ok := !st.ejected && st.healthy.Load() && reachable
		if ok && st.breaker != nil && st.breaker.State() == gobreaker.StateOpen {
			// The breaker turns half-open when asked after its timeout:
			// come back then to ask.
			ok = false
			soonest(time.Unix(0, st.openedAt.Load()).Add(c.breakerTimeout()).Sub(realNow) + time.Millisecond)
		}
		st.wasReady, st.ready = st.ready, ok
		if ok {
			ready = append(ready, n)
			if st.wasReady && c.share(st, now) == 1 {
				established = true
			}
		}
	}
	if c.cfg.slowStart != nil && established {
		for _, n := range ready {
			if st := states[n.Addr]; !st.wasReady {
				st.slowFrom.Store(max(now.UnixNano(), 1))
			}
		}
	}

	panicked := len(nodes) > 0 && (len(ready) == 0 || len(ready)*100 < c.cfg.panicAt*len(nodes))
	if panicked {
		ready = nodes
	}
	if force || panicked != c.panicked.Load() || !sameAddrs(ready, c.lastReady) {
		c.lastReady = ready
		c.picker.Update(ready)
	}
	c.panicked.Store(panicked)
	return wake
}

// eject takes st out of the ready set: for BaseEjection times the number
// of its ejections (see multiplier), capped at MaxEjection.
func (st *nodeState) eject(now time.Time, od *OutlierDetection) {
	st.ejections = st.multiplier(now, od) + 1
	st.ejected = true
	st.until = now.Add(ejectionTime(od, st.ejections))
	st.seq++
	st.ejection.Store(st.seq)
}

// reinstate ends st's ejection at now, when its time is up or a health
// check ended it early. The ejection count is kept: it decays from now (see
// multiplier), so a node that flaps is ejected for longer each time.
func (st *nodeState) reinstate(now time.Time) {
	st.ejected, st.backAt = false, now
	st.ejection.Store(0)
}

// multiplier returns the number of st's ejections, less one for each
// BaseEjection it has served since the last one ended.
func (st *nodeState) multiplier(now time.Time, od *OutlierDetection) int {
	if st.ejected || st.ejections == 0 || st.backAt.IsZero() {
		return st.ejections
	}
	return max(0, st.ejections-int(now.Sub(st.backAt)/od.BaseEjection))
}

// ejectionTime is the length of the nth ejection.
func ejectionTime(od *OutlierDetection, n int) time.Duration {
	if n <= 0 {
		return 0
	}
	if od.BaseEjection > od.MaxEjection/time.Duration(n) {
		return od.MaxEjection
	}
	return min(od.BaseEjection*time.Duration(n), od.MaxEjection)
}

// breakerTimeout is how long a node breaker stays open.
func (c *Client) breakerTimeout() time.Duration {
	if d := c.cfg.nodeBreaker.Timeout; d > 0 {
		return d
	}
	return 60 * time.Second // gobreaker's default
}

// sameAddrs reports whether two node lists have the same addresses in the
// same order.
func sameAddrs(a, b []registry.Node) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Addr != b[i].Addr {
			return false
		}
	}
	return true
}
