package main

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestRunTiny runs the benchmark in a tiny configuration against real
// loopback servers, writes the section into a document that has other
// sections, and checks what it wrote.
func TestRunTiny(t *testing.T) {
	cfg := defaultConfig()
	cfg.Calls = 300
	cfg.Workers = 8
	cfg.Scenarios = []string{"healthy", "slow"}
	cfg.Pickers = []string{"RoundRobin", "LeastLoaded"}
	cfg.Sim = false
	cfg.TargetRounds = 3
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(rep.Results), 4; got != want {
		t.Fatalf("got %d results, want %d", got, want)
	}
	for _, res := range rep.Results {
		if res.Calls != cfg.Calls || res.Errors != 0 {
			t.Errorf("%s, %s: %d calls, %d errors; want %d calls, no error (first: %s)", res.Scenario, res.Picker, res.Calls, res.Errors, cfg.Calls, res.FirstErr)
		}
		if !(res.P50 > 0 && res.P50 <= res.P99 && res.P99 <= res.P999) {
			t.Errorf("%s, %s: percentiles p50 %v, p99 %v, p99.9 %v out of order", res.Scenario, res.Picker, res.P50, res.P99, res.P999)
		}
	}
	if len(rep.Target) != cfg.TargetRounds {
		t.Errorf("target measured %d times (%v), want %d", len(rep.Target), rep.Target, cfg.TargetRounds)
	}
	h, _ := rep.find("healthy", "LeastLoaded")
	s, _ := rep.find("slow", "LeastLoaded")
	if want := float64(s.P99) / float64(h.P99); len(rep.Target) == 0 || rep.Target[0] != want {
		t.Errorf("target rounds %v, want the run's own ratio %.3f first", rep.Target, want)
	}
	rr, _ := rep.find("slow", "RoundRobin")
	ll, _ := rep.find("slow", "LeastLoaded")
	t.Logf("slow node's share: RoundRobin %.3f, LeastLoaded %.3f", rr.Share[0], ll.Share[0])
	if ll.Share[0] >= rr.Share[0] {
		t.Errorf("LeastLoaded sent the slow node %.3f of the calls, RoundRobin %.3f: want LeastLoaded's below", ll.Share[0], rr.Share[0])
	}

	dir := t.TempDir()
	doc, svg := filepath.Join(dir, "benchmarks.md"), filepath.Join(dir, "balance.svg")
	const before, after = "# Benchmarks\n\nSomeone else's text.\n\n<!-- compare:begin -->\nnot ours\n<!-- compare:end -->\n", "\n## Later\n\nkept\n"
	if err := os.WriteFile(doc, []byte(before), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := write(rep, "go run ./bench/cmd/balance -test", doc, svg); err != nil {
		t.Fatal(err)
	}
	// Text after the section stays too, and a second run replaces the
	// section instead of adding one.
	b, err := os.ReadFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(doc, append(b, after...), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := write(rep, "go run ./bench/cmd/balance -test", doc, svg); err != nil {
		t.Fatal(err)
	}
	b, err = os.ReadFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	got := string(b)
	if !strings.HasPrefix(got, before) || !strings.HasSuffix(got, after) {
		t.Errorf("the text around the section changed:\n%s", got)
	}
	for _, want := range []string{
		heading, beginMarker, endMarker,
		"### Target, measured in this run",
		"median of 3 rounds of the two cells",
		"### Loopback: all nodes healthy",
		"### Loopback: one node 10× slower",
		"![p99 latency by picker and scenario, loopback](balance.svg)",
		"### What the numbers say",
	} {
		if n := strings.Count(got, want); n != 1 {
			t.Errorf("the document has %q %d times, want once", want, n)
		}
	}
	for _, want := range []string{ // once per scenario
		"| picker | calls | calls/s | p50 | p99 | p99.9 | p99 ÷ healthy | errors | node 0 | ejected |",
		"| RoundRobin | 300 |",
		"| LeastLoaded | 300 |",
	} {
		if n := strings.Count(got, want); n != len(cfg.Scenarios) {
			t.Errorf("the document has %q %d times, want %d", want, n, len(cfg.Scenarios))
		}
	}

	chart, err := os.ReadFile(svg)
	if err != nil {
		t.Fatal(err)
	}
	if err := wellFormed(chart); err != nil {
		t.Errorf("chart: %v", err)
	}
	if n := bytes.Count(chart, []byte("<rect ")); n < 1+2+4 { // background, legend, bars
		t.Errorf("chart has %d rects, want a background, 2 legend keys and 4 bars", n)
	}
}

func wellFormed(b []byte) error {
	d := xml.NewDecoder(bytes.NewReader(b))
	for {
		_, err := d.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func TestUpdateDocUnbalanced(t *testing.T) {
	doc := filepath.Join(t.TempDir(), "b.md")
	if err := os.WriteFile(doc, []byte("x\n"+endMarker+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := updateDoc(doc, "section"); err == nil {
		t.Error("updateDoc with an end marker only: no error")
	}
}

func TestParseSimTable(t *testing.T) {
	const out = `=== RUN   TestSimulationTable
    sim_test.go:173: 
        scenario                 picker                     p50        p99       p999  errors   node 0
        healthy                  RoundRobin              8.47ms     28.2ms    39.87ms       0   1.000%
        one node 10x slow        Random                  9.12ms   2.04142s  10.27172s       0   1.116%
        one node fails 50% fast  LeastLoaded             8.47ms    28.17ms    39.13ms     182   0.796%
        
--- PASS: TestSimulationTable (0.48s)
PASS
`
	rows, err := parseSimTable(out)
	if err != nil {
		t.Fatal(err)
	}
	want := []simRow{
		{"healthy", "RoundRobin", 8470 * time.Microsecond, 28200 * time.Microsecond, 39870 * time.Microsecond, 0, 0.01},
		{"one node 10x slow", "Random", 9120 * time.Microsecond, 2041420 * time.Microsecond, 10271720 * time.Microsecond, 0, 0.01116},
		{"one node fails 50% fast", "LeastLoaded", 8470 * time.Microsecond, 28170 * time.Microsecond, 39130 * time.Microsecond, 182, 0.00796},
	}
	if len(rows) != len(want) {
		t.Fatalf("got %d rows, want %d: %+v", len(rows), len(want), rows)
	}
	for i := range want {
		g, w := rows[i], want[i]
		if g.Scenario != w.Scenario || g.Picker != w.Picker || g.P50 != w.P50 || g.P99 != w.P99 || g.P999 != w.P999 || g.Errors != w.Errors ||
			g.Share0 < w.Share0-1e-9 || g.Share0 > w.Share0+1e-9 {
			t.Errorf("row %d = %+v, want %+v", i, g, w)
		}
	}
	if _, err := parseSimTable(strings.Replace(out, "--- PASS", "--- FAIL", 1)); err == nil {
		t.Error("a failed test's output parsed without error")
	}
}

// TestRateCountsSuccesses checks that calls/s counts successful calls
// only, as compare does.
func TestRateCountsSuccesses(t *testing.T) {
	for _, tc := range []struct {
		calls, errs int
		elapsed     time.Duration
		want        float64
	}{
		{calls: 100, errs: 0, elapsed: time.Second, want: 100},
		{calls: 100, errs: 40, elapsed: time.Second, want: 60},
		{calls: 100, errs: 100, elapsed: time.Second, want: 0},
		{calls: 10, errs: 0, elapsed: 0, want: 0},
	} {
		if got := (result{Calls: tc.calls, Errors: tc.errs, Elapsed: tc.elapsed}).Rate(); got != tc.want {
			t.Errorf("%d calls, %d errors in %v: Rate %v, want %v", tc.calls, tc.errs, tc.elapsed, got, tc.want)
		}
	}
}

// TestTargetsWithoutHealthyP99 checks that a healthy cell with no
// successful call (p99 zero) writes no infinite or undefined ratio.
func TestTargetsWithoutHealthyP99(t *testing.T) {
	r := &report{Config: defaultConfig(), Results: []result{
		{Scenario: "healthy", Picker: "LeastLoaded", Calls: 10, Errors: 10},
		{Scenario: "slow", Picker: "LeastLoaded", Calls: 10, P99: time.Millisecond},
	}}
	var b strings.Builder
	r.targets(func(format string, args ...any) { fmt.Fprintf(&b, format, args...) })
	if s := b.String(); strings.Contains(s, "Inf") || strings.Contains(s, "NaN") {
		t.Errorf("targets wrote an undefined ratio:\n%s", s)
	}
}
