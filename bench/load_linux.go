package bench

import (
	"os"
	"strconv"
	"strings"
)

// load is a reading of the machine's CPU counters, in clock ticks: all
// cores busy and idle, and the time used by the harness and its server
// process.
type load struct{ busy, idle, irq, ours int64 }

func readLoad(serverPid int) load {
	var l load
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return load{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	for i := 1; i < len(f) && i <= 8; i++ {
		n, _ := strconv.ParseInt(f[i], 10, 64)
		switch i {
		case 4, 5: // idle, iowait
			l.idle += n
		case 6, 7: // irq, softirq: mostly the loopback traffic of the benchmark itself
			l.irq += n
			l.busy += n
		default: // user, nice, system, steal
			l.busy += n
		}
	}
	l.ours = procTicks("self") + procTicks(strconv.Itoa(serverPid))
	return l
}

// procTicks returns a process's user+system time in clock ticks.
func procTicks(pid string) int64 {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	// The command name, in parentheses, may hold spaces: fields count from
	// after it. utime and stime are fields 14 and 15.
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return u + st
}

// since returns the share of the machine's CPU that was busy from l to
// now, and the share used outside the harness and its server process:
// other processes and time stolen by the hypervisor. Interrupt time is
// charged to no process; on loopback it is mostly the benchmark's own
// traffic, so it is not counted as others'.
func (l load) since(now load) (busy, others float64) {
	total := float64((now.busy - l.busy) + (now.idle - l.idle))
	if total <= 0 {
		return 0, 0
	}
	busy = float64(now.busy-l.busy) / total
	others = max(0, float64((now.busy-l.busy)-(now.irq-l.irq)-(now.ours-l.ours))/total)
	return busy, others
}
