package lbrpc

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"time"

	"github.com/lbrpc/lbrpc/health"
)

// startProbes starts the health check goroutine of a node joining the set,
// if health checks are on. c.applyMu is held.
func (c *Client) startProbes(st *nodeState) {
	if c.cfg.healthCheck == nil || c.closed.Load() {
		return
	}
	ctx, cancel := context.WithCancel(c.ctx)
	st.stop = cancel
	c.probes.Add(1)
	go c.probeLoop(ctx, st)
}

// probeLoop probes one node until ctx ends (the node left the set, or the
// client closed). The first probe comes at a random time within the first
// interval, so that the nodes, and the clients, do not all probe at once.
func (c *Client) probeLoop(ctx context.Context, st *nodeState) {
	defer c.probes.Done()
	hc := c.cfg.healthCheck
	t := time.NewTimer(rand.N(hc.Interval) + 1)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		ej := st.ejection.Load() // the outlier ejection in force as the probe begins
		err := c.probe(ctx, st.addr)
		if ctx.Err() != nil {
			return // the probe was cut short: it says nothing of the node
		}
		changed := c.judge(st, err)
		if c.clearEjection(st, ej, err) {
			changed = true
		}
		if changed {
			c.signal()
		}
		// Interval ± 10%.
		t.Reset(hc.Interval - hc.Interval/10 + rand.N(hc.Interval/5+1))
	}
}

// probe runs one health check on addr: nil if it passed.
func (c *Client) probe(ctx context.Context, addr string) error {
	hc := c.cfg.healthCheck
	ctx, cancel := context.WithTimeout(ctx, hc.Timeout)
	defer cancel()
	if hc.TCP {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return conn.Close()
	}
	var resp health.Response
	if err := c.tr.Call(ctx, addr, hc.Method, health.Request{Service: hc.Service}, &resp); err != nil {
		return err
	}
	if resp.Status != health.Serving {
		return fmt.Errorf("%w: %s answered %v", ErrNotServing, addr, resp.Status)
	}
	return nil
}

// judge counts a probe's outcome and reports whether the node's verdict
// changed: a healthy node turns unhealthy after Unhealthy failures in a
// row, an unhealthy one healthy after Healthy passes in a row. Only the
// node's probe goroutine calls it.
func (c *Client) judge(st *nodeState, err error) bool {
	hc := c.cfg.healthCheck
	if err != nil {
		st.lastErr.Store(&err)
		st.passes = 0
		st.fails++
		if st.fails >= hc.Unhealthy && st.healthy.Load() {
			st.healthy.Store(false)
			return true
		}
		return false
	}
	st.fails = 0
	st.passes++
	if st.passes >= hc.Healthy && !st.healthy.Load() {
		st.healthy.Store(true)
		return true
	}
	return false
}

// clearEjection asks the follower to end outlier ejection ej of st, and
// reports whether it did: it does when a probe begun during that ejection
// passed and judge left the node healthy, as Envoy's
// successful_active_health_check_uneject_host does, unless
// OutlierDetection.KeepEjected. A node judged unhealthy is thus back when
// its Healthy passes in a row bring it back, a node never judged unhealthy
// on the first probe begun during its ejection that passes. A probe begun
// before the ejection does not end it: the failures that ejected the node
// may be newer than what it saw. Only the node's probe goroutine calls it,
// after judge; the follower ends the ejection only if ej is still in force.
func (c *Client) clearEjection(st *nodeState, ej uint64, err error) bool {
	od := c.cfg.outlier
	if err != nil || ej == 0 || od == nil || od.KeepEjected || !st.healthy.Load() {
		return false
	}
	st.cleared.Store(ej)
	return true
}
