package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// The scenarios, by the names Config.Scenarios and the report use.
const (
	Healthy = "healthy" // every node answers at once
	Slow    = "slow"    // every node takes SlowBase, node 0 SlowFactor times that
	Kill    = "kill"    // node 0 is killed a third into each cell and restarted at two thirds
)

// AllScenarios lists every scenario in report order.
var AllScenarios = []string{Healthy, Slow, Kill}

// Config is one run of the harness. Zero fields take the defaults of
// DefaultConfig.
type Config struct {
	Nodes       int           // server nodes (default 3)
	Duration    time.Duration // measured time per cell (client × concurrency × scenario × round)
	Warmup      time.Duration // unmeasured calls before each cell
	Rounds      int           // cells per client, concurrency and scenario; clients take turns
	Concurrency []int         // goroutines calling at once
	Clients     []string      // see AllClients
	Scenarios   []string      // see AllScenarios
	Payload     int           // bytes per request, echoed in the reply
	SlowBase    time.Duration // Slow: every node's service time
	SlowFactor  int           // Slow: how many times slower node 0 is

	// Server returns the command that runs the server process: a program
	// that calls ServeMain(nodes) (or Serve). Required.
	Server func(nodes int) *exec.Cmd
	// Log receives one line per cell, and the server process's stderr.
	// Nil means io.Discard.
	Log io.Writer
}

// DefaultConfig is the full run: about three minutes on two cores.
func DefaultConfig() Config {
	return Config{
		Nodes:       3,
		Duration:    500 * time.Millisecond,
		Warmup:      100 * time.Millisecond,
		Rounds:      5,
		Concurrency: []int{1, 16, 64, 256},
		Clients:     AllClients,
		Scenarios:   AllScenarios,
		Payload:     128,
		SlowBase:    time.Millisecond,
		SlowFactor:  10,
	}
}

// QuickConfig is DefaultConfig cut to about twenty seconds: same clients,
// scenarios and concurrency levels, one short round.
func QuickConfig() Config {
	c := DefaultConfig()
	c.Duration, c.Warmup, c.Rounds = 250*time.Millisecond, 60*time.Millisecond, 1
	return c
}

