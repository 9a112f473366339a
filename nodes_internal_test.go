package lbrpc

import (
	"context"
	"errors"
	"fmt"
	"net/rpc"
	"testing"
	"time"

	"github.com/lbrpc/lbrpc/picker"
	"github.com/lbrpc/lbrpc/registry"
	"github.com/lbrpc/lbrpc/transport"
)

func TestEjectionTime(t *testing.T) {
	od := OutlierDetection{BaseEjection: 30 * time.Second, MaxEjection: 100 * time.Second}
	for _, tc := range []struct {
		n    int
		want time.Duration
	}{
		{0, 0},
		{1, 30 * time.Second},
		{2, 60 * time.Second},
		{3, 90 * time.Second},
		{4, 100 * time.Second}, // capped
		{1 << 40, 100 * time.Second},
	} {
		if got := ejectionTime(&od, tc.n); got != tc.want {
			t.Errorf("ejectionTime(%d) = %v, want %v", tc.n, got, tc.want)
		}
	}
}

// The ejection multiplier grows with each ejection and decays by one for
// each BaseEjection the node serves between ejections.
func TestEjectMultiplierDecays(t *testing.T) {
	od := OutlierDetection{BaseEjection: 10 * time.Second, MaxEjection: time.Hour}
	t0 := time.Unix(1000, 0)
	st := &nodeState{}
	st.eject(t0, &od)
	if st.ejections != 1 || !st.until.Equal(t0.Add(10*time.Second)) {
		t.Fatalf("first ejection: n=%d until=%v", st.ejections, st.until)
	}
	back := st.until
	st.ejected, st.backAt = false, back
	st.eject(back.Add(time.Second), &od) // failed again at once
	if st.ejections != 2 || st.until.Sub(back.Add(time.Second)) != 20*time.Second {
		t.Fatalf("second ejection: n=%d for %v, want 2 for 20s", st.ejections, st.until.Sub(back.Add(time.Second)))
	}
	if got := st.multiplier(st.until.Add(time.Hour), &od); got != 2 {
		t.Fatalf("multiplier while ejected = %d, want 2: no decay while ejected", got)
	}
	back = st.until
	st.ejected, st.backAt = false, back
	if got := st.multiplier(back.Add(15*time.Second), &od); got != 1 {
		t.Fatalf("multiplier after serving 1.5 base periods = %d, want 1", got)
	}
	st.eject(back.Add(25*time.Second), &od) // served 2.5 base periods: 2 -> 0, then +1
	if st.ejections != 1 || st.until.Sub(back.Add(25*time.Second)) != 10*time.Second {
		t.Fatalf("after decay: n=%d for %v, want 1 for 10s", st.ejections, st.until.Sub(back.Add(25*time.Second)))
	}
}

func TestSlowStartShare(t *testing.T) {
	for _, tc := range []struct {
		name    string
		s       SlowStart
		elapsed time.Duration
		want    float64
	}{
		{"start", SlowStart{Window: 100 * time.Second, Aggression: 1, MinShare: 0.1}, 0, 0.1},
		{"before start", SlowStart{Window: 100 * time.Second, Aggression: 1, MinShare: 0.1}, -time.Second, 0.1},
		{"below min", SlowStart{Window: 100 * time.Second, Aggression: 1, MinShare: 0.1}, 5 * time.Second, 0.1},
		{"linear", SlowStart{Window: 100 * time.Second, Aggression: 1, MinShare: 0.1}, 40 * time.Second, 0.4},
		{"aggressive", SlowStart{Window: 100 * time.Second, Aggression: 2, MinShare: 0.1}, 25 * time.Second, 0.5},
		{"timid", SlowStart{Window: 100 * time.Second, Aggression: 0.5, MinShare: 0.01}, 50 * time.Second, 0.25},
		{"end", SlowStart{Window: 100 * time.Second, Aggression: 1, MinShare: 0.1}, 100 * time.Second, 1},
		{"after", SlowStart{Window: 100 * time.Second, Aggression: 1, MinShare: 0.1}, time.Hour, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.s.share(tc.elapsed); got < tc.want-1e-9 || got > tc.want+1e-9 {
				t.Fatalf("share(%v) = %v, want %v", tc.elapsed, got, tc.want)
			}
		})
	}
}

