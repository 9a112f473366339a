// Command balance measures how well each picker balances when the nodes are
// not equal (issue 3): three net/rpc servers on loopback, one of them 10×
// slower, or failing half of its calls, and the same closed-loop load
// through each picker, side by side with the all-healthy case. It also
// reports the deterministic 100-node simulation of package picker. It
// writes the section between the balance markers of docs/benchmarks.md and
// the chart docs/benchmarks-balance.svg.
//
//	go run ./bench/cmd/balance            # about 45 s on 2 cores: writes the doc and the chart
//	go run ./bench/cmd/balance -quick     # about 10 s: prints the section only
//
// The servers run in this process: what is measured is where the calls go
// and what latency and errors follow, not the client's CPU cost (that is
// bench/cmd/compare's job).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/lbrpc/lbrpc/bench"
)

func main() {
	if err := mainErr(); err != nil {
		fmt.Fprintln(os.Stderr, "balance:", err)
		os.Exit(1)
	}
}

func mainErr() error {
	def := defaultConfig()
	root := bench.RepoRoot()
	var (
		quick     = flag.Bool("quick", false, "a short run: fewer calls per cell; prints the section instead of writing the doc unless -out is given")
		calls     = flag.Int("calls", def.Calls, "calls per cell (scenario × picker)")
		workers   = flag.Int("workers", def.Workers, "closed loop: goroutines calling back to back")
		cellLimit = flag.Duration("cell-limit", def.CellLimit, "a cell stops issuing calls after this long, even short of -calls")
		base      = flag.Duration("base", def.Base, "service time of a healthy call")
		slow      = flag.Int("slow-factor", def.SlowFactor, "how many times slower node 0 is in the slow scenario")
		failPct   = flag.Int("fail-pct", def.FailPct, "percent of node 0's calls that fail in the failing scenarios")
		scens     = flag.String("scenarios", strings.Join(def.Scenarios, ","), "scenarios, comma-separated")
		pickers   = flag.String("pickers", strings.Join(def.Pickers, ","), "pickers, comma-separated")
		sim       = flag.Bool("sim", def.Sim, "also report the 100-node simulation (runs go test in package picker)")
		rounds    = flag.Int("target-rounds", def.TargetRounds, "rounds of LeastLoaded's healthy and slow cells whose median ratio is the target's measure")
		out       = flag.String("out", filepath.Join(root, "docs", "benchmarks.md"), `Markdown file whose balance section is rewritten; "" prints the section instead`)
		svg       = flag.String("svg", filepath.Join(root, "docs", "benchmarks-balance.svg"), `chart file; "" for none`)
	)
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })

	cfg := def
	if *quick {
		cfg = quickConfig()
		if !set["out"] {
			*out = ""
		}
		if !set["svg"] {
			*svg = ""
		}
	}
	if set["calls"] {
		cfg.Calls = *calls
	}
	if set["cell-limit"] {
		cfg.CellLimit = *cellLimit
	}
	if set["target-rounds"] {
		cfg.TargetRounds = *rounds
	}
	cfg.Workers, cfg.Base, cfg.SlowFactor, cfg.FailPct = *workers, *base, *slow, *failPct
	cfg.Scenarios, cfg.Pickers, cfg.Sim = bench.SplitList(*scens), bench.SplitList(*pickers), *sim
	cfg.Log = os.Stderr
	if err := cfg.validate(); err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Fprintf(os.Stderr, "balance: %d scenarios × %d pickers, %d calls per cell, %d workers\n",
		len(cfg.Scenarios), len(cfg.Pickers), cfg.Calls, cfg.Workers)
	rep, err := run(ctx, cfg)
	if err != nil {
		return err
	}
	command := strings.TrimSpace("go run ./bench/cmd/balance " + bench.QuoteArgs(os.Args[1:]))
	return write(rep, command, *out, *svg)
}

// write writes the chart to svg and the section into the document out, or
// prints the section if out is "".
func write(rep *report, command, out, svg string) error {
	chartRef := ""
	if svg != "" {
		var err error
		if chartRef, err = bench.WriteChart(svg, out, rep.SVG()); err != nil {
			return err
		}
		fmt.Fprintln(os.Stderr, "balance: wrote", svg)
	}
	section := rep.Markdown(command, chartRef)
	if out == "" {
		fmt.Println(section)
		return nil
	}
	if err := updateDoc(out, section); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "balance: wrote", out)
	return nil
}

// The markers around the part of docs/benchmarks.md this command owns, and
// the heading it puts them under when the document has none.
const (
	beginMarker = "<!-- balance:begin -->"
	endMarker   = "<!-- balance:end -->"
	heading     = "## Balancing quality (issue 3)"
)

// updateDoc replaces what lies between the balance markers of the Markdown
// file at path with section, keeping the rest of the file byte for byte. A
// file without the markers gets them, under heading, at its end.
func updateDoc(path, section string) error {
	doc := bench.DocSection{Begin: beginMarker, End: endMarker, Heading: heading}
	return doc.Update(path, beginMarker+"\n"+section+"\n"+endMarker)
}
