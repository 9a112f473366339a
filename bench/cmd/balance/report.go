package main

import (
	"bytes"
	"fmt"
	"html"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/lbrpc/lbrpc/bench"
)

// title names scenario id for people.
func (cfg config) title(id string) string {
	switch id {
	case "healthy":
		return "all nodes healthy"
	case "slow":
		return fmt.Sprintf("one node %d× slower", cfg.SlowFactor)
	case "fail-app":
		return fmt.Sprintf("one node fails %d%%, application errors", cfg.FailPct)
	case "fail-transport":
		return fmt.Sprintf("one node fails %d%%, transport errors", cfg.FailPct)
	}
	return id
}

// explain says exactly what scenario id does.
func (cfg config) explain(id string) string {
	base, slow := fmtCfg(cfg.Base), fmtCfg(cfg.Base*time.Duration(cfg.SlowFactor))
	switch id {
	case "healthy":
		return fmt.Sprintf("every node serves a call in %s.", base)
	case "slow":
		return fmt.Sprintf("node 0 serves a call in %s, the others in %s.", slow, base)
	case "fail-app":
		return fmt.Sprintf("node 0 answers %d%% of its calls at once (random per call) with an error, which the client gets as an "+
			"`rpc.ServerError`: the method ran and failed. Its other calls, and every call to the other nodes, take %s.",
			cfg.FailPct, base)
	case "fail-transport":
		return fmt.Sprintf("%d%% of the attempts sent to node 0 (random per attempt) fail at once in the client's transport with "+
			"the error a connection reset gives, a `*transport.Error` (`OpCall`, `ECONNRESET`), injected by a wrapper around the "+
			"default `transport.Pool` before the call is sent; its other attempts reach the server and take %s, as do the other "+
			"nodes' calls. This is a model, not a server fault: over net/rpc's one connection per node, a real reset fails every "+
			"call in flight on that connection and makes the pool redial, which would measure the transport's redial policy "+
			"rather than the picker. It measures how the picker and outlier detection react to attempts that get no answer.",
			cfg.FailPct, base)
	}
	return ""
}

