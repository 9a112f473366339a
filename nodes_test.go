package lbrpc_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/lbrpc/lbrpc"
	"github.com/lbrpc/lbrpc/internal/rpctest"
	"github.com/lbrpc/lbrpc/middleware"
	"github.com/lbrpc/lbrpc/picker"
	"github.com/lbrpc/lbrpc/registry"
	"github.com/lbrpc/lbrpc/transport"
)

// stateOf returns the client's state of the node at addr.
func stateOf(t *testing.T, c *lbrpc.Client, addr string) lbrpc.NodeState {
	t.Helper()
	for _, s := range c.State() {
		if s.Addr == addr {
			return s
		}
	}
	t.Fatalf("no state for %s in %+v", addr, c.State())
	return lbrpc.NodeState{}
}

// callWithin makes one call bounded by d and returns its error.
func callWithin(c *lbrpc.Client, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var reply string
	return c.Call(ctx, "Hello.Say", "x", &reply)
}

// mustCall makes n calls that must succeed.
func mustCall(t *testing.T, c *lbrpc.Client, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if err := callWithin(c, 10*time.Second); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
}

// hangUntil makes calls with a short deadline until cond holds: the calls
// to hung nodes time out, and count as failures.
func hangUntil(t *testing.T, c *lbrpc.Client, what string, cond func() bool) {
	t.Helper()
	rpctest.Eventually(t, what, func() bool {
		callWithin(c, 50*time.Millisecond)
		return cond()
	})
}

// isolated are options that keep the transport from taking hung nodes out
// on its own, so that a test sees only the mechanism it is about.
func isolated(opts ...lbrpc.Option) []lbrpc.Option {
	return append([]lbrpc.Option{
		lbrpc.WithPicker(picker.RoundRobin()),
		lbrpc.WithTransportOptions(transport.WithMaxTimeouts(1 << 20)),
	}, opts...)
}

// A node that stops answering (every call times out) is ejected after
// Consecutive failures, gets no call while ejected, and returns when its
// ejection ends.
func TestOutlierEjectedAndReturns(t *testing.T) {
	servers := rpctest.Start(t, 3, rpctest.Gob)
	const base = 500 * time.Millisecond
	c := newClient(t, servers, isolated(lbrpc.WithOutlierDetection(lbrpc.OutlierDetection{
		Consecutive:  3,
		BaseEjection: base,
	}))...)
	mustCall(t, c, 3)
	bad := servers[0]
	bad.SetLatency(time.Hour)
	before := time.Now()
	hangUntil(t, c, "the hung node to be ejected", func() bool { return stateOf(t, c, bad.Addr).Ejected })

	s := stateOf(t, c, bad.Addr)
	if s.Ready || s.Ejections != 1 || !s.EjectedUntil.After(before) || !errors.Is(s.LastErr, context.DeadlineExceeded) {
		t.Fatalf("ejected node's state = %+v, want not ready, 1 ejection, until later, a deadline error", s)
	}
	for _, other := range servers[1:] {
		if s := stateOf(t, c, other.Addr); !s.Ready || s.Ejected {
			t.Fatalf("healthy node's state = %+v, want ready", s)
		}
	}
	got := bad.Calls()
	mustCall(t, c, 30)
	if bad.Calls() != got {
		t.Fatalf("ejected node got %d calls", bad.Calls()-got)
	}
	if !stateOf(t, c, bad.Addr).Ejected {
		t.Fatalf("ejection of %v ended during 30 calls: the check above proved nothing", base)
	}

	bad.SetLatency(0)
	rpctest.Eventually(t, "the node to return after its ejection", func() bool { return stateOf(t, c, bad.Addr).Ready })
	if s := stateOf(t, c, bad.Addr); s.Ejected || s.Failures != 0 {
		t.Fatalf("returned node's state = %+v, want not ejected, no failures", s)
	}
	rpctest.Eventually(t, "the returned node to get calls", func() bool {
		mustCall(t, c, 1)
		return bad.Calls() > got
	})
}

