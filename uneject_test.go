package lbrpc_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/lbrpc/lbrpc"
	"github.com/lbrpc/lbrpc/health"
	"github.com/lbrpc/lbrpc/internal/rpctest"
	"github.com/lbrpc/lbrpc/picker"
	"github.com/lbrpc/lbrpc/transport"
)

// probeCounter is the default transport, counting the health checks each
// node passed (rpctest's servers do not count them), so that a test waits
// for probes rather than for time.
type probeCounter struct {
	*transport.Pool // its Health (reachability) and State are the client's
	mu              sync.Mutex
	passed          map[string]int
}

func newProbeCounter(t *testing.T) *probeCounter {
	t.Helper()
	// As isolated: the transport does not take hung nodes out on its own.
	pool, err := transport.New(transport.WithMaxTimeouts(1 << 20))
	if err != nil {
		t.Fatal(err)
	}
	return &probeCounter{Pool: pool, passed: map[string]int{}}
}

func (p *probeCounter) Call(ctx context.Context, addr, serviceMethod string, args, reply any) error {
	err := p.Pool.Call(ctx, addr, serviceMethod, args, reply)
	if r, ok := reply.(*health.Response); ok && err == nil && r.Status == health.Serving {
		p.mu.Lock()
		p.passed[addr]++
		p.mu.Unlock()
	}
	return err
}

// Passed returns the number of health checks addr passed.
func (p *probeCounter) Passed(addr string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.passed[addr]
}

// A node ejected as an outlier returns as soon as its health check passes,
// as in Envoy (successful_active_health_check_uneject_host), although its
// ejection has an hour to run: on the first passed probe if the health
// check never judged it unhealthy, on the Healthy-th pass in a row if it
// did. It slow starts, gets calls again, and keeps its ejection count.
// With KeepEjected it stays ejected however many probes pass.
func TestHealthCheckEndsEjection(t *testing.T) {
	for _, tc := range []struct {
		name   string
		judged bool // the health check also judges the node unhealthy
		keep   bool // OutlierDetection.KeepEjected
	}{
		{"first pass ends the ejection", false, false},
		{"turning healthy ends the ejection", true, false},
		{"KeepEjected, probes pass", false, true},
		{"KeepEjected, turned healthy", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			servers := rpctest.Start(t, 2, rpctest.Gob)
			bad, good := servers[0], servers[1]
			hc := healthCheck
			if !tc.judged {
				hc.Unhealthy = 1 << 30 // failed probes never take the node out: the ejection alone does
			}
			probes := newProbeCounter(t)
			c := newClient(t, servers,
				lbrpc.WithPicker(picker.RoundRobin()),
				lbrpc.WithTransport(probes),
				lbrpc.WithOutlierDetection(lbrpc.OutlierDetection{Consecutive: 2, BaseEjection: time.Hour, KeepEjected: tc.keep}),
				lbrpc.WithHealthCheck(hc),
				lbrpc.WithSlowStart(lbrpc.SlowStart{Window: time.Hour}),
			)
			mustCall(t, c, 2)

			// The bad node hangs, and its health service says so.
			bad.SetServing(false)
			bad.SetLatency(time.Hour)
			if tc.judged {
				// Both nodes fail their health checks: the client panics
				// and sends to both, so that the bad one is ejected
				// whether or not it was judged unhealthy first.
				good.SetServing(false)
			}
			hangUntil(t, c, "the hung node to be ejected", func() bool { return stateOf(t, c, bad.Addr).Ejected })
			if tc.judged {
				rpctest.Eventually(t, "the hung node to be judged unhealthy", func() bool { return !stateOf(t, c, bad.Addr).Healthy })
				good.SetServing(true)
				rpctest.Eventually(t, "the good node to be ready", func() bool { return stateOf(t, c, good.Addr).Ready && !c.Panicking() })
			}
			ejected := stateOf(t, c, bad.Addr)
			if ejected.Ready || ejected.Ejections != 1 || ejected.Healthy == tc.judged {
				t.Fatalf("ejected node's state = %+v, want not ready, 1 ejection, healthy %v", ejected, !tc.judged)
			}
			got := bad.Calls()
			mustCall(t, c, 10)
			if bad.Calls() != got {
				t.Fatalf("ejected node got %d calls", bad.Calls()-got)
			}

			// The bad node heals; its ejection has an hour left.
			passed := probes.Passed(bad.Addr)
			bad.SetLatency(0)
			bad.SetServing(true)
			if tc.keep {
				// Healthy passes turn it healthy; three more prove the
				// passes are ignored, not merely slow to count.
				rpctest.Eventually(t, "probes of the healed node to pass", func() bool { return probes.Passed(bad.Addr) >= passed+hc.Healthy+3 })
				s := stateOf(t, c, bad.Addr)
				if !s.Ejected || s.Ready || !s.Healthy || !s.EjectedUntil.Equal(ejected.EjectedUntil) {
					t.Fatalf("with KeepEjected, state after passed probes = %+v, want healthy, still ejected until %v", s, ejected.EjectedUntil)
				}
				mustCall(t, c, 10)
				if bad.Calls() != got {
					t.Fatalf("ejected node got %d calls", bad.Calls()-got)
				}
				return
			}
			rpctest.Eventually(t, "the healed node to return", func() bool { return stateOf(t, c, bad.Addr).Ready })
			if n := probes.Passed(bad.Addr) - passed; tc.judged && n < hc.Healthy {
				t.Fatalf("the node returned after %d passed probes, want %d: it was judged unhealthy", n, hc.Healthy)
			}
			s := stateOf(t, c, bad.Addr)
			if s.Ejected || !s.EjectedUntil.IsZero() || !s.Healthy || s.Failures != 0 || s.Ejections != 1 || s.Share >= 1 {
				t.Fatalf("returned node's state = %+v, want not ejected, healthy, no failures, its 1 ejection kept, slow starting", s)
			}
			if c.Panicking() {
				t.Fatal("panicking with both nodes ready")
			}
			rpctest.Eventually(t, "the returned node to get calls", func() bool {
				mustCall(t, c, 1)
				return bad.Calls() > got
			})
		})
	}
}