// Markdown renders the report as the body of the balance section: command
// is the command line that made it; chart is the chart's path relative to
// the document, "" for none.
func (r *report) Markdown(command, chart string) string {
	cfg := r.Config
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	m := bench.ThisMachine()

	p("_Written by the command below; everything between the `balance` markers is replaced on each run._\n\n")
	p("%s", bench.RunTable(command, r.Start, r.Took, m))
	if r.Load[0] >= 0 && r.Load[1] >= 0 {
		p("| machine load | 1-minute load average %.1f at the start, %.1f at the end, on %d cores (this program's own load included) |\n",
			r.Load[0], r.Load[1], m.Cores)
	}
	p("| servers | %d stock net/rpc servers (gob over TCP) on 127.0.0.1, in the benchmark's process; a healthy call is served in %s (a sleep; every call at once, no queue); node 0 is the odd one |\n",
		cfg.Nodes, fmtCfg(cfg.Base))
	p("| load | closed loop: %d goroutines calling back to back, %s calls per cell (scenario × picker); a cell stops issuing calls after %s; each call has a %s deadline |\n",
		cfg.Workers, thousands(cfg.Calls), fmtCfg(cfg.CellLimit), fmtCfg(cfg.CallLimit))
	p("| client | a fresh `lbrpc.Client` per cell over `registry.Static` of the %d nodes, with the default options: **outlier detection on** "+
		"(5 attempts in a row without an answer eject a node for 30 s, at most 50%% of the nodes), no retry, no node breaker, no health check, "+
		"no slow start. Rows `-noOD` turn outlier detection off, to show the picker alone. ConsistentHash calls carry one of %s keys, drawn at random. |\n",
		cfg.Nodes, thousands(cfg.Keys))
	p("| figures | latency percentiles (nearest rank) are of the successful calls, timed around `Client.Call`; every call of the fresh client counts, from its first (no warm-up); " +
		"**calls/s** is successful calls over the cell's time, from its first call to its last answer; **errors** are failed calls; **node 0** is node 0's share of the attempts, counted in the client's transport; **p99 ÷ healthy** is the row's p99 over the same picker's p99 in the healthy scenario; " +
		"**ejected** says whether node 0 was ejected when the cell ended |\n\n")

	p("Scenarios (node 0 is also the first node of the set, which PickFirst sticks to):\n\n")
	for _, id := range cfg.Scenarios {
		p("- **%s** (`%s`): %s\n", cfg.title(id), id, cfg.explain(id))
	}
	p("\nRows, each a picker with the default options unless said:\n\n")
	for _, name := range cfg.Pickers {
		pk, _ := findPicker(name)
		if pk.notes != "" {
			p("- **%s**: %s\n", pk.name, pk.notes)
		} else {
			p("- **%s**\n", pk.name)
		}
	}
	p("\n")

	r.targets(p)

	for _, id := range cfg.Scenarios {
		p("### Loopback: %s\n\n", cfg.title(id))
		p("| picker | calls | calls/s | p50 | p99 | p99.9 | p99 ÷ healthy | errors | node 0 | ejected |\n")
		p("|---|---:|---:|---:|---:|---:|---:|---:|---:|:---:|\n")
		for _, pk := range cfg.Pickers {
			res, ok := r.find(id, pk)
			if !ok {
				continue
			}
			ratio := "—"
			if h, ok := r.find("healthy", pk); ok && h.P99 > 0 && res.P99 > 0 {
				ratio = fmt.Sprintf("%.2f", float64(res.P99)/float64(h.P99))
			}
			calls := thousands(res.Calls)
			if res.Capped {
				calls += " (time limit)"
			}
			p("| %s | %s | %s | %s | %s | %s | %s | %s | %.1f%% | %s |\n", pk, calls, thousands(int(res.Rate()+0.5)),
				fmtDur(res.P50), fmtDur(res.P99), fmtDur(res.P999), ratio, errPct(res.Errors, res.Calls), 100*res.Share[0], yesDash(res.Ejected))
		}
		p("\n")
	}
	if chart != "" {
		p("![p99 latency by picker and scenario, loopback](%s)\n\n", chart)
	}

	if len(r.Sim) > 0 {
		r.simSection(p)
	}
	r.interpret(p)

	var errs []string
	for _, id := range cfg.Scenarios {
		var msgs []string
		by := map[string][]string{}
		all := r.findAll(id)
		for _, res := range all {
			if res.FirstErr == "" {
				continue
			}
			if by[res.FirstErr] == nil {
				msgs = append(msgs, res.FirstErr)
			}
			by[res.FirstErr] = append(by[res.FirstErr], res.Picker)
		}
		for _, m := range msgs {
			who := strings.Join(by[m], ", ")
			if len(by[m]) == len(all) {
				who = "every row"
			}
			errs = append(errs, fmt.Sprintf("- %s (%s): `%s`", id, who, m))
		}
	}
	if len(errs) > 0 {
		p("<details><summary>First error of the cells with errors</summary>\n\n%s\n\n</details>\n", strings.Join(errs, "\n"))
	}
	return strings.TrimRight(b.String(), "\n")
}

// targets writes the target, as measured in this run.
func (r *report) targets(p func(string, ...any)) {
	h, ok1 := r.find("healthy", "LeastLoaded")
	s, ok2 := r.find("slow", "LeastLoaded")
	if !ok1 || !ok2 || h.P99 <= 0 { // no p99 without a successful call
		return
	}
	p("### Target, measured in this run\n\n")
	p("| target | measured | met |\n|---|---|:---:|\n")
	ratio := float64(s.P99) / float64(h.P99)
	if len(r.Target) > 1 {
		rounds := make([]string, len(r.Target))
		for i, x := range r.Target {
			rounds[i] = fmt.Sprintf("%.2f", x)
		}
		med := bench.Median(r.Target)
		p("| LeastLoaded's p99 with one node %d× slower ≤ 1.5 × its all-healthy p99 (loopback), median of %d rounds of the two cells | %.2f× (rounds: %s; the tables below are the first) | %s |\n",
			r.Config.SlowFactor, len(r.Target), med, strings.Join(rounds, ", "), yesNo(med <= 1.5))
	} else {
		p("| LeastLoaded's p99 with one node %d× slower ≤ 1.5 × its all-healthy p99 (loopback) | %s against %s: %.2f× | %s |\n",
			r.Config.SlowFactor, fmtDur(s.P99), fmtDur(h.P99), ratio, yesNo(ratio <= 1.5))
	}
	if rr, ok := r.find("healthy", "RoundRobin"); ok && rr.P99 > 0 {
		p("| (the same against RoundRobin's all-healthy p99) | %s against %s: %.2f× | — |\n",
			fmtDur(s.P99), fmtDur(rr.P99), float64(s.P99)/float64(rr.P99))
	}
	sh, ok1 := findSim(r.Sim, "healthy", "LeastLoaded")
	ss, ok2 := findSim(r.Sim, "one node 10x slow", "LeastLoaded")
	if ok1 && ok2 && sh.P99 > 0 {
		ratio := float64(ss.P99) / float64(sh.P99)
		p("| the same in the 100-node simulation (virtual time, deterministic) | %s against %s: %.2f× | %s |\n",
			fmtDur(ss.P99), fmtDur(sh.P99), ratio, yesNo(ratio <= 1.5))
	}
	p("\n")
}