// What counts toward an ejection: failures to get an answer, deadlines
// included; not answers (even errors), not cancellations by the caller.
func TestRecordCounts(t *testing.T) {
	od := OutlierDetection{Consecutive: 3}.withDefaults()
	c := &Client{cfg: config{outlier: &od}, changed: make(chan struct{}, 1)}
	st := &nodeState{addr: "n"}
	fail := &transport.Error{Addr: "n", Op: transport.OpCall, Err: context.DeadlineExceeded}
	for _, tc := range []struct {
		err        error
		wantStreak int32
	}{
		{fail, 1},
		{fail, 2},
		{rpc.ServerError("boom"), 0}, // an answer
		{fail, 1},
		{&transport.Error{Addr: "n", Op: transport.OpCall, Err: context.Canceled}, 1}, // the caller's
		{fmt.Errorf("wrapped: %w", ErrClosed), 1},
		{&transport.Error{Addr: "n", Op: transport.OpDial, Err: transport.ErrNodeRemoved}, 1},
		{&transport.Error{Addr: "n", Op: transport.OpDial, Err: fmt.Errorf("%w: %w", transport.ErrNodeDown, errors.New("refused"))}, 1},
		{fail, 2},
		{nil, 0},
	} {
		c.record(st, tc.err)
		if got := st.streak.Load(); got != tc.wantStreak {
			t.Fatalf("after %v: streak = %d, want %d", tc.err, got, tc.wantStreak)
		}
		if st.tripped.Load() {
			t.Fatalf("tripped below the threshold, after %v", tc.err)
		}
	}
	for i := 0; i < 3; i++ {
		c.record(st, fail)
	}
	if !st.tripped.Load() {
		t.Fatal("not tripped after 3 failures in a row")
	}
	select {
	case <-c.changed:
	default:
		t.Fatal("the follower was not signalled")
	}
	if err := st.lastErr.Load(); err == nil || !errors.Is(*err, context.DeadlineExceeded) {
		t.Fatalf("lastErr = %v, want the deadline", err)
	}
}

// A health check turns a node unhealthy after exactly Unhealthy failures
// in a row, and healthy again after exactly Healthy passes in a row.
func TestJudgeThresholds(t *testing.T) {
	hc := HealthCheck{Unhealthy: 3, Healthy: 2}.withDefaults()
	c := &Client{cfg: config{healthCheck: &hc}}
	st := &nodeState{}
	st.healthy.Store(true)
	bad := errors.New("not serving")
	for i, tc := range []struct {
		err         error
		wantChange  bool
		wantHealthy bool
	}{
		{bad, false, true},
		{bad, false, true},
		{nil, false, true}, // the run starts over
		{bad, false, true},
		{bad, false, true},
		{bad, true, false}, // third in a row
		{bad, false, false},
		{nil, false, false},
		{bad, false, false}, // the passes start over
		{nil, false, false},
		{nil, true, true}, // second in a row
		{nil, false, true},
	} {
		if got := c.judge(st, tc.err); got != tc.wantChange {
			t.Fatalf("probe %d (%v): changed = %v, want %v", i, tc.err, got, tc.wantChange)
		}
		if got := st.healthy.Load(); got != tc.wantHealthy {
			t.Fatalf("probe %d (%v): healthy = %v, want %v", i, tc.err, got, tc.wantHealthy)
		}
	}
}

