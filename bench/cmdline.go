package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// RepoRoot returns the directory of lbrpc's go.mod at or above the working
// directory, or the working directory if there is none ("." if even that is
// unknown). The commands write their documents and charts below it.
func RepoRoot() string {
	wd, err := os.Getwd()
	if err != nil {
		return "."
	}
	for dir := wd; ; {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil &&
			strings.HasPrefix(string(b), "module github.com/lbrpc/lbrpc\n") {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return wd
		}
		dir = parent
	}
}

// SplitList splits a comma-separated flag value into its items, trimmed of
// spaces, leaving out empty ones. It returns nil for a value with no items.
func SplitList(s string) []string {
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// QuoteArgs joins command-line arguments with spaces for a report, quoting
// (Go syntax) those that are empty or hold a space, a quote or a shell
// metacharacter.
func QuoteArgs(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\"'$\\*?") {
			a = strconv.Quote(a)
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}

// Median returns the middle of xs (the mean of the two middle values for an
// even count), 0 for none. xs is not changed.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// FormatDuration writes d for a table: nanoseconds below a microsecond,
// microseconds with usDecimals decimals below a millisecond, then
// milliseconds and seconds with two; "—" for a duration not measured (0 or
// less).
func FormatDuration(d time.Duration, usDecimals int) string {
	switch {
	case d <= 0:
		return "—"
	case d < time.Microsecond:
		return fmt.Sprintf("%d ns", d)
	case d < time.Millisecond:
		return fmt.Sprintf("%.*f µs", usDecimals, float64(d)/1e3)
	case d < time.Second:
		return fmt.Sprintf("%.2f ms", float64(d)/1e6)
	default:
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
}