func (r *report) simSection(p func(string, ...any)) {
	p("### Simulation: 100 nodes, virtual time\n\n")
	p("The deterministic simulation of `internal/sim`, as `picker/sim_test.go` runs it (and asserts on it; " +
		"`go test -run TestSimulation -v ./picker` prints the same table): 100 nodes that each serve 4 calls at once and queue the rest, " +
		"a healthy call taking 5 ms plus an exponential 5 ms; Poisson arrivals at 20,000 calls/s (half the capacity); 50,000 calls, " +
		"the first 5,000 left out while the pickers learn; seeded pickers in virtual time, so every run gives these numbers to the digit. " +
		"Node 0 is the slow one (10× each call) or the failing one (the share of its calls given, failing after 0.5 ms without taking " +
		"a worker, with an error that is not an `rpc.ServerError`: a transport-level failure to LeastLoaded). There is no outlier " +
		"detection: the pickers alone. PickFirst is left out (it does not balance); 1/N is 1%%. " +
		"The figures were made by the test suite's code; see that file for the exact scenarios.\n\n")
	p("| scenario | picker | p50 | p99 | p99.9 | p99 ÷ healthy | errors | node 0 |\n")
	p("|---|---|---:|---:|---:|---:|---:|---:|\n")
	for _, row := range r.Sim {
		ratio := "—"
		if h, ok := findSim(r.Sim, "healthy", row.Picker); ok && h.P99 > 0 {
			ratio = fmt.Sprintf("%.2f", float64(row.P99)/float64(h.P99))
		}
		p("| %s | %s | %s | %s | %s | %s | %s | %.3f%% |\n", row.Scenario, row.Picker,
			fmtDur(row.P50), fmtDur(row.P99), fmtDur(row.P999), ratio, thousands(row.Errors), 100*row.Share0)
	}
	p("\n")
}

