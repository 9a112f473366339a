package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lbrpc/lbrpc"
	"github.com/lbrpc/lbrpc/picker"
	"github.com/lbrpc/lbrpc/registry"
	"github.com/lbrpc/lbrpc/transport"
)

// config is one run's settings.
type config struct {
	Nodes      int           // servers; node 0 is the slow or failing one
	Calls      int           // calls per cell (scenario × picker)
	Workers    int           // closed loop: goroutines calling back to back
	CellLimit  time.Duration // a cell stops issuing calls after this, even short of Calls
	CallLimit  time.Duration // each call's deadline
	Base       time.Duration // service time of a healthy call
	SlowFactor int           // node 0 is this many times slower in the slow scenario
	FailPct    int           // node 0 fails this share of calls, in percent, in the failing scenarios
	Keys       int           // ConsistentHash: calls carry one of this many random keys
	Scenarios  []string      // ids from scenarios
	Pickers    []string      // names from pickerSpecs
	Sim        bool          // also run the 100-node simulation (go test in package picker)
	// TargetRounds is how many times the target is measured: the
	// healthy and slow cells of LeastLoaded, the run's own included. One
	// run's ratio hangs on a fraction of a percent of the calls; the median
	// of several does not.
	TargetRounds int
	Log          io.Writer // progress; nil for none
}

func defaultConfig() config {
	return config{
		Nodes:      3,
		Calls:      10000,
		Workers:    16,
		CellLimit:  5 * time.Second,
		CallLimit:  2 * time.Second,
		Base:       time.Millisecond,
		SlowFactor: 10,
		FailPct:    50,
		Keys:       10000,
		Scenarios:  scenarioIDs(),
		Pickers:    pickerNames(),
		Sim:        true,

		TargetRounds: 7,
	}
}

func quickConfig() config {
	c := defaultConfig()
	c.Calls = 2000
	c.CellLimit = time.Second
	c.TargetRounds = 3
	return c
}

// scenario is one state of the three nodes.
type scenario struct {
	id    string
	title string
	// set configures the servers and returns the transport's fault
	// injection: the node whose attempts fail before they are sent, and
	// the share that fails in percent (0 for none).
	set func(cfg config, ss []*server) (failAddr string, failPct int)
}

var scenarios = []scenario{
	{"healthy", "all nodes healthy", func(cfg config, ss []*server) (string, int) {
		return "", 0
	}},
	{"slow", "one node 10× slower", func(cfg config, ss []*server) (string, int) {
		ss[0].latency.Store(int64(cfg.Base) * int64(cfg.SlowFactor))
		return "", 0
	}},
	{"fail-app", "one node fails 50%: application errors", func(cfg config, ss []*server) (string, int) {
		ss[0].failPct.Store(int64(cfg.FailPct))
		return "", 0
	}},
	{"fail-transport", "one node fails 50%: transport errors", func(cfg config, ss []*server) (string, int) {
		return ss[0].addr, cfg.FailPct
	}},
}

func scenarioIDs() []string {
	out := make([]string, len(scenarios))
	for i, s := range scenarios {
		out[i] = s.id
	}
	return out
}

func findScenario(id string) (scenario, bool) {
	for _, s := range scenarios {
		if s.id == id {
			return s, true
		}
	}
	return scenario{}, false
}

// pickerSpec is one row of the tables: a picker and the client options
// around it.
type pickerSpec struct {
	name  string
	new   func() picker.Picker
	keys  bool // calls carry random keys (picker.WithKey)
	noOD  bool // outlier detection off
	notes string
}

var pickerSpecs = []pickerSpec{
	{name: "RoundRobin", new: picker.RoundRobin, notes: "the baseline row"},
	{name: "Random", new: picker.Random},
	{name: "LeastRequest", new: picker.LeastRequest},
	{name: "LeastLoaded", new: func() picker.Picker { return picker.LeastLoaded() }, notes: "the client's default"},
	{name: "WeightedRoundRobin", new: picker.WeightedRoundRobin, notes: "every weight 1"},
	{name: "PickFirst", new: picker.PickFirst, notes: "node 0, the slow or failing one, is first"},
	{name: "ConsistentHash", new: func() picker.Picker { return picker.ConsistentHash() }, keys: true, notes: "each call carries a key drawn at random (`picker.WithKey`)"},
	{name: "RoundRobin-noOD", new: picker.RoundRobin, noOD: true, notes: "outlier detection off: the picker alone"},
	{name: "LeastLoaded-noOD", new: func() picker.Picker { return picker.LeastLoaded() }, noOD: true, notes: "outlier detection off: the picker alone"},
}