func (c *Config) fill() error {
	d := DefaultConfig()
	if c.Nodes == 0 {
		c.Nodes = d.Nodes
	}
	if c.Duration == 0 {
		c.Duration = d.Duration
	}
	if c.Warmup == 0 {
		c.Warmup = d.Warmup
	}
	if c.Rounds == 0 {
		c.Rounds = d.Rounds
	}
	if c.Concurrency == nil {
		c.Concurrency = d.Concurrency
	}
	if c.Clients == nil {
		c.Clients = d.Clients
	}
	if c.Scenarios == nil {
		c.Scenarios = d.Scenarios
	}
	if c.Payload == 0 {
		c.Payload = d.Payload
	}
	if c.SlowBase == 0 {
		c.SlowBase = d.SlowBase
	}
	if c.SlowFactor == 0 {
		c.SlowFactor = d.SlowFactor
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	switch {
	case c.Server == nil:
		return errors.New("bench: Config.Server is required")
	case c.Nodes < 1 || c.Duration < 0 || c.Warmup < 0 || c.Rounds < 1 || c.Payload < 0 || c.SlowBase < 0 || c.SlowFactor < 1:
		return errors.New("bench: negative or zero setting")
	case c.Nodes < 2 && slices.Contains(c.Scenarios, Kill):
		return errors.New("bench: the kill scenario needs at least two nodes")
	case len(c.Concurrency) == 0 || len(c.Clients) == 0 || len(c.Scenarios) == 0:
		return errors.New("bench: nothing to measure")
	}
	for _, n := range c.Concurrency {
		if n < 1 {
			return fmt.Errorf("bench: concurrency %d", n)
		}
	}
	for _, s := range c.Scenarios {
		if !slices.Contains(AllScenarios, s) {
			return fmt.Errorf("bench: unknown scenario %q (have %v)", s, AllScenarios)
		}
	}
	for _, cl := range c.Clients {
		if !slices.Contains(AllClients, cl) && !slices.Contains(ExtraClients, cl) {
			return fmt.Errorf("bench: unknown client %q (have %v and %v)", cl, AllClients, ExtraClients)
		}
	}
	return nil
}

// Result is one client at one concurrency in one scenario, over every
// round.
type Result struct {
	Scenario    string
	Client      string
	Concurrency int

	Rates    []float64     // successful calls per second of each round, in round order
	Fails    []int64       // failed calls of each round, in round order
	Calls    int64         // calls made in all rounds, failed ones included
	Failed   int64         // calls that returned an error
	Elapsed  time.Duration // measured time, all rounds
	P50      time.Duration // latency percentiles of the successful calls of every round
	P99      time.Duration
	P999     time.Duration
	CPU      time.Duration // user+system CPU of the client process, all rounds
	SrvCPU   time.Duration // user+system CPU of the server process meanwhile (0 where not measured)
	Mallocs  uint64        // heap allocations of the client process, all rounds
	FirstErr string        // the first error, if any
}

// Throughput is the median over rounds of successful calls per second.
func (r Result) Throughput() float64 { return Median(r.Rates) }

// Spread returns the lowest and highest calls per second of the rounds.
func (r Result) Spread() (lo, hi float64) {
	if len(r.Rates) == 0 {
		return 0, 0
	}
	return slices.Min(r.Rates), slices.Max(r.Rates)
}

// OK is the number of successful calls.
func (r Result) OK() int64 { return r.Calls - r.Failed }

// The costs are per successful call: a failure that costs nothing (a
// client refusing at once while a node is down) must not make the calls
// that did the work look cheaper.

// ServerCPUPerCall is the server process's CPU time per successful call, 0
// where it is not measured.
func (r Result) ServerCPUPerCall() time.Duration {
	if r.OK() <= 0 {
		return 0
	}
	return r.SrvCPU / time.Duration(r.OK())
}

// CPUPerCall is the client process's CPU time per successful call.
func (r Result) CPUPerCall() time.Duration {
	if r.OK() <= 0 {
		return 0
	}
	return r.CPU / time.Duration(r.OK())
}

// AllocsPerCall is the client process's heap allocations per successful
// call.
func (r Result) AllocsPerCall() float64 {
	if r.OK() <= 0 {
		return 0
	}
	return float64(r.Mallocs) / float64(r.OK())
}

// Report is the outcome of Run.
type Report struct {
	Config  Config
	Start   time.Time
	Took    time.Duration
	Machine Machine
	Results []Result
	// Busy is how much of the machine's CPU (all cores) was in use during
	// the run, and Others how much of it other processes used, neither the
	// harness nor its server process: other load makes figures noisy.
	// Zero where /proc is not there.
	Busy, Others float64
}

// Find returns a result, or false.
func (r *Report) Find(scenario, client string, conc int) (Result, bool) {
	for _, res := range r.Results {
		if res.Scenario == scenario && res.Client == client && res.Concurrency == conc {
			return res, true
		}
	}
	return Result{}, false
}

// RateRatio is a result's calls/s over another client's in the same
// scenario and concurrency: the median over rounds of the ratio within each
// round. The clients of a round run one after the other, so a change in the
// machine's speed between rounds (the hypervisor moving the VM, a
// neighbour's load) cancels out of a round's ratio, where it would skew a
// ratio of medians. ok is false when the other client was not measured.
func (r *Report) RateRatio(res Result, other string) (ratio float64, ok bool) {
	o, ok := r.Find(res.Scenario, other, res.Concurrency)
	if !ok || len(o.Rates) != len(res.Rates) || len(res.Rates) == 0 {
		return 0, false
	}
	ratios := make([]float64, 0, len(res.Rates))
	for i, x := range res.Rates {
		if o.Rates[i] > 0 {
			ratios = append(ratios, x/o.Rates[i])
		}
	}
	if len(ratios) == 0 {
		return 0, false
	}
	return Median(ratios), true
}

// Run starts the server process, measures every cell, stops the server
// process (also on error or when ctx ends), and returns the report. Cells
// run one after another, so clients never compete with each other.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	rep := &Report{Config: cfg, Start: time.Now(), Machine: ThisMachine()}
	cfg.Log = &syncWriter{w: cfg.Log} // the server's stderr is copied in by another goroutine
	srv, err := startServer(cfg.Server(cfg.Nodes), cfg.Log)
	if err != nil {
		return nil, err
	}
	defer srv.close()
	load0 := readLoad(srv.cmd.Process.Pid)
	h := &harness{cfg: cfg, srv: srv, args: payload(cfg.Payload)}
	h.hists = make([]*hdrhistogram.Histogram, slices.Max(cfg.Concurrency))
	for i := range h.hists {
		h.hists[i] = newHist()
	}
	if err := h.warmServers(ctx); err != nil {
		return rep, err
	}
	for _, sc := range cfg.Scenarios {
		res, err := h.scenario(ctx, sc)
		rep.Results = append(rep.Results, res...)
		if err != nil {
			return rep, fmt.Errorf("bench: scenario %s: %w", sc, err)
		}
	}
	rep.Busy, rep.Others = load0.since(readLoad(srv.cmd.Process.Pid))
	rep.Took = time.Since(rep.Start)
	return rep, nil
}