// interpret writes what the numbers of this run say, in words chosen by
// the numbers.
func (r *report) interpret(p func(string, ...any)) {
	cfg := r.Config
	var lines []string
	add := func(format string, args ...any) { lines = append(lines, fmt.Sprintf(format, args...)) }
	row := func(sc, pk string) string {
		res, ok := r.find(sc, pk)
		if !ok {
			return ""
		}
		return fmt.Sprintf("%s sent node 0 %.1f%% of the attempts: p99 %s, %s errors", pk, 100*res.Share[0], fmtDur(res.P99), errPct(res.Errors, res.Calls))
	}
	join := func(parts ...string) string {
		var out []string
		for _, s := range parts {
			if s != "" {
				out = append(out, s)
			}
		}
		return strings.Join(out, "; ")
	}
	vsHealthy := func(res result) string {
		if h, ok := r.find("healthy", res.Picker); ok && h.P99 > 0 {
			return fmt.Sprintf(", %.2f× its healthy p99", float64(res.P99)/float64(h.P99))
		}
		return ""
	}

	if len(r.findAll("slow")) > 0 {
		var s strings.Builder
		s.WriteString("**Slow node.** ")
		if rr, ok := r.find("slow", "RoundRobin"); ok {
			fmt.Fprintf(&s, "RoundRobin keeps giving node 0 its turn: %.1f%% of the attempts, so its p99 is the slow node's service time (%s%s). ",
				100*rr.Share[0], fmtDur(rr.P99), vsHealthy(rr))
		}
		if ll, ok := r.find("slow", "LeastLoaded"); ok {
			h, hok := r.find("healthy", "LeastLoaded")
			met := hok && h.P99 > 0 && float64(ll.P99) <= 1.5*float64(h.P99)
			fmt.Fprintf(&s, "LeastLoaded sent it %.1f%% (p99 %s%s): the 1.5× target is %s in this round", 100*ll.Share[0], fmtDur(ll.P99), vsHealthy(ll),
				map[bool]string{true: "met", false: "**not met**"}[met])
			if len(r.Target) > 1 {
				m := bench.Median(r.Target)
				fmt.Fprintf(&s, ", and %s by the median of %d rounds (%.2f×)", map[bool]string{true: "met", false: "**not met**"}[m <= 1.5], len(r.Target), m)
			}
			s.WriteString(". ")
			if !met {
				s.WriteString("A p99 stays clear of a 10× node only if it gets well under 1% of the calls. ")
			}
			if len(ll.Estimates) == cfg.Nodes {
				others := make([]string, 0, cfg.Nodes-1)
				for _, e := range ll.Estimates[1:] {
					others = append(others, fmtDur(e))
				}
				fmt.Fprintf(&s, "When the cell ended, its latency estimates were %s for node 0 and %s for the others, whose calls took %s at the median. ",
					fmtDur(ll.Estimates[0]), strings.Join(others, " and "), fmtDur(ll.P50))
			}
			fmt.Fprintf(&s, "Its cost is a latency estimate × (calls in flight + 1), and each answer enters the estimate divided by 1 + the node's other calls "+
				"in flight: these servers serve every call at once (with %d workers each fast node has about %d calls in flight), so a busy fast node "+
				"costs about its real latency and the idle slow node about ten times that. ", cfg.Workers, cfg.Workers/max(cfg.Nodes-1, 1))
			if sl, ok := findSim(r.Sim, "one node 10x slow", "LeastLoaded"); ok {
				fmt.Fprintf(&s, "In the simulation, whose nodes queue, so that load does raise latency, the same picker sends the slow node %.3f%% of the calls. ", 100*sl.Share0)
			}
		}
		if x := join(row("slow", "LeastRequest"), row("slow", "ConsistentHash"), row("slow", "PickFirst")); x != "" {
			s.WriteString(x + ". ")
		}
		s.WriteString("Outlier detection plays no part: the slow node answers.")
		add("%s", s.String())
	}
	if rr, ok := r.find("fail-app", "RoundRobin"); ok {
		s := fmt.Sprintf("**Failing node, application errors.** %s. An `rpc.ServerError` is an answer (the method ran): by design, outlier detection does not "+
			"count it and LeastLoaded takes its latency as is, without the error penalty, so no picker steers away from a node whose method fails. ",
			join(row("fail-app", "RoundRobin"), row("fail-app", "LeastRequest"), row("fail-app", "LeastLoaded")))
		var drawn []string
		for _, pk := range []string{"LeastRequest", "LeastLoaded"} {
			if res, ok := r.find("fail-app", pk); ok && res.Share[0] > rr.Share[0]+0.02 {
				drawn = append(drawn, pk)
			}
		}
		if len(drawn) > 0 {
			s += fmt.Sprintf("%s sent it more than RoundRobin did: its failed calls end at once, so it has fewer calls in flight. ", strings.Join(drawn, " and "))
		}
		s += "Application errors are the service's to handle; if they mean a sick node, the tool is a node breaker (`WithNodeBreaker`) " +
			"whose `IsSuccessful` counts them as failures (by default it counts them as answers too)."
		add("%s", s)
	}
	if _, ok := r.find("fail-transport", "RoundRobin"); ok {
		var ejected, rows int
		for _, pk := range cfg.Pickers {
			if res, ok := r.find("fail-transport", pk); ok && !strings.HasSuffix(pk, "-noOD") {
				rows++
				if res.Ejected {
					ejected++
				}
			}
		}
		s := fmt.Sprintf("**Failing node, transport errors.** With the default options, outlier detection had ejected node 0 by the end of the cell in %d of %d rows "+
			"(at 50%%, 5 failures in a row take about 62 attempts), so the errors are those made before the ejection, or before the picker steered away: %s. ",
			ejected, rows, join(row("fail-transport", "RoundRobin"), row("fail-transport", "LeastLoaded")))
		rr, ok1 := r.find("fail-transport", "RoundRobin-noOD")
		ll, ok2 := r.find("fail-transport", "LeastLoaded-noOD")
		if ok1 && ok2 {
			s += "Without outlier detection the picker alone decides: " + join(row("fail-transport", "RoundRobin-noOD"), row("fail-transport", "LeastLoaded-noOD")) + ". "
			if ll.Errors*4 < rr.Errors {
				s += "LeastLoaded's error penalty (a failure counts as at least 1 s of latency) keeps the node out after its first failures."
			} else {
				s += "LeastLoaded's error penalty did not keep the node out in this run."
			}
		}
		add("%s", s)
	}
	if len(r.Sim) > 0 {
		s := "**Simulation.** "
		if rr, ok := findSim(r.Sim, "one node 10x slow", "RoundRobin"); ok {
			s += fmt.Sprintf("There a slow node has a tenth of a node's capacity and a queue, so RoundRobin's fair share overloads it and its queue grows for the whole run: p99.9 %s. ", fmtDur(rr.P999))
		}
		if ll, ok := findSim(r.Sim, "one node fails 50% fast", "LeastLoaded"); ok {
			if lr, ok := findSim(r.Sim, "one node fails 50% fast", "LeastRequest"); ok {
				s += fmt.Sprintf("A node failing half its calls fast draws LeastRequest (%.3f%% of the calls, %d errors), while LeastLoaded sends it %.3f%% (%d errors), below 1/N.",
					100*lr.Share0, lr.Errors, 100*ll.Share0, ll.Errors)
			}
		}
		add("%s", s)
	}
	worst := cfg.Calls - int(math.Ceil(0.999*float64(cfg.Calls))) + 1
	add("**Caveats.** One run, on a %d-core machine where the client, the servers and whatever else runs share the cores, so latencies move "+
		"between runs, p99.9 (the %s-worst call of %s) most; the shares and error counts are the steadier part, and the simulation's numbers are exact. "+
		"PickFirst does not balance: it is here to show what it does with a bad first node.",
		bench.ThisMachine().Cores, ordinal(worst), thousands(cfg.Calls))
	p("### What the numbers say\n\n")
	for _, l := range lines {
		p("- %s\n", l)
	}
	p("\n")
}