// extraPickers can be named with -pickers but are not run by default.
var extraPickers = []pickerSpec{
	{name: "LeastLoaded-decay100ms", new: func() picker.Picker { return picker.LeastLoaded(picker.WithDecay(100 * time.Millisecond)) },
		notes: "picker.WithDecay(100ms): the latency average forgets a peak within the cell"},
}

func pickerNames() []string {
	out := make([]string, len(pickerSpecs))
	for i, p := range pickerSpecs {
		out[i] = p.name
	}
	return out
}

func extraNames() []string {
	out := make([]string, len(extraPickers))
	for i, p := range extraPickers {
		out[i] = p.name
	}
	return out
}

func findPicker(name string) (pickerSpec, bool) {
	for _, p := range slices.Concat(pickerSpecs, extraPickers) {
		if p.name == name {
			return p, true
		}
	}
	return pickerSpec{}, false
}

// result is one cell's measurement.
type result struct {
	Scenario, Picker string
	Calls            int             // calls made
	Errors           int             // calls that failed
	Elapsed          time.Duration   // from the first call to the last answer
	Capped           bool            // stopped by CellLimit before Calls
	P50, P99, P999   time.Duration   // of successful calls
	Share            []float64       // each node's share of the attempts
	Ejected          bool            // node 0 was ejected when the cell ended
	Estimates        []time.Duration // the picker's latency estimate of each node when the cell ended (LeastLoaded), else nil
	FirstErr         string
}

// Rate is the cell's successful calls per second, as compare counts them:
// a picker whose calls fail fast must not look faster for it.
func (r result) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Calls-r.Errors) / r.Elapsed.Seconds()
}

// report is one run's results.
type report struct {
	Config  config
	Start   time.Time
	Took    time.Duration
	Load    [2]float64 // 1-minute load average at start and end; -1 if unknown
	Results []result
	Sim     []simRow
	// Target holds LeastLoaded's slow-cell p99 over its healthy-cell p99,
	// one per round (see config.TargetRounds); the first is the run's own.
	Target []float64
}

func (r *report) find(sc, pk string) (result, bool) {
	for _, res := range r.Results {
		if res.Scenario == sc && res.Picker == pk {
			return res, true
		}
	}
	return result{}, false
}

func (cfg config) validate() error {
	if cfg.Nodes < 2 || cfg.Calls < 1 || cfg.Workers < 1 || cfg.CellLimit <= 0 || cfg.CallLimit <= 0 ||
		cfg.Base <= 0 || cfg.SlowFactor < 1 || cfg.FailPct < 0 || cfg.FailPct > 100 || cfg.Keys < 1 || cfg.TargetRounds < 1 {
		return errors.New("bad configuration")
	}
	if len(cfg.Scenarios) == 0 || len(cfg.Pickers) == 0 {
		return errors.New("no scenario or no picker")
	}
	for _, s := range cfg.Scenarios {
		if _, ok := findScenario(s); !ok {
			return fmt.Errorf("unknown scenario %q (have %v)", s, scenarioIDs())
		}
	}
	for _, p := range cfg.Pickers {
		if _, ok := findPicker(p); !ok {
			return fmt.Errorf("unknown picker %q (have %v and %v)", p, pickerNames(), extraNames())
		}
	}
	return nil
}