// Answers never eject a node, even errors from the method (rpc.ServerError),
// nor do calls their caller cancels.
func TestOutlierIgnoresAnswersAndCancellations(t *testing.T) {
	servers := rpctest.Start(t, 2, rpctest.Gob)
	c := newClient(t, servers, isolated(lbrpc.WithOutlierDetection(lbrpc.OutlierDetection{Consecutive: 2}))...)
	var reply string
	for i := 0; i < 10; i++ {
		if err := c.Call(context.Background(), "Hello.Fail", "x", &reply); err == nil {
			t.Fatal("Hello.Fail succeeded")
		}
	}
	servers[0].SetLatency(time.Hour)
	servers[1].SetLatency(time.Hour)
	base := servers[0].Calls() + servers[1].Calls()
	for i := 0; i < 10; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- c.Call(ctx, "Hello.Say", "x", &reply) }()
		rpctest.Eventually(t, "the call to reach a server", func() bool { return servers[0].Calls()+servers[1].Calls() == base+int64(i+1) })
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	}
	for _, s := range c.State() {
		if s.Ejected || s.Failures != 0 || s.LastErr != nil {
			t.Fatalf("state = %+v after answers and cancellations, want nothing counted", s)
		}
	}
}

// No more than MaxEjectedPercent of the nodes are ejected at once: with 3
// of 4 nodes hung and 50%, two are ejected and the third keeps serving.
func TestOutlierMaxEjectedPercent(t *testing.T) {
	servers := rpctest.Start(t, 4, rpctest.Gob)
	c := newClient(t, servers, isolated(lbrpc.WithOutlierDetection(lbrpc.OutlierDetection{
		Consecutive:       2,
		BaseEjection:      time.Hour,
		MaxEjectedPercent: 50,
	}))...)
	mustCall(t, c, 4)
	hung := servers[:3]
	for _, s := range hung {
		s.SetLatency(time.Hour)
	}
	ejected := func() (out []string) {
		for _, s := range c.State() {
			if s.Ejected {
				out = append(out, s.Addr)
			}
		}
		return out
	}
	hangUntil(t, c, "two nodes to be ejected", func() bool { return len(ejected()) == 2 })

	var third *rpctest.Server
	for _, s := range hung {
		if !slices.Contains(ejected(), s.Addr) {
			third = s
		}
	}
	// The third hung node fails until its streak reaches 2: it trips, the
	// ejection is refused, and the streak starts over (as Envoy does).
	base, need := third.Calls(), int64(max(0, 2-stateOf(t, c, third.Addr).Failures))
	hangUntil(t, c, "the third hung node to fail enough", func() bool { return third.Calls() >= base+need })
	rpctest.Eventually(t, "the refused ejection to reset the streak", func() bool { return stateOf(t, c, third.Addr).Failures == 0 })
	if got := ejected(); len(got) != 2 {
		t.Fatalf("ejected %v, want 2 of 4 nodes", got)
	}
	if s := stateOf(t, c, third.Addr); s.Ejected || !s.Ready {
		t.Fatalf("third hung node's state = %+v, want ready: ejecting it would pass 50%%", s)
	}
	if c.Panicking() {
		t.Fatal("panicking with two nodes ready")
	}
}

// When every node is ejected the client panics: it sends to all of them
// rather than failing with ErrNoNodes, and says so.
func TestOutlierPanicWhenAllEjected(t *testing.T) {
	servers := rpctest.Start(t, 2, rpctest.Gob)
	c := newClient(t, servers, isolated(lbrpc.WithOutlierDetection(lbrpc.OutlierDetection{
		Consecutive:       2,
		BaseEjection:      time.Hour,
		MaxEjectedPercent: 100,
	}))...)
	mustCall(t, c, 2)
	for _, s := range servers {
		s.SetLatency(time.Hour)
	}
	hangUntil(t, c, "both nodes to be ejected", func() bool {
		st := c.State()
		return st[0].Ejected && st[1].Ejected
	})
	rpctest.Eventually(t, "panic mode", c.Panicking)
	for _, s := range c.State() {
		if s.Ready {
			t.Fatalf("state = %+v in panic mode, want not ready", s)
		}
	}
	sent := servers[0].Calls() + servers[1].Calls()
	err := callWithin(c, 50*time.Millisecond)
	if _, ok := errors.AsType[*transport.Error](err); !ok || errors.Is(err, lbrpc.ErrNoNodes) {
		t.Fatalf("err = %v, want the node's timeout, not ErrNoNodes", err)
	}
	if servers[0].Calls()+servers[1].Calls() != sent+1 {
		t.Fatal("the call in panic mode did not reach a node")
	}
}