// A probe asks for the end of an ejection only when it began during that
// ejection, passed, and left the node healthy, and KeepEjected is off.
func TestClearEjection(t *testing.T) {
	bad := errors.New("not serving")
	for _, tc := range []struct {
		name    string
		od      *OutlierDetection
		ej      uint64 // the ejection in force as the probe began
		healthy bool   // judge's verdict after the probe
		err     error
		want    bool
	}{
		{"passed during an ejection", &OutlierDetection{}, 3, true, nil, true},
		{"failed", &OutlierDetection{}, 3, true, bad, false},
		{"passed, still judged unhealthy", &OutlierDetection{}, 3, false, nil, false},
		{"begun before the ejection", &OutlierDetection{}, 0, true, nil, false},
		{"KeepEjected", &OutlierDetection{KeepEjected: true}, 3, true, nil, false},
		{"outlier detection off", nil, 3, true, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &Client{cfg: config{outlier: tc.od}}
			st := &nodeState{}
			st.healthy.Store(tc.healthy)
			if got := c.clearEjection(st, tc.ej, tc.err); got != tc.want {
				t.Fatalf("clearEjection = %v, want %v", got, tc.want)
			}
			want := uint64(0)
			if tc.want {
				want = tc.ej
			}
			if got := st.cleared.Load(); got != want {
				t.Fatalf("cleared = %d, want %d", got, want)
			}
		})
	}
}

// The follower ends the ejection a passed probe cleared, at once and only
// that one: the node is ready again with a new streak (a pending trip
// dropped), and keeps its ejection count, so its next ejection is longer.
// A request for an ejection no longer in force changes nothing.
func TestRefreshEndsClearedEjection(t *testing.T) {
	od := OutlierDetection{BaseEjection: 10 * time.Second, MaxEjection: time.Hour}.withDefaults()
	now := time.Unix(1000, 0)
	c := &Client{
		cfg:     config{outlier: &od, now: func() time.Time { return now }},
		picker:  picker.RoundRobin(),
		changed: make(chan struct{}, 1),
	}
	nodes := []registry.Node{{Addr: "a", Weight: 1}, {Addr: "b", Weight: 1}}
	states := nodeStates{}
	for _, n := range nodes {
		states[n.Addr] = c.newNodeState(n.Addr)
	}
	c.nodes.Store(&nodes)
	c.states.Store(&states)
	a := states["a"]
	readyAddrs := func() (out []string) {
		for _, n := range c.lastReady {
			out = append(out, n.Addr)
		}
		return out
	}

	c.refresh(true)
	a.tripped.Store(true)
	c.refresh(false)
	first := a.ejection.Load()
	if !a.ejected || first == 0 || a.ready || fmt.Sprint(readyAddrs()) != "[b]" {
		t.Fatalf("after the trip: ejected %v (number %d), ready %v, ready set %v; want ejected, b alone ready", a.ejected, first, a.ready, readyAddrs())
	}

	now = now.Add(time.Second)
	a.cleared.Store(first)
	a.streak.Store(1)
	a.tripped.Store(true) // calls in flight at the ejection failed since
	if wake := c.refresh(false); wake != 0 {
		t.Fatalf("refresh wants to run again in %v with no ejection left", wake)
	}
	switch {
	case a.ejected || !a.ready || a.ejection.Load() != 0 || a.cleared.Load() != 0:
		t.Fatalf("after a cleared ejection: ejected %v, ready %v, ejection %d, cleared %d; want back", a.ejected, a.ready, a.ejection.Load(), a.cleared.Load())
	case a.streak.Load() != 0 || a.tripped.Load():
		t.Fatalf("after a cleared ejection: streak %d, tripped %v; want a new streak", a.streak.Load(), a.tripped.Load())
	case fmt.Sprint(readyAddrs()) != "[a b]":
		t.Fatalf("the picker's ready set is %v, want [a b]", readyAddrs())
	case a.multiplier(now, &od) != 1 || !a.backAt.Equal(now):
		t.Fatalf("ejection count %d, back at %v; want 1 kept, back at %v", a.multiplier(now, &od), a.backAt, now)
	}

	now = now.Add(time.Second)
	a.tripped.Store(true)
	c.refresh(false)
	if !a.ejected || a.ejections != 2 || a.until.Sub(now) != 20*time.Second {
		t.Fatalf("ejected again: %v, %d ejections for %v; want the second, for 20s", a.ejected, a.ejections, a.until.Sub(now))
	}
	a.cleared.Store(first) // a probe of the first ejection, judged late
	c.refresh(false)
	if !a.ejected || a.ready {
		t.Fatal("a probe of an earlier ejection ended the one in force")
	}
}