// run measures every picker in every scenario, one cell at a time, and the
// simulation if cfg.Sim.
func run(ctx context.Context, cfg config) (*report, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	rep := &report{Config: cfg, Start: time.Now()}
	rep.Load[0] = loadAverage()
	if cfg.Sim {
		// First: it takes a second or two and fails early if it is broken.
		rows, err := simulate(ctx)
		if err != nil {
			return nil, err
		}
		rep.Sim = rows
	}
	ss, err := startServers(cfg.Nodes)
	if err != nil {
		return nil, err
	}
	defer stopServers(ss)
	for _, id := range cfg.Scenarios {
		for _, name := range cfg.Pickers {
			res, err := runCell(ctx, cfg, ss, id, name)
			if err != nil {
				return nil, err
			}
			rep.Results = append(rep.Results, res)
		}
	}
	h, ok1 := rep.find("healthy", "LeastLoaded")
	s, ok2 := rep.find("slow", "LeastLoaded")
	if ok1 && ok2 && h.P99 > 0 {
		rep.Target = append(rep.Target, float64(s.P99)/float64(h.P99))
		for range cfg.TargetRounds - 1 {
			h, err := runCell(ctx, cfg, ss, "healthy", "LeastLoaded")
			if err != nil {
				return nil, err
			}
			s, err := runCell(ctx, cfg, ss, "slow", "LeastLoaded")
			if err != nil {
				return nil, err
			}
			if h.P99 > 0 {
				rep.Target = append(rep.Target, float64(s.P99)/float64(h.P99))
			}
		}
	}
	rep.Load[1] = loadAverage()
	rep.Took = time.Since(rep.Start)
	return rep, nil
}

// runCell sets the servers up for scenario id and measures picker name.
func runCell(ctx context.Context, cfg config, ss []*server, id, name string) (result, error) {
	if err := ctx.Err(); err != nil {
		return result{}, err
	}
	sc, _ := findScenario(id)
	pk, _ := findPicker(name)
	for _, s := range ss {
		s.latency.Store(int64(cfg.Base))
		s.failPct.Store(0)
	}
	failAddr, failPct := sc.set(cfg, ss)
	runtime.GC() // the previous cell's garbage is not this one's pause
	res, err := cell(ctx, cfg, ss, pk, failAddr, failPct)
	if err != nil {
		return result{}, fmt.Errorf("%s, %s: %w", sc.id, pk.name, err)
	}
	res.Scenario = sc.id
	if cfg.Log != nil {
		fmt.Fprintf(cfg.Log, "balance: %-14s %-18s %6d calls %8.0f/s  p50 %-9s p99 %-9s p999 %-9s errors %-5d node 0 %5.1f%%%s%s\n",
			sc.id, pk.name, res.Calls, res.Rate(), fmtDur(res.P50), fmtDur(res.P99), fmtDur(res.P999),
			res.Errors, 100*res.Share[0], map[bool]string{true: " (time limit)"}[res.Capped], fmtEstimates(res.Estimates))
	}
	return res, nil
}