type harness struct {
	cfg   Config
	srv   *serverProc
	args  []byte
	hists []*hdrhistogram.Histogram // one per worker, reused
}

// newHist records nanoseconds up to 10 s to two significant digits: small
// enough (27 KiB) for one per worker, so workers never share one.
func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(1, int64(10*time.Second), 2) }

// warmServers runs raw calls for a second before the first cell, so that
// the server process's goroutines, stacks and heap have grown before
// anything is measured.
func (h *harness) warmServers(ctx context.Context) error {
	c := newRaw(h.srv.addrs.RPC, h.args)
	defer c.close()
	_, err := h.drive(ctx, c, min(16, len(h.hists)), time.Second, false)
	return err
}

// scenario measures every client at every concurrency of one scenario.
// Every cell gets a client of its own, made for it and closed after it, so
// that nothing one cell taught a client (a node ejected or its breaker
// open after a kill, latencies learned) carries over to the next, and no
// idle client's reconnects are charged to the one measured. At each
// concurrency the clients take turns, round after round, each round
// starting one client later, so that drift in the state of the machine
// during the run favours none of them.
func (h *harness) scenario(ctx context.Context, sc string) ([]Result, error) {
	if err := h.setLatency(sc); err != nil {
		return nil, err
	}
	defer h.srv.do("latency * 0")
	n := len(h.cfg.Clients)
	var out []Result
	for _, conc := range h.cfg.Concurrency {
		res := make([]Result, n)
		all := make([]*hdrhistogram.Histogram, n)
		for i, name := range h.cfg.Clients {
			res[i] = Result{Scenario: sc, Client: name, Concurrency: conc}
			all[i] = newHist()
		}
		for round := range h.cfg.Rounds {
			for k := range n {
				i := (k + round) % n
				if err := ctx.Err(); err != nil {
					return out, err
				}
				name := h.cfg.Clients[i]
				if err := h.freshCell(ctx, name, sc, conc, &res[i], all[i]); err != nil {
					return out, fmt.Errorf("%s c=%d: %w", name, conc, err)
				}
				r := res[i]
				fmt.Fprintf(h.cfg.Log, "%-8s %-10s c=%-4d round %d  %9.0f calls/s  cpu/call %-8v allocs/call %5.1f  failed %d\n",
					sc, r.Client, conc, round+1, r.Rates[len(r.Rates)-1], r.CPUPerCall(), r.AllocsPerCall(), r.Fails[len(r.Fails)-1])
			}
		}
		for i := range res {
			res[i].P50 = time.Duration(all[i].ValueAtQuantile(50))
			res[i].P99 = time.Duration(all[i].ValueAtQuantile(99))
			res[i].P999 = time.Duration(all[i].ValueAtQuantile(99.9))
		}
		out = append(out, res...)
	}
	return out, nil
}

// freshCell makes client name, measures one cell with it, and closes it.
func (h *harness) freshCell(ctx context.Context, name, sc string, conc int, res *Result, all *hdrhistogram.Histogram) error {
	c, err := newCaller(name, h.srv.addrs, h.args)
	if err != nil {
		return err
	}
	defer c.close()
	return h.cell(ctx, c, sc, conc, res, all)
}

// setLatency sets the servers' latency for a scenario.
func (h *harness) setLatency(sc string) error {
	if err := h.srv.do("latency * 0"); err != nil {
		return err
	}
	if sc != Slow {
		return nil
	}
	if err := h.srv.do("latency * %v", h.cfg.SlowBase); err != nil {
		return err
	}
	return h.srv.do("latency 0 %v", h.cfg.SlowBase*time.Duration(h.cfg.SlowFactor))
}

// grace is how long past its end a cell waits for calls in flight before
// cancelling them, and then again before giving up on the cell.
const grace = 5 * time.Second