// Outlier detection can be turned off: then a hung node is never ejected.
func TestOutlierDetectionOff(t *testing.T) {
	servers := rpctest.Start(t, 2, rpctest.Gob)
	c := newClient(t, servers, isolated(lbrpc.WithOutlierDetection(lbrpc.OutlierDetection{Disable: true}))...)
	servers[0].SetLatency(time.Hour)
	for i := 0; i < 20; i++ {
		callWithin(c, 20*time.Millisecond)
	}
	if s := stateOf(t, c, servers[0].Addr); s.Ejected || !s.Ready || s.Failures != 0 {
		t.Fatalf("state = %+v with outlier detection off, want ready and no count", s)
	}
}

// A node's breaker opens on its failures and takes it out of the ready
// set; after its timeout the node returns half-open, and a real call is the
// probe that closes the breaker.
func TestNodeBreakerOpensAndProbeCloses(t *testing.T) {
	servers := rpctest.Start(t, 2, rpctest.Gob)
	bad := servers[0]
	var mu sync.Mutex
	var changes []string
	c := newClient(t, servers, isolated(
		lbrpc.WithOutlierDetection(lbrpc.OutlierDetection{Disable: true}),
		lbrpc.WithNodeBreaker(gobreaker.Settings{
			ReadyToTrip: middleware.ConsecutiveFailures(2),
			Timeout:     500 * time.Millisecond,
			OnStateChange: func(name string, from, to gobreaker.State) {
				if name == bad.Addr {
					mu.Lock()
					changes = append(changes, to.String())
					mu.Unlock()
				}
			},
		}),
	)...)
	mustCall(t, c, 2)
	bad.SetLatency(time.Hour)
	hangUntil(t, c, "the breaker to open", func() bool { return stateOf(t, c, bad.Addr).Breaker == gobreaker.StateOpen })
	rpctest.Eventually(t, "the node to leave the ready set", func() bool { return !stateOf(t, c, bad.Addr).Ready })
	got := bad.Calls()
	mustCall(t, c, 20)
	if bad.Calls() != got {
		t.Fatalf("node with an open breaker got %d calls", bad.Calls()-got)
	}

	bad.SetLatency(0)
	rpctest.Eventually(t, "the node to return half-open", func() bool {
		s := stateOf(t, c, bad.Addr)
		return s.Ready && s.Breaker == gobreaker.StateHalfOpen
	})
	if bad.Calls() != got {
		t.Fatal("the half-open node got a call before the probe")
	}
	rpctest.Eventually(t, "the probe to close the breaker", func() bool {
		mustCall(t, c, 1)
		return stateOf(t, c, bad.Addr).Breaker == gobreaker.StateClosed
	})
	if bad.Calls() != got+1 {
		t.Fatalf("node got %d calls while half-open, want 1 probe", bad.Calls()-got)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"open", "half-open", "closed"}; !slices.Equal(changes, want) {
		t.Fatalf("breaker went %v, want %v", changes, want)
	}
}

