package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/lbrpc/lbrpc/bench"
)

// simRow is one row of the simulation's table.
type simRow struct {
	Scenario, Picker string
	P50, P99, P999   time.Duration
	Errors           int
	Share0           float64 // node 0's share of the calls, 0..1
}

// simTest is the test of package picker that runs every simulated picker in
// every scenario (picker/sim_test.go) and logs the table parsed here.
const simTest = "TestSimulationTable"

// simulate runs the 100-node simulation of package picker and returns its
// table.
//
// The simulation (internal/sim) is deterministic only with pickers whose
// clock and random numbers it controls, and the hook that makes them so
// (picker.Virtualize) is compiled into package picker's tests alone. So the
// numbers come from those tests, the ones that assert on them, run with
// the go command: the same table, to the digit, that the test suite checks.
func simulate(ctx context.Context) ([]simRow, error) {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		return nil, fmt.Errorf("simulation: %w (use -sim=false to skip it)", err)
	}
	cmd := exec.CommandContext(ctx, goCmd, "test", "-run", "^"+simTest+"$", "-v", "./picker")
	cmd.Dir = bench.RepoRoot()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("simulation: go test ./picker: %w\n%s", err, out.Bytes())
	}
	rows, err := parseSimTable(out.String())
	if err != nil {
		return nil, fmt.Errorf("simulation: %w\n%s", err, out.Bytes())
	}
	return rows, nil
}

// parseSimTable reads the rows of the table TestSimulationTable logs:
//
//	scenario                 picker                     p50        p99       p999  errors   node 0
//	one node 10x slow        LeastLoaded              8.5ms    28.32ms    41.11ms       0   0.027%
func parseSimTable(out string) ([]simRow, error) {
	if !strings.Contains(out, "--- PASS: "+simTest) {
		return nil, fmt.Errorf("%s did not run or did not pass", simTest)
	}
	var rows []simRow
	header := false
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "scenario" && f[1] == "picker" {
			header = true
			continue
		}
		if !header || len(f) < 7 || !strings.HasSuffix(f[len(f)-1], "%") {
			continue
		}
		n := len(f)
		r := simRow{Scenario: strings.Join(f[:n-6], " "), Picker: f[n-6]}
		var err error
		if r.P50, err = time.ParseDuration(f[n-5]); err != nil {
			return nil, fmt.Errorf("row %q: %w", strings.TrimSpace(line), err)
		}
		if r.P99, err = time.ParseDuration(f[n-4]); err != nil {
			return nil, fmt.Errorf("row %q: %w", strings.TrimSpace(line), err)
		}
		if r.P999, err = time.ParseDuration(f[n-3]); err != nil {
			return nil, fmt.Errorf("row %q: %w", strings.TrimSpace(line), err)
		}
		if r.Errors, err = strconv.Atoi(f[n-2]); err != nil {
			return nil, fmt.Errorf("row %q: %w", strings.TrimSpace(line), err)
		}
		pct, err := strconv.ParseFloat(strings.TrimSuffix(f[n-1], "%"), 64)
		if err != nil {
			return nil, fmt.Errorf("row %q: %w", strings.TrimSpace(line), err)
		}
		r.Share0 = pct / 100
		rows = append(rows, r)
	}
	if len(rows) == 0 {
		return nil, errors.New("no table in the output of " + simTest)
	}
	return rows, nil
}

func findSim(rows []simRow, sc, pk string) (simRow, bool) {
	for _, r := range rows {
		if r.Scenario == sc && r.Picker == pk {
			return r, true
		}
	}
	return simRow{}, false
}
