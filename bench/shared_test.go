package bench_test

import (
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/lbrpc/lbrpc/bench"
)

// TestDocSectionsShareADoc checks that two programs' sections live in one
// document and that neither Update touches the other's.
func TestDocSectionsShareADoc(t *testing.T) {
	path := filepath.Join(t.TempDir(), "benchmarks.md")
	a := bench.DocSection{Begin: bench.BeginMarker, End: bench.EndMarker}
	b := bench.DocSection{Begin: "<!-- balance:begin -->", End: "<!-- balance:end -->", Heading: "## Balance"}
	block := func(d bench.DocSection, s string) string { return d.Begin + "\n" + s + "\n" + d.End }
	steps := []struct {
		d    bench.DocSection
		body string
		want string
	}{
		{b, "b1", "## Balance\n\n" + block(b, "b1") + "\n"},
		{a, "a1", "## Balance\n\n" + block(b, "b1") + "\n\n" + block(a, "a1") + "\n"},
		{b, "b2", "## Balance\n\n" + block(b, "b2") + "\n\n" + block(a, "a1") + "\n"},
		{a, "a2", "## Balance\n\n" + block(b, "b2") + "\n\n" + block(a, "a2") + "\n"},
	}
	for i, s := range steps {
		if err := s.d.Update(path, block(s.d, s.body)); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != s.want {
			t.Errorf("step %d: got\n%q\nwant\n%q", i, got, s.want)
		}
	}
	if err := b.Update(path, "no markers"); err == nil {
		t.Error("a block without its markers: no error")
	}
}

func TestSplitList(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{" , ,", nil},
		{"a", []string{"a"}},
		{" a, b ,,c ", []string{"a", "b", "c"}},
	} {
		if got := bench.SplitList(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("SplitList(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestQuoteArgs(t *testing.T) {
	got := bench.QuoteArgs([]string{"-quick", "", "-c", "1, 4", "a*"})
	if want := `-quick "" -c "1, 4" "a*"`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestNiceScale(t *testing.T) {
	for _, tc := range []struct {
		v     float64
		top   float64
		ticks []float64
	}{
		{0, 1, []float64{0, 1}},
		{9, 10, []float64{0, 2, 4, 6, 8, 10}},
		{0.7, 0.8, []float64{0, 0.2, 0.4, 0.6, 0.8}},
		{37000, 40000, []float64{0, 10000, 20000, 30000, 40000}},
	} {
		top, ticks := bench.NiceScale(tc.v)
		if top != tc.top || !slices.Equal(ticks, tc.ticks) {
			t.Errorf("NiceScale(%v) = %v, %v; want %v, %v", tc.v, top, ticks, tc.top, tc.ticks)
		}
	}
}

func TestWriteChart(t *testing.T) {
	dir := t.TempDir()
	svg := filepath.Join(dir, "docs", "img", "c.svg")
	ref, err := bench.WriteChart(svg, filepath.Join(dir, "docs", "b.md"), []byte("<svg/>"))
	if err != nil {
		t.Fatal(err)
	}
	if ref != "img/c.svg" {
		t.Errorf("ref = %q, want img/c.svg", ref)
	}
	if b, err := os.ReadFile(svg); err != nil || string(b) != "<svg/>" {
		t.Errorf("chart file: %q, %v", b, err)
	}
	if ref, err := bench.WriteChart(svg, "", nil); err != nil || ref != svg {
		t.Errorf("without a doc: %q, %v; want %q", ref, err, svg)
	}
}

// TestRateRatio checks that ratios pair the rounds: a machine that slows
// down for some rounds moves both clients of those rounds, and the ratio
// stays that of the clients.
func TestRateRatio(t *testing.T) {
	for _, tc := range []struct {
		name       string
		mine, base []float64
		want       float64
		ok         bool
	}{
		// Every round's ratio is 1.2 while the machine's speed changes.
		{"drift", []float64{120, 120, 144, 180, 180}, []float64{100, 100, 120, 150, 150}, 1.2, true},
		// A slow round for each client, not the same one: the median of
		// the round ratios is 1.2, where the medians' ratio would be 1.2
		// only by luck (here 120/100; with one more slow round, not).
		{"outliers", []float64{60, 120, 120, 120, 120}, []float64{100, 50, 100, 100, 100}, 1.2, true},
		{"rounds differ", []float64{1, 2}, []float64{1}, 0, false},
		{"no rounds", nil, nil, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &bench.Report{Results: []bench.Result{
				{Scenario: bench.Healthy, Client: bench.LBRPC, Concurrency: 4, Rates: tc.mine},
				{Scenario: bench.Healthy, Client: bench.Raw, Concurrency: 4, Rates: tc.base},
			}}
			mine, _ := r.Find(bench.Healthy, bench.LBRPC, 4)
			got, ok := r.RateRatio(mine, bench.Raw)
			if ok != tc.ok || (ok && math.Abs(got-tc.want) > 1e-9) {
				t.Fatalf("RateRatio = %v, %v; want %v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
	r := &bench.Report{Results: []bench.Result{{Scenario: bench.Healthy, Client: bench.LBRPC, Concurrency: 4, Rates: []float64{1}}}}
	mine, _ := r.Find(bench.Healthy, bench.LBRPC, 4)
	if _, ok := r.RateRatio(mine, bench.GRPC); ok {
		t.Fatal("RateRatio against a client not measured: ok = true")
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		xs   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{2}, 2},
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		in := slices.Clone(tc.xs)
		if got := bench.Median(tc.xs); got != tc.want {
			t.Errorf("Median(%v) = %v, want %v", tc.xs, got, tc.want)
		}
		if !slices.Equal(in, tc.xs) {
			t.Errorf("Median reordered its argument: %v, was %v", tc.xs, in)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		us   int
		want string
	}{
		{0, 1, "—"},
		{-time.Second, 0, "—"},
		{850, 1, "850 ns"},
		{7250 * time.Nanosecond, 1, "7.2 µs"},
		{7250 * time.Nanosecond, 0, "7 µs"},
		{1550 * time.Microsecond, 0, "1.55 ms"},
		{2500 * time.Millisecond, 1, "2.50 s"},
	} {
		if got := bench.FormatDuration(tc.d, tc.us); got != tc.want {
			t.Errorf("FormatDuration(%v, %d) = %q, want %q", tc.d, tc.us, got, tc.want)
		}
	}
}