// A call the node's breaker refuses (half-open, its probe in flight) goes
// to another node; with no other node it fails unsent, with
// ErrNodeCircuitOpen, so Retry may retry it.
func TestNodeBreakerRefusalIsUnsent(t *testing.T) {
	for _, tc := range []struct {
		name  string
		nodes int
	}{
		{"another node takes it", 2},
		{"no other node", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			servers := rpctest.Start(t, tc.nodes, rpctest.Gob)
			bad := servers[0]
			c := newClient(t, servers, isolated(
				lbrpc.WithOutlierDetection(lbrpc.OutlierDetection{Disable: true}),
				lbrpc.WithNodeBreaker(gobreaker.Settings{ReadyToTrip: middleware.ConsecutiveFailures(1), Timeout: 100 * time.Millisecond}),
			)...)
			mustCall(t, c, tc.nodes)
			bad.SetLatency(time.Hour)
			hangUntil(t, c, "the breaker to open", func() bool { return stateOf(t, c, bad.Addr).Breaker == gobreaker.StateOpen })
			bad.SetLatency(300 * time.Millisecond)
			rpctest.Eventually(t, "the node to return half-open", func() bool {
				s := stateOf(t, c, bad.Addr)
				return s.Ready && s.Breaker == gobreaker.StateHalfOpen && !c.Panicking()
			})
			// The probe: calls until one is in flight to the bad node.
			base := bad.Calls()
			probe := make(chan error, 1)
			for bad.Calls() == base {
				go func() { probe <- callWithin(c, 10*time.Second) }()
				rpctest.Eventually(t, "a call to end or reach the bad node", func() bool { return len(probe) > 0 || bad.Calls() > base })
				if bad.Calls() == base {
					if err := <-probe; err != nil {
						t.Fatalf("call to the other node: %v", err)
					}
				}
			}
			for i := 0; i < 6; i++ {
				err := callWithin(c, 10*time.Second)
				if tc.nodes > 1 {
					if err != nil {
						t.Fatalf("call while the probe is in flight: %v, want it served by the other node", err)
					}
					continue
				}
				te, ok := errors.AsType[*transport.Error](err)
				if !errors.Is(err, lbrpc.ErrNodeCircuitOpen) || !ok || !te.Unsent() || te.Addr != bad.Addr {
					t.Fatalf("err = %v, want an unsent *transport.Error for %s wrapping ErrNodeCircuitOpen", err, bad.Addr)
				}
				if !middleware.Retryable(err) {
					t.Fatalf("Retryable(%v) = false, want true", err)
				}
			}
			if bad.Calls() != base+1 {
				t.Fatalf("bad node got %d calls while half-open, want only the probe", bad.Calls()-base)
			}
			if err := <-probe; err != nil {
				t.Fatalf("probe: %v", err)
			}
			rpctest.Eventually(t, "the breaker to close", func() bool { return stateOf(t, c, bad.Addr).Breaker == gobreaker.StateClosed })
		})
	}
}

// An attempt declines as many refusing nodes as the set has before it
// gives up: with five half-open nodes ahead of a healthy one in PickFirst's
// order, each with its probe in flight, a call still reaches the healthy
// node.
func TestNodeBreakerRefusalsDeclinedAcrossTheSet(t *testing.T) {
	servers := rpctest.Start(t, 6, rpctest.Gob)
	bad, good := servers[:5], servers[5]
	c := newClient(t, servers,
		lbrpc.WithPicker(picker.PickFirst()),
		lbrpc.WithTransportOptions(transport.WithMaxTimeouts(1<<20)),
		lbrpc.WithOutlierDetection(lbrpc.OutlierDetection{Disable: true}),
		lbrpc.WithNodeBreaker(gobreaker.Settings{ReadyToTrip: middleware.ConsecutiveFailures(1), Timeout: time.Second}),
	)
	mustCall(t, c, 1)
	for _, s := range bad {
		s.SetLatency(time.Hour)
	}
	halfOpen := func() bool {
		for _, s := range bad {
			if st := stateOf(t, c, s.Addr); !st.Ready || st.Breaker != gobreaker.StateHalfOpen {
				return false
			}
		}
		return !c.Panicking()
	}
	// PickFirst trips the bad nodes' breakers one after the other.
	hangUntil(t, c, "every bad node's breaker to open", func() bool {
		for _, s := range bad {
			if stateOf(t, c, s.Addr).Breaker == gobreaker.StateClosed {
				return false
			}
		}
		return true
	})
	for _, s := range bad {
		s.SetLatency(4 * time.Second) // the probes stay in flight to the end
	}
	rpctest.Eventually(t, "every bad node to return half-open", halfOpen)

	// Each call takes the first node whose breaker lets a probe through.
	probes := make(chan error, len(bad))
	for i, s := range bad {
		base := s.Calls()
		go func() { probes <- callWithin(c, 10*time.Second) }()
		rpctest.Eventually(t, fmt.Sprintf("the probe of bad node %d", i), func() bool { return s.Calls() > base })
	}
	served := good.Calls()
	if err := callWithin(c, 10*time.Second); err != nil {
		t.Fatalf("call with five probes in flight: %v, want it served by the healthy node", err)
	}
	if good.Calls() != served+1 {
		t.Fatalf("healthy node served %d calls, want 1", good.Calls()-served)
	}
	for range bad {
		if err := <-probes; err != nil {
			t.Fatalf("probe: %v", err)
		}
	}
}

