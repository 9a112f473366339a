// Command compare measures lbrpc side by side with raw net/rpc, go-kit and
// grpc-go on loopback, and writes docs/benchmarks.md (the section between
// its compare markers) and docs/benchmarks-throughput.svg.
//
//	go run ./bench/cmd/compare            # about 3 minutes on 2 cores, writes the doc
//	go run ./bench/cmd/compare -quick     # about 20 seconds, prints only
//
// The servers run in a second process: this binary, re-executed as
// "compare serve". It exits when compare does, even if compare is killed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"

	"github.com/lbrpc/lbrpc/bench"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		fs := flag.NewFlagSet("serve", flag.ExitOnError)
		nodes := fs.Int("nodes", 3, "server nodes")
		fs.Parse(os.Args[2:])
		bench.ServeMain(*nodes)
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		os.Exit(1)
	}
}

func run() error {
	def := bench.DefaultConfig()
	root := bench.RepoRoot()
	var (
		quick      = flag.Bool("quick", false, "a ~20 s run: shorter cells; prints the report instead of writing the doc unless -out is given")
		duration   = flag.Duration("duration", def.Duration, "measured time per cell (client × concurrency × scenario)")
		warmup     = flag.Duration("warmup", def.Warmup, "unmeasured calls before each cell")
		rounds     = flag.Int("rounds", def.Rounds, "cells per client, concurrency and scenario (clients take turns; the median counts)")
		conc       = flag.String("c", joinInts(def.Concurrency), "concurrency levels, comma-separated")
		clients    = flag.String("clients", strings.Join(def.Clients, ","), "clients, comma-separated; also "+strings.Join(bench.ExtraClients, ","))
		scenarios  = flag.String("scenarios", strings.Join(def.Scenarios, ","), "scenarios, comma-separated")
		nodes      = flag.Int("nodes", def.Nodes, "server nodes")
		size       = flag.Int("payload", def.Payload, "request bytes (echoed back)")
		slowBase   = flag.Duration("slow-base", def.SlowBase, "slow scenario: every node's service time")
		slowFactor = flag.Int("slow-factor", def.SlowFactor, "slow scenario: how many times slower node 0 is")
		out        = flag.String("out", filepath.Join(root, "docs", "benchmarks.md"), `Markdown file whose compare section is rewritten; "" prints the section instead`)
		svg        = flag.String("svg", filepath.Join(root, "docs", "benchmarks-throughput.svg"), `chart file; "" for none`)
		cpuprofile = flag.String("cpuprofile", "", "write a CPU profile of the client process to this file")
	)
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })

	cfg := def
	if *quick {
		cfg = bench.QuickConfig()
		if !set["out"] {
			*out = ""
		}
		if !set["svg"] {
			*svg = ""
		}
	}
	if set["duration"] {
		cfg.Duration = *duration
	}
	if set["warmup"] {
		cfg.Warmup = *warmup
	}
	if set["rounds"] {
		cfg.Rounds = *rounds
	}
	var err error
	if cfg.Concurrency, err = parseInts(*conc); err != nil {
		return err
	}
	cfg.Clients, cfg.Scenarios = bench.SplitList(*clients), bench.SplitList(*scenarios)
	cfg.Nodes, cfg.Payload, cfg.SlowBase, cfg.SlowFactor = *nodes, *size, *slowBase, *slowFactor
	cfg.Log = os.Stderr
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cfg.Server = func(n int) *exec.Cmd { return exec.Command(self, "serve", "-nodes", strconv.Itoa(n)) }

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	fmt.Fprintf(os.Stderr, "compare: %d clients × %d concurrency levels × %d scenarios × %d rounds, %v per cell\n",
		len(cfg.Clients), len(cfg.Concurrency), len(cfg.Scenarios), cfg.Rounds, cfg.Duration)
	rep, err := bench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	command := strings.TrimSpace("go run ./bench/cmd/compare " + bench.QuoteArgs(os.Args[1:]))
	chartRef := ""
	if *svg != "" {
		if chartRef, err = bench.WriteChart(*svg, *out, rep.SVG()); err != nil {
			return err
		}
		fmt.Fprintln(os.Stderr, "compare: wrote", *svg)
	}
	section := rep.Markdown(command, chartRef)
	if *out == "" {
		fmt.Println(section)
		return nil
	}
	if err := bench.UpdateDoc(*out, section); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "compare: wrote", *out)
	return nil
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range bench.SplitList(s) {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("bad concurrency %q", f)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, errors.New("no concurrency level")
	}
	return out, nil
}

func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}
