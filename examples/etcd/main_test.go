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
		`(?m)^server-1: serving on (\S+), registered as /lbrpc/services/greeter/\S+$`,
		`(?m)^client discovered 2 nodes$`,
		`(?m)^10 calls: server-1 answered 5, server-2 answered 5$`,
		`(?m)^client now has 1 node: server-2\n10 calls: server-2 answered 10\n\z`,
	} {
		if !regexp.MustCompile(want).MatchString(out.String()) {
			t.Errorf("output does not match %s:\n%s", want, out.String())
		}
	}
}