// cell warms up, then measures conc goroutines calling for the cell's
// duration, adding what it measured to res and the latencies to all. In
// the kill scenario node 0 is killed a third of the way in and restarted at
// two thirds.
func (h *harness) cell(ctx context.Context, c caller, sc string, conc int, res *Result, all *hdrhistogram.Histogram) error {
	if h.cfg.Warmup > 0 {
		if _, err := h.drive(ctx, c, conc, h.cfg.Warmup, false); err != nil {
			return err
		}
	}
	for _, hist := range h.hists[:conc] {
		hist.Reset()
	}
	runtime.GC()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	srv0, err := h.srv.cpu()
	if err != nil {
		return err
	}
	cpu0 := cpuTime()
	var ctl sync.WaitGroup
	var ctlErr error
	stop := make(chan struct{})
	start := time.Now()
	if sc == Kill {
		ctl.Go(func() { ctlErr = h.killRestart(start, stop) })
	}
	w, err := h.drive(ctx, c, conc, h.cfg.Duration, true)
	elapsed := time.Since(start)
	cpu := cpuTime() - cpu0
	runtime.ReadMemStats(&ms1)
	close(stop)
	ctl.Wait()
	srv1, srvErr := h.srv.cpu()
	if err == nil {
		err = srvErr
	}
	if err != nil {
		return err
	}
	if ctlErr != nil {
		return ctlErr
	}
	res.Rates = append(res.Rates, float64(w.calls-w.failed)/elapsed.Seconds())
	res.Fails = append(res.Fails, w.failed)
	res.Calls += w.calls
	res.Failed += w.failed
	res.Elapsed += elapsed
	res.CPU += cpu
	res.SrvCPU += srv1 - srv0
	res.Mallocs += ms1.Mallocs - ms0.Mallocs
	if res.FirstErr == "" {
		res.FirstErr = w.firstErr
	}
	for _, hist := range h.hists[:conc] {
		all.Merge(hist)
	}
	return nil
}

// killRestart kills node 0 a third of the way into the cell that started
// at start and restarts it at two thirds, and restarts it in any case
// before returning. Both times count from start, so that the time the kill
// command takes does not push the restart later.
func (h *harness) killRestart(start time.Time, stop <-chan struct{}) error {
	third := h.cfg.Duration / 3
	t := time.NewTimer(time.Until(start.Add(third)))
	defer t.Stop()
	select {
	case <-t.C:
	case <-stop:
		return nil
	}
	if err := h.srv.do("kill 0"); err != nil {
		return err
	}
	t.Reset(time.Until(start.Add(2 * third)))
	select {
	case <-t.C:
	case <-stop:
	}
	return h.srv.do("restart 0")
}

// tally is what the workers of a cell counted.
type tally struct {
	calls, failed int64
	firstErr      string
}

// drive runs conc goroutines calling c until d has passed, and waits for
// them. Calls still in flight grace after the end are cancelled; if they
// have not returned grace after that, drive gives up with an error.
func (h *harness) drive(ctx context.Context, c caller, conc int, d time.Duration, record bool) (tally, error) {
	cctx, cancel := context.WithCancel(ctx) // no deadline: clients would send it on the wire
	defer cancel()
	stop := time.AfterFunc(d+grace, cancel)
	defer stop.Stop()
	end := time.Now().Add(d)
	tallies := make([]tally, conc)
	var wg sync.WaitGroup
	for i := range conc {
		wg.Go(func() {
			var reply []byte
			var t tally // on the stack: workers share no cache line
			hist := h.hists[i]
			defer func() { tallies[i] = t }()
			for {
				t0 := time.Now()
				if !t0.Before(end) || cctx.Err() != nil {
					return
				}
				err := c.call(cctx, &reply)
				lat := time.Since(t0)
				t.calls++
				if err != nil {
					t.failed++
					if t.firstErr == "" {
						t.firstErr = err.Error()
					}
				}
				if record && err == nil {
					hist.RecordValue(min(int64(lat), hist.HighestTrackableValue()))
				}
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	timeout := time.NewTimer(d + 2*grace)
	defer timeout.Stop()
	select {
	case <-done:
	case <-timeout.C:
		// Calls that ignore ctx (raw net/rpc) end when Run stops the
		// server process, which it does on this error.
		return tally{}, errors.New("calls did not return in time")
	}
	var sum tally
	for _, t := range tallies {
		sum.calls += t.calls
		sum.failed += t.failed
		if sum.firstErr == "" {
			sum.firstErr = t.firstErr
		}
	}
	if ctx.Err() != nil {
		return sum, ctx.Err()
	}
	return sum, nil
}

// syncWriter serialises writes to w.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