func (r *report) findAll(sc string) []result {
	var out []result
	for _, res := range r.Results {
		if res.Scenario == sc {
			out = append(out, res)
		}
	}
	return out
}

func ordinal(n int) string {
	suffix := "th"
	switch {
	case n%100 >= 11 && n%100 <= 13:
	case n%10 == 1:
		suffix = "st"
	case n%10 == 2:
		suffix = "nd"
	case n%10 == 3:
		suffix = "rd"
	}
	return strconv.Itoa(n) + suffix
}

// loadAverage returns the 1-minute load average, or -1 if unknown.
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return -1
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return -1
	}
	return v
}

// fmtCfg formats a configured duration, such as 1 ms or 5 s.
func fmtCfg(d time.Duration) string {
	switch {
	case d%time.Second == 0:
		return fmt.Sprintf("%d s", d/time.Second)
	case d%time.Millisecond == 0:
		return fmt.Sprintf("%d ms", d/time.Millisecond)
	case d%time.Microsecond == 0:
		return fmt.Sprintf("%d µs", d/time.Microsecond)
	}
	return d.String()
}

func thousands(n int) string {
	s := strconv.Itoa(n)
	if n < 10000 {
		return s
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func errPct(errs, calls int) string {
	if errs == 0 {
		return "0"
	}
	return fmt.Sprintf("%s (%.1f%%)", thousands(errs), 100*float64(errs)/float64(max(calls, 1)))
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "**no**"
}

func yesDash(b bool) string {
	if b {
		return "yes"
	}
	return "—"
}

// scenarioColors are the chart's colours, one per scenario.
var scenarioColors = map[string]string{
	"healthy":        "#59a14f",
	"slow":           "#f28e2b",
	"fail-app":       "#4e79a7",
	"fail-transport": "#e15759",
}

// SVG renders p99 latency as grouped bars: one group per picker, one bar
// per scenario.
func (r *report) SVG() []byte {
	cfg := r.Config
	const (
		width  = 1080
		height = 470
		left   = 70
		right  = 20
		top    = 90
		bottom = 60
	)
	m := bench.ThisMachine()
	var b bytes.Buffer
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	p(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")
	p(`<text x="%d" y="22" font-size="16" font-weight="bold">p99 latency of successful calls by picker (%d loopback net/rpc nodes, %d workers, %s, %d cores)</text>`+"\n",
		left, cfg.Nodes, cfg.Workers, esc(m.CPU), m.Cores)
	x := left
	for _, sc := range cfg.Scenarios {
		label := cfg.title(sc)
		p(`<rect x="%d" y="36" width="12" height="12" fill="%s"/><text x="%d" y="46">%s</text>`+"\n", x, scenarioColors[sc], x+16, esc(label))
		x += 40 + 7*len(label)
	}
	maxV := 0.0
	for _, res := range r.Results {
		maxV = max(maxV, float64(res.P99))
	}
	target := 0.0
	if h, ok := r.find("healthy", "LeastLoaded"); ok && containsStr(cfg.Scenarios, "slow") {
		target = 1.5 * float64(h.P99)
		maxV = max(maxV, target)
	}
	scale, ticks := bench.NiceScale(maxV / 1e6) // ms
	plotTop, plotBot := float64(top), float64(height-bottom)
	yOf := func(ms float64) float64 { return plotBot - (plotBot-plotTop)*ms/scale }
	for _, t := range ticks {
		y := yOf(t)
		p(`<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>`, left, width-right, y, y)
		p(`<text x="%d" y="%.1f" text-anchor="end">%s ms</text>`+"\n", left-6, y+4, strconv.FormatFloat(t, 'f', -1, 64))
	}
	p(`<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#333"/>`+"\n", left, width-right, plotBot, plotBot)
	plotW := float64(width - left - right)
	groupW := plotW / float64(max(len(cfg.Pickers), 1))
	barW := groupW * 0.8 / float64(max(len(cfg.Scenarios), 1))
	for gi, pk := range cfg.Pickers {
		gx := float64(left) + groupW*float64(gi) + groupW*0.1
		for k, sc := range cfg.Scenarios {
			res, ok := r.find(sc, pk)
			if !ok || res.P99 <= 0 {
				continue
			}
			v := float64(res.P99) / 1e6
			bx, by := gx+barW*float64(k), yOf(v)
			p(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s, %s: p99 %s, node 0 %.1f%%, errors %d</title></rect>`+"\n",
				bx, by, barW-2, plotBot-by, scenarioColors[sc], esc(pk), esc(cfg.title(sc)), esc(fmtDur(res.P99)), 100*res.Share[0], res.Errors)
			cx := bx + barW/2 + 2
			p(`<text x="%.1f" y="%.1f" font-size="9" transform="rotate(-90 %.1f %.1f)">%s</text>`+"\n", cx, by-3, cx, by-3, esc(fmtDur(res.P99)))
		}
		name, sub, _ := strings.Cut(pk, "-")
		if sub == "noOD" {
			sub = "no outlier detection"
		}
		cx := gx + groupW*0.4
		p(`<text x="%.1f" y="%.1f" text-anchor="middle" font-size="11">%s</text>`+"\n", cx, plotBot+16, esc(name))
		if sub != "" {
			p(`<text x="%.1f" y="%.1f" text-anchor="middle" font-size="10" fill="#555">%s</text>`+"\n", cx, plotBot+30, esc(sub))
		}
	}
	if target > 0 {
		y := yOf(target / 1e6)
		p(`<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#333" stroke-dasharray="6 4"/>`+"\n", left, width-right, y, y)
		p(`<line x1="%d" x2="%d" y1="62" y2="62" stroke="#333" stroke-dasharray="6 4"/><text x="%d" y="66" font-size="11">the target for LeastLoaded with a slow node: 1.5 × its healthy p99 = %s</text>`+"\n",
			left, left+28, left+34, esc(fmtDur(time.Duration(target))))
	}
	p("</svg>\n")
	return b.Bytes()
}

func containsStr(xs []string, s string) bool {
	for _, x := range xs {
		if x == s {
			return true
		}
	}
	return false
}

func esc(s string) string { return html.EscapeString(s) }

// fmtDur is bench.FormatDuration to the microsecond: latencies of a
// millisecond or more.
func fmtDur(d time.Duration) string { return bench.FormatDuration(d, 0) }