// healthCheck is a fast health check for tests.
var healthCheck = lbrpc.HealthCheck{Interval: 10 * time.Millisecond, Timeout: time.Second, Unhealthy: 2, Healthy: 2}

// A node whose health service says "not serving" leaves the ready set, gets
// no calls, and returns once it serves again.
func TestHealthCheckRPC(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode rpctest.Mode
		opts []transport.Option
	}{
		{"gob", rpctest.Gob, nil},
		{"jsonrpc", rpctest.JSON, []transport.Option{transport.JSONRPC()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			servers := rpctest.Start(t, 3, tc.mode)
			c := newClient(t, servers, isolated(lbrpc.WithHealthCheck(healthCheck), lbrpc.WithTransportOptions(tc.opts...))...)
			mustCall(t, c, 3)
			bad := servers[0]
			bad.SetServing(false)
			rpctest.Eventually(t, "the node to turn unhealthy and leave the ready set", func() bool {
				s := stateOf(t, c, bad.Addr)
				return !s.Healthy && !s.Ready
			})
			if s := stateOf(t, c, bad.Addr); !errors.Is(s.LastErr, lbrpc.ErrNotServing) {
				t.Fatalf("unhealthy node's state = %+v, want ErrNotServing as its last error", s)
			}
			got := bad.Calls()
			mustCall(t, c, 30)
			if bad.Calls() != got {
				t.Fatalf("unhealthy node got %d calls", bad.Calls()-got)
			}
			bad.SetServing(true)
			rpctest.Eventually(t, "the node to turn healthy", func() bool { return stateOf(t, c, bad.Addr).Ready })
			rpctest.Eventually(t, "the node to get calls again", func() bool {
				mustCall(t, c, 1)
				return bad.Calls() > got
			})
		})
	}
}

// The TCP probe, for servers without a health service, follows whether
// the node accepts connections.
func TestHealthCheckTCP(t *testing.T) {
	servers := rpctest.Start(t, 2, rpctest.Gob)
	hc := healthCheck
	hc.TCP = true
	c := newClient(t, servers, lbrpc.WithHealthCheck(hc))
	mustCall(t, c, 2)
	bad := servers[0]
	bad.SetServing(false) // not asked: the probe only connects
	bad.Kill()
	rpctest.Eventually(t, "the killed node to turn unhealthy", func() bool { return !stateOf(t, c, bad.Addr).Healthy })
	if !stateOf(t, c, servers[1].Addr).Healthy {
		t.Fatal("the live node turned unhealthy")
	}
	if err := bad.Restart(); err != nil {
		t.Fatal(err)
	}
	rpctest.Eventually(t, "the restarted node to turn healthy", func() bool { return stateOf(t, c, bad.Addr).Healthy })
}

