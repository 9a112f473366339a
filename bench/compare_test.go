package bench_test

import (
	"bytes"
	"context"
	"encoding/xml"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/lbrpc/lbrpc/bench"
)

// serveEnv makes the test binary the server process: the harness re-executes
// it with this variable set to the number of nodes.
const serveEnv = "LBRPC_BENCH_SERVE_NODES"

func TestMain(m *testing.M) {
	if n := os.Getenv(serveEnv); n != "" {
		nodes, _ := strconv.Atoi(n)
		bench.ServeMain(nodes)
	}
	goleak.VerifyTestMain(m)
}

// serverCmd re-executes the test binary as the server process, recording
// the command so the test can check that the process was reaped.
func serverCmd(cmds *[]*exec.Cmd) func(int) *exec.Cmd {
	return func(n int) *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), serveEnv+"="+strconv.Itoa(n))
		*cmds = append(*cmds, cmd)
		return cmd
	}
}

// TestRunTiny runs the whole harness in a tiny configuration: a separate
// server process, every kind of client, the healthy and kill scenarios,
// two rounds of 200 ms cells; then renders the doc and the chart.
func TestRunTiny(t *testing.T) {
	var cmds []*exec.Cmd
	var log bytes.Buffer
	cfg := bench.Config{
		Duration:    200 * time.Millisecond,
		Warmup:      50 * time.Millisecond,
		Rounds:      2,
		Concurrency: []int{4},
		Clients:     []string{bench.Raw, bench.LBRPCFull, bench.LBRPCNoCoalesce, bench.GoKit, bench.GRPC},
		Scenarios:   []string{bench.Healthy, bench.Kill},
		Server:      serverCmd(&cmds),
		Log:         &log,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rep, err := bench.Run(ctx, cfg)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, log.String())
	}
	if len(cmds) != 1 || cmds[0].ProcessState == nil {
		t.Fatalf("server process not started once and reaped: %v", cmds)
	}
	if got, want := len(rep.Results), 10; got != want {
		t.Fatalf("got %d results, want %d", got, want)
	}
	for _, r := range rep.Results {
		if len(r.Rates) != 2 || r.Calls-r.Failed <= 0 || r.Throughput() <= 0 || r.P50 <= 0 || r.P99 < r.P50 || r.P999 < r.P99 {
			t.Errorf("%s %s: implausible %+v", r.Scenario, r.Client, r)
		}
		if r.Scenario == bench.Healthy && r.Failed != 0 {
			t.Errorf("%s %s: %d failed calls, first: %s", r.Scenario, r.Client, r.Failed, r.FirstErr)
		}
	}

	md := rep.Markdown("go test", "chart.svg")
	for _, want := range []string{bench.BeginMarker, bench.EndMarker, "| 4 | net/rpc |", "| 4 | lbrpc-full |", "### Scenario: one node killed", "![Throughput"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	if err := xml.Unmarshal(rep.SVG(), new(struct{})); err != nil {
		t.Errorf("chart is not well-formed XML: %v", err)
	}
}

// TestRunCancelled checks that a run cut short still stops its server process.
func TestRunCancelled(t *testing.T) {
	var cmds []*exec.Cmd
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	_, err := bench.Run(ctx, bench.Config{
		Duration:    time.Second,
		Warmup:      10 * time.Millisecond,
		Rounds:      1,
		Concurrency: []int{2, 2, 2},
		Clients:     []string{bench.Raw},
		Scenarios:   []string{bench.Healthy},
		Server:      serverCmd(&cmds),
	})
	if err == nil {
		t.Fatal("Run after cancel: no error")
	}
	if len(cmds) != 1 || cmds[0].ProcessState == nil {
		t.Fatalf("server process not reaped after cancel")
	}
}

// TestServe drives the server process's control protocol in process.
func TestServe(t *testing.T) {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- bench.Serve(inR, outW, 2); outW.Close() }()
	lines := make(chan string)
	go func() {
		buf := make([]byte, 0, 4096)
		one := make([]byte, 1)
		for {
			if _, err := outR.Read(one); err != nil {
				close(lines)
				return
			}
			if one[0] == '\n' {
				lines <- string(buf)
				buf = buf[:0]
				continue
			}
			buf = append(buf, one[0])
		}
	}()
	if first := <-lines; !strings.Contains(first, `"rpc":["127.0.0.1:`) {
		t.Fatalf("first line %q", first)
	}
	for _, tc := range []struct{ cmd, want string }{
		{"ping", "ok"},
		{"latency * 1ms", "ok"},
		{"latency 1 0s", "ok"},
		{"latency 2 1ms", `error: no node "2"`},
		{"latency 0 -1s", `error: bad duration "-1s"`},
		{"kill 0", "ok"},
		{"kill 0", "ok"},
		{"restart 0", "ok"},
		{"restart 0", "ok"},
		{"explode", `error: unknown command "explode"`},
	} {
		if _, err := io.WriteString(inW, tc.cmd+"\n"); err != nil {
			t.Fatal(err)
		}
		if got := <-lines; got != tc.want {
			t.Errorf("%q: got %q, want %q", tc.cmd, got, tc.want)
		}
	}
	// cpu answers with the process's CPU time in nanoseconds, which only grows.
	var last int64
	for range 2 {
		io.WriteString(inW, "cpu\n")
		got := <-lines
		n, err := strconv.ParseInt(strings.TrimPrefix(got, "ok "), 10, 64)
		if !strings.HasPrefix(got, "ok ") || err != nil || n <= 0 || n < last {
			t.Errorf("cpu: got %q after %d", got, last)
		}
		last = n
	}
	inW.Close()
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
}

