package lbrpc

import (
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/lbrpc/lbrpc/picker"
	"github.com/lbrpc/lbrpc/transport"
)

// NodeState is one node as the client sees it: a snapshot from
// Client.State.
type NodeState struct {
	// Addr and Weight are the registry's.
	Addr   string
	Weight int
	// Ready reports whether the node is in the ready set, the nodes the
	// picker chooses from. In panic mode (Client.Panicking) the picker is
	// given every node, but Ready stays false for the unfit ones.
	Ready bool
	// Reachable is the transport's view (transport.Health): false while it
	// waits to redial the node after failures. True when the transport does
	// not tell.
	Reachable bool
	// Ejected reports an outlier ejection in force (WithOutlierDetection),
	// until EjectedUntil, or until a health check passes if that comes
	// first (see OutlierDetection.KeepEjected).
	Ejected      bool
	EjectedUntil time.Time
	// Ejections is the number of times the node was ejected, less one for
	// each OutlierDetection.BaseEjection it has served since the last
	// ejection ended: its next ejection lasts BaseEjection times this
	// number plus one.
	Ejections int
	// Failures is the node's run of calls without an answer: outlier
	// detection ejects it at OutlierDetection.Consecutive.
	Failures int
	// Breaker is the state of the node's breaker (WithNodeBreaker);
	// gobreaker.StateClosed when node breakers are off.
	Breaker gobreaker.State
	// Healthy is the verdict of the node's health check (WithHealthCheck);
	// true when health checks are off or none has failed enough yet.
	Healthy bool
	// Share is the part of its full share of traffic the node gets: below 1
	// while it slow starts (WithSlowStart) outside panic mode, 1 otherwise.
	Share float64
	// InFlight is the number of calls in flight to the node: the picker's
	// count when it reports loads (picker.LoadReporter) and has the node,
	// else the transport's when it is a *transport.Pool (which counts
	// health checks too), else 0. A node outside the ready set is not the
	// picker's: its figure is the transport's.
	InFlight int64
	// Latency is the picker's EWMA of the node's latency when it reports
	// loads (picker.LoadReporter), else 0.
	Latency time.Duration
	// LastErr is the node's last failure to answer, a call's or a health
	// check's; nil if none yet.
	LastErr error
}

// poolState is the state a *transport.Pool reports.
type poolState interface {
	State() []transport.NodeState
}

// State returns the state of each node of the set, in the registry's order.
// It takes a lock the ready-set updates take too: call it to watch or to
// test, not on every call.
func (c *Client) State() []NodeState {
	var inFlight map[string]int64
	if ps, ok := c.tr.(poolState); ok {
		pool := ps.State()
		inFlight = make(map[string]int64, len(pool))
		for _, s := range pool {
			inFlight[s.Addr] = s.InFlight
		}
	}
	loads := c.loads()

	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	nodes := *c.nodes.Load()
	states := *c.states.Load()
	now := c.cfg.now()
	panicking := c.panicked.Load() // slow start is set aside then
	out := make([]NodeState, len(nodes))
	for i, n := range nodes {
		st := states[n.Addr]
		s := NodeState{
			Addr:      n.Addr,
			Weight:    n.Weight,
			Ready:     st.ready,
			Reachable: c.health == nil || c.health.Reachable(n.Addr),
			Ejected:   st.ejected,
			Failures:  int(st.streak.Load()),
			Breaker:   gobreaker.StateClosed,
			Healthy:   st.healthy.Load(),
			Share:     c.share(st, now),
			InFlight:  inFlight[n.Addr],
		}
		if panicking {
			s.Share = 1
		}
		if st.ejected {
			s.EjectedUntil = st.until
		}
		if od := c.cfg.outlier; od != nil {
			s.Ejections = st.multiplier(now, od)
		}
		if st.breaker != nil {
			s.Breaker = st.breaker.State()
		}
		if l, ok := loads[n.Addr]; ok {
			s.InFlight, s.Latency = l.inFlight, l.latency
		}
		if err := st.lastErr.Load(); err != nil {
			s.LastErr = *err
		}
		out[i] = s
	}
	return out
}

// load is what a picker reports of one node.
type load struct {
	inFlight int64
	latency  time.Duration
}

// loads returns what the picker reports of each node it was given, nil if
// it does not report loads.
func (c *Client) loads() map[string]load {
	lr, ok := c.picker.(picker.LoadReporter)
	if !ok {
		return nil
	}
	ls := lr.Loads()
	out := make(map[string]load, len(ls))
	for _, l := range ls {
		out[l.Addr] = load{inFlight: l.InFlight, latency: l.Latency}
	}
	return out
}