// When every node fails its health check the client panics and still
// serves; when one recovers, it alone takes the calls.
func TestHealthCheckPanic(t *testing.T) {
	servers := rpctest.Start(t, 2, rpctest.Gob)
	c := newClient(t, servers, isolated(lbrpc.WithHealthCheck(healthCheck))...)
	for _, s := range servers {
		s.SetServing(false)
	}
	rpctest.Eventually(t, "panic mode", c.Panicking)
	base0, base1 := servers[0].Calls(), servers[1].Calls()
	mustCall(t, c, 10)
	if servers[0].Calls() == base0 || servers[1].Calls() == base1 {
		t.Fatal("panic mode did not use every node")
	}
	servers[1].SetServing(true)
	rpctest.Eventually(t, "panic mode to end", func() bool { return !c.Panicking() })
	base0 = servers[0].Calls()
	mustCall(t, c, 10)
	if servers[0].Calls() != base0 {
		t.Fatal("the unhealthy node got calls after panic mode ended")
	}
}

// In panic mode slow start is set aside, and State says so: a node that
// returns while the client panics has its full share.
func TestPanicModeSetsSlowStartAside(t *testing.T) {
	servers := rpctest.Start(t, 4, rpctest.Gob)
	c := newClient(t, servers, isolated(
		lbrpc.WithHealthCheck(healthCheck),
		lbrpc.WithSlowStart(lbrpc.SlowStart{Window: time.Hour}),
		lbrpc.WithPanicThreshold(75),
	)...)
	mustCall(t, c, 4)
	for _, s := range servers[1:] {
		s.SetServing(false)
	}
	rpctest.Eventually(t, "panic mode with one node of four ready", func() bool {
		return c.Panicking() && !stateOf(t, c, servers[1].Addr).Ready
	})
	servers[1].SetServing(true)
	rpctest.Eventually(t, "the node to return", func() bool { return stateOf(t, c, servers[1].Addr).Ready })
	if !c.Panicking() {
		t.Fatal("not panicking with two nodes of four ready and a threshold of 75%")
	}
	if s := stateOf(t, c, servers[1].Addr); s.Share != 1 {
		t.Fatalf("returned node's share in panic mode = %v, want 1", s.Share)
	}
	servers[2].SetServing(true)
	rpctest.Eventually(t, "panic mode to end", func() bool { return stateOf(t, c, servers[2].Addr).Ready && !c.Panicking() })
	if s := stateOf(t, c, servers[1].Addr); s.Share >= 1 {
		t.Fatalf("returned node's share after panic mode = %v, want below 1: it slow starts", s.Share)
	}
}

// With a panic threshold, panic mode starts when fewer than that share of
// the nodes are ready, not only when none is; without one, the last ready
// node takes every call.
func TestPanicThreshold(t *testing.T) {
	for _, tc := range []struct {
		name      string
		percent   int
		wantPanic bool
	}{
		{"default", 0, false},
		{"one of four under 50%", 50, true},
		{"one of four at 25%", 25, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			servers := rpctest.Start(t, 4, rpctest.Gob)
			opts := isolated(lbrpc.WithHealthCheck(healthCheck), lbrpc.WithPicker(picker.RoundRobin()))
			if tc.percent != 0 {
				opts = append(opts, lbrpc.WithPanicThreshold(tc.percent))
			}
			c := newClient(t, servers, opts...)
			for _, s := range servers[1:] {
				s.SetServing(false)
			}
			rpctest.Eventually(t, "three nodes to fail their health checks", func() bool {
				n := 0
				for _, s := range c.State() {
					if !s.Ready {
						n++
					}
				}
				return n == 3
			})
			if got := c.Panicking(); got != tc.wantPanic {
				t.Fatalf("Panicking() = %v with 1 of 4 ready, want %v", got, tc.wantPanic)
			}
			var base [4]int64
			for i, s := range servers {
				base[i] = s.Calls()
			}
			mustCall(t, c, 20)
			reached := 0
			for i, s := range servers {
				if s.Calls() > base[i] {
					reached++
				}
			}
			if want := map[bool]int{true: 4, false: 1}[tc.wantPanic]; reached != want {
				t.Fatalf("calls reached %d nodes, want %d", reached, want)
			}
			if !tc.wantPanic {
				return
			}
			servers[1].SetServing(true)
			rpctest.Eventually(t, "panic mode to end at 2 of 4 ready", func() bool { return !c.Panicking() })
			base2, base3 := servers[2].Calls(), servers[3].Calls()
			mustCall(t, c, 20)
			if servers[2].Calls() != base2 || servers[3].Calls() != base3 {
				t.Fatal("unhealthy nodes got calls after panic mode ended")
			}
		})
	}
}