// TestKillEveryCell checks that every cell of the kill scenario meets the
// kill with a client of its own: bare lbrpc (no retry) fails calls in every
// round. At c=32 enough calls are in flight on node 0 at the kill for
// outlier detection to eject it for 30 s, so a client kept from one cell to
// the next would not use node 0 again and fail nothing after the first
// round.
func TestKillEveryCell(t *testing.T) {
	var cmds []*exec.Cmd
	var log bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rep, err := bench.Run(ctx, bench.Config{
		Duration:    300 * time.Millisecond,
		Warmup:      30 * time.Millisecond,
		Rounds:      3,
		Concurrency: []int{32},
		Clients:     []string{bench.LBRPC},
		Scenarios:   []string{bench.Kill},
		Server:      serverCmd(&cmds),
		Log:         &log,
	})
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, log.String())
	}
	r, ok := rep.Find(bench.Kill, bench.LBRPC, 32)
	if !ok || len(r.Fails) != 3 {
		t.Fatalf("no result of 3 rounds: %+v", rep.Results)
	}
	for i, f := range r.Fails {
		if f == 0 {
			t.Errorf("round %d: no failed call, so node 0 was not in use when killed (fails by round: %v)\n%s", i+1, r.Fails, log.String())
		}
	}
	if r.SrvCPU <= 0 {
		t.Errorf("server CPU not measured: %v", r.SrvCPU)
	}
}

// TestCostPerSuccessfulCall checks that failed calls do not dilute the
// costs per call.
func TestCostPerSuccessfulCall(t *testing.T) {
	for _, tc := range []struct {
		calls, failed int64
		cpu, want     time.Duration
		allocs        float64
	}{
		{calls: 100, failed: 0, cpu: 100 * time.Microsecond, want: time.Microsecond, allocs: 3},
		{calls: 100, failed: 50, cpu: 100 * time.Microsecond, want: 2 * time.Microsecond, allocs: 6},
		{calls: 10, failed: 10, cpu: time.Millisecond, want: 0, allocs: 0},
		{calls: 0, failed: 0, cpu: 0, want: 0, allocs: 0},
	} {
		r := bench.Result{Calls: tc.calls, Failed: tc.failed, CPU: tc.cpu, SrvCPU: tc.cpu, Mallocs: 300}
		if got := r.CPUPerCall(); got != tc.want {
			t.Errorf("%d calls, %d failed: CPUPerCall %v, want %v", tc.calls, tc.failed, got, tc.want)
		}
		if got := r.ServerCPUPerCall(); got != tc.want {
			t.Errorf("%d calls, %d failed: ServerCPUPerCall %v, want %v", tc.calls, tc.failed, got, tc.want)
		}
		if got := r.AllocsPerCall(); got != tc.allocs {
			t.Errorf("%d calls, %d failed: AllocsPerCall %v, want %v", tc.calls, tc.failed, got, tc.allocs)
		}
	}
}

func TestUpdateDoc(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "docs", "benchmarks.md")
	section := func(s string) string { return bench.BeginMarker + "\n" + s + "\n" + bench.EndMarker }

	// A new file gets the section and an empty micro-benchmark section.
	if err := bench.UpdateDoc(path, section("one")); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	if !strings.Contains(string(got), "one") || !strings.Contains(string(got), "## Core call-path micro-benchmarks (issue 2)") {
		t.Fatalf("new doc:\n%s", got)
	}

	// Only the marked section changes; what others wrote stays.
	others := "# Benchmarks\n\nintro\n\n" + section("old") + "\n\n## Core call-path micro-benchmarks (issue 2)\n\nfilled by someone else\n"
	os.WriteFile(path, []byte(others), 0o644)
	if err := bench.UpdateDoc(path, section("new")); err != nil {
		t.Fatal(err)
	}
	got, _ = os.ReadFile(path)
	want := strings.Replace(others, "old", "new", 1)
	if string(got) != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}

	// A doc without markers gets the section appended.
	os.WriteFile(path, []byte("# Mine\n"), 0o644)
	if err := bench.UpdateDoc(path, section("x")); err != nil {
		t.Fatal(err)
	}
	got, _ = os.ReadFile(path)
	if string(got) != "# Mine\n\n"+section("x")+"\n" {
		t.Errorf("appended: %q", got)
	}

	// Half a pair of markers is an error, and the file is left alone.
	os.WriteFile(path, []byte(bench.BeginMarker+"\n"), 0o644)
	if err := bench.UpdateDoc(path, section("x")); err == nil {
		t.Error("unbalanced markers: no error")
	}
}
