package main

import (
	"regexp"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRun(t *testing.T) {
	var out strings.Builder
	if err := run(&out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	for _, want := range []string{
		`(?m)^calls made\s+300$`,
		`(?m)^succeeded\s+300$`,
		`(?m)^failed\s+0$`,
		`(?m)^retries\s+\d+$`,
		`(?m)^latency p50\s+\S+$`,
		`(?m)^latency p99\s+\S+$`,
		`(?m)^spans recorded\s+[1-9]\d* `,
		`(?m)^metrics recorded\s+300 calls, 3\d\d attempts, [23] ready nodes of 3 now$`,
		`(?m)^  \S+ \(1ms\)\s+\d+\s+\d+\s+\d+$`,
		`(?m)^  \S+ \(2ms, killed\)\s+\d+\s+\d+\s+\d+$`,
		`(?m)^verdict: all 300 calls succeeded although one node died half way$`,
	} {
		if !regexp.MustCompile(want).MatchString(out.String()) {
			t.Errorf("output does not match %s:\n%s", want, out.String())
		}
	}
}
