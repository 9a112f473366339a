package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"html"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Machine describes where a report was measured.
type Machine struct {
	CPU        string // model name from /proc/cpuinfo, or GOARCH
	Cores      int    // runtime.NumCPU
	GOMAXPROCS int
	OS, Arch   string
	Kernel     string // /proc/sys/kernel/osrelease, if any
	Go         string // runtime.Version
}

// ThisMachine describes the machine it runs on.
func ThisMachine() Machine {
	m := Machine{
		CPU:        runtime.GOARCH,
		Cores:      runtime.NumCPU(),
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		OS:         runtime.GOOS,
		Arch:       runtime.GOARCH,
		Go:         runtime.Version(),
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

// RunTable returns the first rows of a report's Markdown table of facts:
// its header, the command line, the date (UTC) and time taken, the machine
// and the Go version, each row ending in a newline. The caller adds rows of
// its own.
func RunTable(command string, start time.Time, took time.Duration, m Machine) string {
	var b strings.Builder
	fmt.Fprintf(&b, "| | |\n|---|---|\n")
	fmt.Fprintf(&b, "| command | `%s` |\n", command)
	fmt.Fprintf(&b, "| date | %s (took %s) |\n", start.UTC().Format("2006-01-02 15:04 MST"), took.Round(time.Second))
	fmt.Fprintf(&b, "| machine | %s, %d cores (GOMAXPROCS %d), %s/%s", m.CPU, m.Cores, m.GOMAXPROCS, m.OS, m.Arch)
	if m.Kernel != "" {
		fmt.Fprintf(&b, ", kernel %s", m.Kernel)
	}
	fmt.Fprintf(&b, " |\n| Go | %s |\n", m.Go)
	return b.String()
}

// The markers around the part of docs/benchmarks.md that the harness owns.
// Everything outside them is kept as it is.
const (
	BeginMarker = "<!-- compare:begin -->"
	EndMarker   = "<!-- compare:end -->"
)

// UpdateDoc writes section (which must start with BeginMarker and end with
// EndMarker) into the Markdown file at path: in place of the marked section
// if there is one, at the end if the file has none, and into a new file
// (with an empty section for the core micro-benchmarks) if there is no file.
// It is DocSection.Update with the compare markers.
func UpdateDoc(path, section string) error {
	return DocSection{
		Begin:  BeginMarker,
		End:    EndMarker,
		NewDoc: "# Benchmarks\n\n" + BeginMarker + EndMarker + "\n\n## Core call-path micro-benchmarks (issue 2)\n\n_Not written yet._\n",
	}.Update(path, section)
}

var scenarioTitles = map[string]string{
	Healthy: "all nodes healthy",
	Slow:    "one node 10× slower",
	Kill:    "one node killed and restarted mid-cell",
}

var clientNotes = map[string]string{
	Raw:             "`rpc.Client` per node, hand-rolled atomic round robin, `Call`: the ceiling",
	LBRPC:           "`lbrpc.Client`, `picker.RoundRobin`, no middleware",
	LBRPCFull:       "`lbrpc.Client` with `WithTracing` (no-op provider), `WithRateLimit` (1e9/s, Wait), `WithCircuitBreaker`, `WithRetry(2)`; picker: %s",
	GoKit:           "go-kit `sd.FixedEndpointer` → `lb.NewRoundRobin` → `lb.Retry(3, 5s)`, a `circuitbreaker.Gobreaker` (sony/gobreaker v1) per endpoint, net/rpc endpoints (`Go` + select on ctx)",
	LBRPCNoCoalesce: "lbrpc-full with write coalescing off (`transport.WithWriteCoalescing(false)`): one write(2) per request, as net/rpc does",
	GRPC:            "grpc-go, one `ClientConn`, `round_robin` service config, `resolver/manual` with the %d addresses, raw-bytes codec (no protobuf) reusing the reply buffer",
}

// Markdown renders the report as the marked section of docs/benchmarks.md.
// command is the command line that made it; chart is the chart's path
// relative to the document.
func (r *Report) Markdown(command, chart string) string {
	var b strings.Builder
	cfg := r.Config
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("%s\n", BeginMarker)
	p("## lbrpc side by side with raw net/rpc, go-kit and grpc-go (issue 5)\n\n")
	p("_Written by the command below; everything between the `compare` markers is replaced on each run._\n\n")
	p("%s", RunTable(command, r.Start, r.Took, r.Machine))
	p("| servers | %d nodes in a separate process on 127.0.0.1: net/rpc (gob over TCP) and grpc-go, echoing the request |\n", cfg.Nodes)
	p("| payload | %d B request, the same %d B back |\n", cfg.Payload, cfg.Payload)
	p("| cells | %d round(s) of %v measured after %v of warm-up per client, concurrency %s; one client at a time, taking turns |\n",
		cfg.Rounds, cfg.Duration, cfg.Warmup, joinInts(cfg.Concurrency))
	if r.Busy > 0 {
		p("| machine load | %.0f%% of all cores busy during the run; %.0f%% by other processes or stolen by the hypervisor (figures are noisier the higher this is) |\n",
			100*r.Busy, 100*r.Others)
	}
	p("\n")

	p("Clients:\n\n")
	for _, c := range cfg.Clients {
		note := clientNotes[c]
		switch c {
		case LBRPCFull:
			note = fmt.Sprintf(note, FullChainPickerName)
		case GRPC:
			note = fmt.Sprintf(note, cfg.Nodes)
		}
		p("- **%s**: %s.\n", c, note)
	}
	p("\nBoth breakers (lbrpc-full, go-kit) use gobreaker's defaults but a 1 s open state; both retrying clients make at most 3 attempts. ")
	p("Raw net/rpc and go-kit have no reconnect of their own: the harness gives both the same lazy redial (at most one dial per node per %v). ", redialBackoff)
	p("Every cell makes its client afresh (the warm-up is its first calls) and closes it after, so that nothing a client learned in one cell (a node ejected, a breaker open, latencies) carries over to the next: each client meets every kill with its default settings, lbrpc's outlier detection on.\n\n")
	p("Figures: **calls/s** counts successful calls; latency percentiles are of the successful calls (HdrHistogram, 2 significant digits), and **failed** counts the others; ")
	p("**CPU/call** is user+system time of the client process (getrusage) over successful calls, and **server CPU/call** that of the server process (getrusage in that process, read before and after the cell) over the same calls; **allocs/call** is `runtime.MemStats.Mallocs` over successful calls. ")
	p("Costs are per successful call so that failures costing nothing (a client refusing at once while a node is down) do not make the calls that did the work look cheaper. ")
	p("Both include the harness's own loop (two `time.Now` and a histogram record per call), the same for every client. ")
	p("**calls/s** is the median of the rounds, and **rounds' range** the lowest and highest round: a wide range means the machine's other load moved it. ")
	p("**× net/rpc** is the ratio to raw net/rpc in the same scenario and concurrency of this run: for calls/s the median over rounds of the ratio within each round, in which the clients run one after the other, so that the machine changing speed between rounds cancels out; for CPU and allocations, pooled over the rounds.\n\n")

	r.targets(p)
	if chart != "" {
		p("![Throughput by client, scenario and concurrency](%s)\n\n", chart)
	}
	for _, sc := range cfg.Scenarios {
		r.scenarioTable(p, sc)
	}
	p("%s", EndMarker)
	return b.String()
}

func (r *Report) targets(p func(string, ...any)) {
	cfg := r.Config
	const at = 64
	p("### Targets, measured in this run\n\n")
	p("| target | measured | met |\n|---|---|---|\n")
	row := func(target string, got, want float64, ok bool) {
		if !ok {
			p("| %s | not measured | — |\n", target)
			return
		}
		p("| %s | %.2f× | %s |\n", target, got, yesNo(got >= want))
	}
	full, okF := r.Find(Healthy, LBRPCFull, at)
	vsRaw, okR := r.RateRatio(full, Raw)
	vsGRPC, okG := r.RateRatio(full, GRPC)
	row("lbrpc-full ≥ 0.97× raw net/rpc calls/s, healthy, c=64", vsRaw, 0.97, okF && okR)
	row("lbrpc-full ≥ 2.5× grpc-go calls/s, healthy, c=64", vsGRPC, 2.5, okF && okG)
	if raw, ok := r.Find(Healthy, Raw, at); ok && okF {
		p("| (for scale) lbrpc-full CPU per call over raw net/rpc's, healthy, c=64 | %.2f× (%s vs %s) | — |\n",
			safeDiv(float64(full.CPUPerCall()), float64(raw.CPUPerCall())), fmtDur(full.CPUPerCall()), fmtDur(raw.CPUPerCall()))
	}
	if g, ok := r.Find(Healthy, GRPC, at); ok && okF && full.ServerCPUPerCall() > 0 && g.Throughput() > 0 {
		// The servers share the machine with the client: even a client that
		// cost nothing could not make more calls than the cores can serve.
		bound := float64(runtime.NumCPU()) / full.ServerCPUPerCall().Seconds()
		p("| (bound) calls/s of a client costing no CPU, against servers taking lbrpc-full's server CPU per call (%s) on %d cores, over grpc-go's | %.2f× (%s/s) | — |\n",
			fmtDur(full.ServerCPUPerCall()), runtime.NumCPU(), bound/g.Throughput(), fmtRate(bound))
		// Calls/s go as the machine's CPU over the CPU a call takes, client
		// and servers together (every client leaves the cores about as idle
		// as the others): 2.5× grpc-go's calls/s needs 1/2.5 of its cost.
		need := (g.CPUPerCall() + g.ServerCPUPerCall()) * 2 / 5
		p("| (needed) CPU per call, client and servers together, for 2.5× grpc-go's calls/s: grpc-go's (%s + %s) ÷ 2.5, against lbrpc-full's (%s + %s) | %s against %s | — |\n",
			fmtDur(g.CPUPerCall()), fmtDur(g.ServerCPUPerCall()), fmtDur(full.CPUPerCall()), fmtDur(full.ServerCPUPerCall()),
			fmtDur(need), fmtDur(full.CPUPerCall()+full.ServerCPUPerCall()))
	}
	p("\nThe chain's added cost in CPU and allocations, without the network, is measured by `BenchmarkChain` (below).\n\n")

	if !slices.Contains(cfg.Scenarios, Healthy) || len(cfg.Concurrency) < 2 {
		return
	}
	p("Scaling, healthy (calls/s by concurrency; the last column is the highest concurrency over the best, where 1.00 means no flattening or collapse):\n\n")
	p("| client |")
	for _, c := range cfg.Concurrency {
		p(" c=%d |", c)
	}
	p(" c=%d / best |\n|---|", slices.Max(cfg.Concurrency))
	for range cfg.Concurrency {
		p("---:|")
	}
	p("---:|\n")
	for _, cl := range cfg.Clients {
		p("| %s |", cl)
		best, top := 0.0, 0.0
		for _, c := range cfg.Concurrency {
			res, ok := r.Find(Healthy, cl, c)
			if !ok {
				p(" — |")
				continue
			}
			t := res.Throughput()
			best = max(best, t)
			if c == slices.Max(cfg.Concurrency) {
				top = t
			}
			p(" %s |", fmtRate(t))
		}
		p(" %.2f |\n", safeDiv(top, best))
	}
	p("\n")
}

func (r *Report) scenarioTable(p func(string, ...any), sc string) {
	cfg := r.Config
	p("### Scenario: %s\n\n", scenarioTitles[sc])
	switch sc {
	case Slow:
		p("Every node takes %v per call (server-side sleep); node 0 takes %v.\n\n", cfg.SlowBase, cfg.SlowBase*time.Duration(cfg.SlowFactor))
	case Kill:
		p("Node 0's listeners and connections are closed a third into each cell and it listens again on the same ports at two thirds (server process control channel). Failed calls are counted, not retried by the harness.\n\n")
	}
	p("| c | client | calls/s | rounds' range | × net/rpc | p50 | p99 | p99.9 | CPU/call | × net/rpc | server CPU/call | allocs/call | × net/rpc | failed |\n")
	p("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	var errs []string
	for _, c := range cfg.Concurrency {
		raw, hasRaw := r.Find(sc, Raw, c)
		for _, cl := range cfg.Clients {
			res, ok := r.Find(sc, cl, c)
			if !ok {
				continue
			}
			ratio := func(x, y float64) string {
				if !hasRaw || y == 0 {
					return "—"
				}
				return fmt.Sprintf("%.2f", x/y)
			}
			rate := "—"
			if x, ok := r.RateRatio(res, Raw); ok {
				rate = fmt.Sprintf("%.2f", x)
			}
			lo, hi := res.Spread()
			p("| %d | %s | %s | %s–%s | %s | %s | %s | %s | %s | %s | %s | %.1f | %s | %d |\n",
				c, cl, fmtRate(res.Throughput()), fmtRate(lo), fmtRate(hi), rate,
				fmtDur(res.P50), fmtDur(res.P99), fmtDur(res.P999),
				fmtDur(res.CPUPerCall()), ratio(float64(res.CPUPerCall()), float64(raw.CPUPerCall())),
				fmtDur(res.ServerCPUPerCall()),
				res.AllocsPerCall(), ratio(res.AllocsPerCall(), raw.AllocsPerCall()),
				res.Failed)
			if res.FirstErr != "" {
				errs = append(errs, fmt.Sprintf("%s c=%d: %s", cl, c, res.FirstErr))
			}
		}
	}
	p("\n")
	if len(errs) > 0 {
		p("<details><summary>First error of each cell with failures</summary>\n\n")
		for _, e := range errs {
			p("- %s\n", strings.ReplaceAll(e, "|", "\\|"))
		}
		p("\n</details>\n\n")
	}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "**no**"
}

func safeDiv(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, ", ")
}

func fmtRate(x float64) string {
	switch {
	case x >= 1e6:
		return fmt.Sprintf("%.2fM", x/1e6)
	case x >= 1e4:
		return fmt.Sprintf("%.1fk", x/1e3)
	default:
		return fmt.Sprintf("%.0f", x)
	}
}

// clientColors are the chart's colours, one per client.
var clientColors = map[string]string{
	Raw:             "#8c8c8c",
	LBRPC:           "#76b7b2",
	LBRPCFull:       "#4e79a7",
	GoKit:           "#f28e2b",
	GRPC:            "#e15759",
	LBRPCNoCoalesce: "#59a14f",
}

// SVG renders calls/s as grouped bars: one panel per scenario, one group
// per concurrency, one bar per client.
func (r *Report) SVG() []byte {
	cfg := r.Config
	const (
		width   = 960
		panelH  = 260
		top     = 70
		left    = 80
		right   = 20
		bottomM = 46
	)
	height := top + len(cfg.Scenarios)*(panelH+bottomM) + 10
	var b bytes.Buffer
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	p(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")
	p(`<text x="%d" y="22" font-size="16" font-weight="bold">Successful calls/s by client and concurrency (%d nodes, %d B echo, %s, %d cores)</text>`+"\n",
		left, cfg.Nodes, cfg.Payload, xmlEscape(r.Machine.CPU), r.Machine.Cores)
	if cfg.Rounds > 1 {
		p(`<text x="%d" y="46" font-size="11" fill="#555" text-anchor="end">bars: median of %d rounds; lines: lowest to highest round</text>`+"\n", width-right, cfg.Rounds)
	}
	// Legend.
	x := left
	for _, cl := range cfg.Clients {
		p(`<rect x="%d" y="36" width="12" height="12" fill="%s"/><text x="%d" y="46">%s</text>`+"\n", x, clientColors[cl], x+16, xmlEscape(cl))
		x += 30 + 8*len(cl)
	}
	plotW := float64(width - left - right)
	for si, sc := range cfg.Scenarios {
		y0 := float64(top + si*(panelH+bottomM)) // panel top
		maxV := 0.0
		for _, res := range r.Results {
			if res.Scenario == sc {
				_, hi := res.Spread()
				maxV = max(maxV, res.Throughput(), hi)
			}
		}
		scale, ticks := NiceScale(maxV)
		plotTop, plotBot := y0+20, y0+float64(panelH)
		yOf := func(v float64) float64 { return plotBot - (plotBot-plotTop)*v/scale }
		p(`<text x="%d" y="%.0f" font-weight="bold">%s</text>`+"\n", left, y0+12, xmlEscape(scenarioTitles[sc]))
		for _, t := range ticks {
			y := yOf(t)
			p(`<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>`, left, width-right, y, y)
			p(`<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", left-6, y+4, fmtRate(t))
		}
		p(`<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#333"/>`+"\n", left, width-right, plotBot, plotBot)
		groupW := plotW / float64(max(len(cfg.Concurrency), 1))
		barW := groupW * 0.8 / float64(max(len(cfg.Clients), 1))
		for ci, c := range cfg.Concurrency {
			gx := float64(left) + groupW*float64(ci) + groupW*0.1
			for k, cl := range cfg.Clients {
				res, ok := r.Find(sc, cl, c)
				if !ok {
					continue
				}
				v := res.Throughput()
				bx, by := gx+barW*float64(k), yOf(v)
				p(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s, c=%d: %.0f calls/s, p99 %s</title></rect>`+"\n",
					bx, by, barW-2, plotBot-by, clientColors[cl], xmlEscape(cl), c, v, xmlEscape(fmtDur(res.P99)))
				if lo, hi := res.Spread(); len(res.Rates) > 1 {
					cx := bx + barW/2 - 1
					p(`<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#222" stroke-width="1"/>`+"\n", cx, cx, yOf(lo), yOf(hi))
				}
				if barW >= 24 {
					p(`<text x="%.1f" y="%.1f" text-anchor="middle" font-size="9">%s</text>`+"\n", bx+barW/2-1, by-3, fmtRate(v))
				}
			}
			p(`<text x="%.1f" y="%.1f" text-anchor="middle">concurrency %d</text>`+"\n", gx+groupW*0.4, plotBot+16, c)
		}
	}
	p("</svg>\n")
	return b.Bytes()
}

// NiceScale returns a round axis maximum at or above v (1 if v <= 0) and
// the ticks from 0 to it: steps of 1, 2, 2.5 or 5 times a power of ten, at
// most five of them below the maximum. Ticks are rounded to a millionth, so
// that fractional steps print without float noise.
func NiceScale(v float64) (float64, []float64) {
	if v <= 0 {
		return 1, []float64{0, 1}
	}
	step := math.Pow(10, math.Floor(math.Log10(v/4)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if v/(step*m) <= 5 {
			step *= m
			break
		}
	}
	top := math.Ceil(v/step) * step
	var ticks []float64
	for t := 0.0; t <= top+step/2; t += step {
		ticks = append(ticks, math.Round(t*1e6)/1e6)
	}
	return top, ticks
}

func xmlEscape(s string) string { return html.EscapeString(s) }

// fmtDur is FormatDuration at a tenth of a microsecond: client CPU per call
// differs by fractions of one.
func fmtDur(d time.Duration) string { return FormatDuration(d, 1) }