// clock is a settable clock for the client's virtual time.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

// A node that joins ramps up over the slow start window, whatever the
// picker: measured over windows of calls in virtual time, its traffic
// relative to an established node's grows with its share, and is equal at
// the end. With round robin the ratio is the share itself.
func TestSlowStartRamps(t *testing.T) {
	for _, tc := range []struct {
		name   string
		picker func() picker.Picker
		exact  bool // the ratio follows the share within 50%
	}{
		{"round robin", picker.RoundRobin, true},
		{"random", picker.Random, false},
	} {
		t.Run(tc.name, func(t *testing.T) { testSlowStartRamps(t, tc.picker(), tc.exact) })
	}
}

func testSlowStartRamps(t *testing.T, p picker.Picker, exact bool) {
	servers := rpctest.Start(t, 3, rpctest.Gob)
	const window = time.Minute
	clk := &clock{now: time.Unix(1_000_000, 0)}
	t0 := clk.Now()
	sets := make(chan []registry.Node)
	c, err := lbrpc.New(
		lbrpc.WithRegistry(chanRegistry{sets}),
		lbrpc.WithPicker(p),
		lbrpc.WithSlowStart(lbrpc.SlowStart{Window: window, MinShare: 0.1}),
		lbrpc.WithClock(clk.Now),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sets <- nodes(servers[0], servers[1])
	mustCall(t, c, 2)
	for _, s := range c.State() {
		if s.Share != 1 {
			t.Fatalf("first set's node %s has share %v, want 1: the first set does not slow start", s.Addr, s.Share)
		}
	}
	sets <- nodes(servers...)
	rpctest.Eventually(t, "the third node to join", func() bool { return len(c.State()) == 3 })
	joiner := servers[2]

	const calls = 1200
	prev := -1.0
	for _, w := range []struct {
		at        time.Duration
		wantShare float64
	}{
		{0, 0.1},
		{window / 3, 1.0 / 3},
		{2 * window / 3, 2.0 / 3},
		{window, 1},
	} {
		clk.Set(t0.Add(w.at))
		if s := stateOf(t, c, joiner.Addr); s.Share < w.wantShare-1e-9 || s.Share > w.wantShare+1e-9 || !s.Ready {
			t.Fatalf("at %v: state = %+v, want ready with share %v", w.at, s, w.wantShare)
		}
		before := [3]int64{servers[0].Calls(), servers[1].Calls(), joiner.Calls()}
		mustCall(t, c, calls)
		got := float64(joiner.Calls() - before[2])
		peer := float64(servers[0].Calls()-before[0]+servers[1].Calls()-before[1]) / 2
		ratio := got / peer
		t.Logf("at %v: joiner %v calls, established nodes %v each: ratio %.3f, share %.3f", w.at, got, peer, ratio, w.wantShare)
		switch {
		case ratio <= prev:
			t.Errorf("at %v: joiner/established traffic = %.3f, not above the previous window's %.3f", w.at, ratio, prev)
		case exact && (ratio < 0.5*w.wantShare || ratio > 1.5*w.wantShare):
			t.Errorf("at %v: joiner/established traffic = %.3f, want about %.3f", w.at, ratio, w.wantShare)
		case w.wantShare == 0.1 && ratio > 0.25:
			t.Errorf("at the start: joiner/established traffic = %.3f, want about 0.1", ratio)
		case w.wantShare == 1 && (ratio < 0.75 || ratio > 1.33):
			t.Errorf("after the window: joiner/established traffic = %.3f, want about 1", ratio)
		}
		prev = ratio
	}
	if s := stateOf(t, c, joiner.Addr); s.Share != 1 {
		t.Fatalf("after the window: share = %v, want 1", s.Share)
	}
}

// With a picker that reports loads (picker.LoadReporter), State shows its
// latency estimate and in-flight count.
func TestStateReportsPickerLoads(t *testing.T) {
	servers := rpctest.Start(t, 2, rpctest.Gob)
	c := newClient(t, servers, lbrpc.WithPicker(picker.LeastLoaded()))
	mustCall(t, c, 20)
	var latency time.Duration
	for _, s := range c.State() {
		latency = max(latency, s.Latency)
	}
	if latency <= 0 {
		t.Fatalf("State() = %+v, want a latency estimate from the picker", c.State())
	}
	for _, s := range servers {
		s.SetLatency(time.Hour)
	}
	done := make(chan error, 1)
	go func() { done <- callWithin(c, 10*time.Second) }()
	rpctest.Eventually(t, "the call to be in flight", func() bool {
		st := c.State()
		return st[0].InFlight+st[1].InFlight == 1
	})
	c.Close()
	if err := <-done; !errors.Is(err, lbrpc.ErrClosed) {
		t.Fatalf("err = %v, want ErrClosed", err)
	}
}

// State shows each node as the client sees it.
func TestStateDefaults(t *testing.T) {
	servers := rpctest.Start(t, 2, rpctest.Gob)
	c := newClient(t, servers, lbrpc.WithNodeBreaker(gobreaker.Settings{}))
	mustCall(t, c, 2)
	st := c.State()
	if len(st) != 2 || st[0].Addr != servers[0].Addr || st[1].Addr != servers[1].Addr {
		t.Fatalf("State() = %+v, want both nodes in the registry's order", st)
	}
	for _, s := range st {
		// The default picker, LeastLoaded, has learned each node's latency.
		if s.Latency <= 0 {
			t.Fatalf("state = %+v, want the latency LeastLoaded measured", s)
		}
		want := lbrpc.NodeState{Addr: s.Addr, Weight: 1, Ready: true, Reachable: true, Breaker: gobreaker.StateClosed, Healthy: true, Share: 1, Latency: s.Latency}
		if s != want {
			t.Fatalf("state = %+v, want %+v", s, want)
		}
	}
	servers[0].SetLatency(time.Hour)
	servers[1].SetLatency(time.Hour)
	done := make(chan error, 1)
	go func() { done <- callWithin(c, 10*time.Second) }()
	rpctest.Eventually(t, "the call to be in flight", func() bool {
		st := c.State()
		return st[0].InFlight+st[1].InFlight == 1
	})
	c.Close()
	if err := <-done; !errors.Is(err, lbrpc.ErrClosed) {
		t.Fatalf("err = %v, want ErrClosed", err)
	}
}

// Calls whose deadline passed before they were sent say nothing of the
// node: they neither eject it nor open its breaker.
func TestSpentDeadlineNotCounted(t *testing.T) {
	servers := rpctest.Start(t, 2, rpctest.Gob)
	c := newClient(t, servers, isolated(
		lbrpc.WithOutlierDetection(lbrpc.OutlierDetection{Consecutive: 2}),
		lbrpc.WithNodeBreaker(gobreaker.Settings{ReadyToTrip: middleware.ConsecutiveFailures(2), Timeout: time.Hour}),
	)...)
	mustCall(t, c, 4)
	before := servers[0].Calls() + servers[1].Calls()
	spent, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	for range 10 {
		var reply string
		if err := c.Call(spent, "Hello.Say", "x", &reply); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want DeadlineExceeded", err)
		}
	}
	if got := servers[0].Calls() + servers[1].Calls() - before; got != 0 {
		t.Fatalf("servers ran %d calls with spent deadlines", got)
	}
	for _, s := range c.State() {
		if !s.Ready || s.Ejected || s.Failures != 0 || s.Breaker != gobreaker.StateClosed {
			t.Errorf("node state %+v, want ready: nothing was sent to it", s)
		}
	}
	mustCall(t, c, 2)
}