// cell runs cfg.Calls calls (or as many as fit in cfg.CellLimit) through a
// fresh client with picker pk, from cfg.Workers goroutines calling back to
// back.
func cell(ctx context.Context, cfg config, ss []*server, pk pickerSpec, failAddr string, failPct int) (result, error) {
	pool, err := transport.New()
	if err != nil {
		return result{}, err
	}
	addrs := make([]string, len(ss))
	for i, s := range ss {
		addrs[i] = s.addr
	}
	tr := newCountingPool(pool, addrs, failAddr, failPct)
	opts := []lbrpc.Option{
		lbrpc.WithRegistry(registry.Static(addrs...)),
		lbrpc.WithPicker(pk.new()),
		lbrpc.WithTransport(tr),
	}
	if pk.noOD {
		opts = append(opts, lbrpc.WithOutlierDetection(lbrpc.OutlierDetection{Disable: true}))
	}
	c, err := lbrpc.New(opts...)
	if err != nil {
		pool.Close()
		return result{}, err
	}
	defer c.Close()

	var (
		issued   atomic.Int64
		wg       sync.WaitGroup
		mu       sync.Mutex
		lat      = make([]time.Duration, 0, cfg.Calls)
		errs     int
		firstErr string
	)
	start := time.Now()
	deadline := start.Add(cfg.CellLimit)
	for range cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var (
				mine  = make([]time.Duration, 0, cfg.Calls/cfg.Workers+1)
				nerr  int
				first string
			)
			for ctx.Err() == nil && time.Now().Before(deadline) {
				i := issued.Add(1)
				if i > int64(cfg.Calls) {
					break
				}
				callCtx, cancel := context.WithTimeout(ctx, cfg.CallLimit)
				if pk.keys {
					callCtx = picker.WithKey(callCtx, "user-"+strconv.Itoa(rand.IntN(cfg.Keys)))
				}
				var reply int
				t0 := time.Now()
				err := c.Call(callCtx, "Work.Do", int(i), &reply)
				d := time.Since(t0)
				cancel()
				if err != nil {
					nerr++
					if first == "" {
						first = err.Error()
					}
					continue
				}
				mine = append(mine, d)
			}
			mu.Lock()
			lat = append(lat, mine...)
			errs += nerr
			if firstErr == "" {
				firstErr = first
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := ctx.Err(); err != nil {
		return result{}, err
	}

	slices.Sort(lat)
	res := result{
		Picker:   pk.name,
		Calls:    len(lat) + errs,
		Errors:   errs,
		Elapsed:  elapsed,
		Capped:   len(lat)+errs < cfg.Calls,
		P50:      quantile(lat, 0.5),
		P99:      quantile(lat, 0.99),
		P999:     quantile(lat, 0.999),
		Share:    tr.shares(),
		FirstErr: firstErr,
	}
	est, known := make([]time.Duration, len(addrs)), false
	for _, st := range c.State() {
		i, ok := tr.index[st.Addr]
		if !ok {
			continue
		}
		if i == 0 {
			res.Ejected = st.Ejected
		}
		est[i] = st.Latency
		known = known || st.Latency > 0
	}
	if known {
		res.Estimates = est
	}
	return res, nil
}

// fmtEstimates formats a picker's latency estimates for the log.
func fmtEstimates(es []time.Duration) string {
	if len(es) == 0 {
		return ""
	}
	s := make([]string, len(es))
	for i, e := range es {
		s[i] = fmtDur(e)
	}
	return "  estimates " + strings.Join(s, ", ")
}

// quantile returns the q-quantile of sorted (nearest rank), 0 if empty:
// the same definition as the simulation's.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// countingPool is the default transport, counting the attempts sent to each
// node and, for one node, failing a share of them before they are sent:
// the fault injection of the fail-transport scenario. Embedding the pool
// keeps its optional abilities (transport.Health, State) for the client.
type countingPool struct {
	*transport.Pool
	index    map[string]int // immutable
	attempts []atomic.Int64
	failAddr string
	failPct  int
}

func newCountingPool(p *transport.Pool, addrs []string, failAddr string, failPct int) *countingPool {
	c := &countingPool{Pool: p, index: make(map[string]int, len(addrs)), attempts: make([]atomic.Int64, len(addrs)),
		failAddr: failAddr, failPct: failPct}
	for i, a := range addrs {
		c.index[a] = i
	}
	return c
}

// errReset is the injected failure's cause.
var errReset = syscall.ECONNRESET

// Call counts the attempt and, for the failing node, fails it at once with
// the *transport.Error a connection reset gives, or carries it.
func (c *countingPool) Call(ctx context.Context, addr, serviceMethod string, args, reply any) error {
	if i, ok := c.index[addr]; ok && serviceMethod == "Work.Do" {
		c.attempts[i].Add(1)
	}
	if c.failPct > 0 && addr == c.failAddr && rand.IntN(100) < c.failPct {
		return &transport.Error{Addr: addr, Op: transport.OpCall, Err: errReset}
	}
	return c.Pool.Call(ctx, addr, serviceMethod, args, reply)
}

// shares returns each node's share of the attempts counted.
func (c *countingPool) shares() []float64 {
	out := make([]float64, len(c.attempts))
	var total int64
	for i := range c.attempts {
		total += c.attempts[i].Load()
	}
	for i := range c.attempts {
		if total > 0 {
			out[i] = float64(c.attempts[i].Load()) / float64(total)
		}
	}
	return out
}

var _ transport.Health = (*countingPool)(nil)