// A node that fails again after a health check ended its ejection is
// ejected for longer: an early return keeps the ejection count, as Envoy
// does, so a flapping node spends ever more time out.
func TestHealthCheckEndedEjectionCounts(t *testing.T) {
	servers := rpctest.Start(t, 2, rpctest.Gob)
	bad := servers[0]
	hc := healthCheck
	hc.Unhealthy = 1 << 30
	c := newClient(t, servers, isolated(
		lbrpc.WithOutlierDetection(lbrpc.OutlierDetection{Consecutive: 2, BaseEjection: time.Hour, MaxEjection: 10 * time.Hour}),
		lbrpc.WithHealthCheck(hc),
	)...)
	mustCall(t, c, 2)
	for i, want := range []time.Duration{time.Hour, 2 * time.Hour, 3 * time.Hour} {
		bad.SetServing(false)
		bad.SetLatency(time.Hour)
		before := time.Now()
		hangUntil(t, c, "the hung node to be ejected", func() bool { return stateOf(t, c, bad.Addr).Ejected })
		s := stateOf(t, c, bad.Addr)
		// The ejection began between before and now: its end tells its length.
		if s.Ejections != i+1 || s.EjectedUntil.Before(before.Add(want)) || s.EjectedUntil.After(time.Now().Add(want)) {
			t.Fatalf("ejection %d: state = %+v, want %d ejections, for %v", i+1, s, i+1, want)
		}
		bad.SetLatency(0)
		bad.SetServing(true)
		rpctest.Eventually(t, "the healed node to return", func() bool { return stateOf(t, c, bad.Addr).Ready })
	}
}
