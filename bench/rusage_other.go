//go:build !unix

package bench

import "time"

// cpuTime is not measured here: CPU per call reads zero.
func cpuTime() time.Duration { return 0 }
