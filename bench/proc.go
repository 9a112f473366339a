package bench

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// serverProc is the server process seen from the harness: Serve running in
// another process, driven over its stdin and stdout.
type serverProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string   // stdout, line by line; closed at EOF
	gone  chan struct{} // closed once the process has been waited for
	addrs Addrs

	mu sync.Mutex // one command at a time
}

// replyTimeout bounds how long the harness waits for the server process to
// start or to answer a command.
const replyTimeout = 10 * time.Second

// startServer starts cmd, which must run Serve, and reads its addresses.
// The process is killed if the harness dies (Linux: Pdeathsig), and exits
// by itself when its stdin closes.
func startServer(cmd *exec.Cmd, stderr io.Writer) (*serverProc, error) {
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if cmd.Stderr == nil {
		cmd.Stderr = stderr
	}
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: starting the server process: %w", err)
	}
	s := &serverProc{cmd: cmd, stdin: stdin, lines: make(chan string, 16), gone: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			s.lines <- sc.Text()
		}
		close(s.lines)
		cmd.Wait() // after the last read, as os/exec requires
		close(s.gone)
	}()
	line, err := s.read()
	if err == nil {
		err = json.Unmarshal([]byte(line), &s.addrs)
	}
	if err == nil && (len(s.addrs.RPC) == 0 || len(s.addrs.RPC) != len(s.addrs.GRPC)) {
		err = fmt.Errorf("bench: server process sent %q", line)
	}
	if err != nil {
		s.close()
		return nil, fmt.Errorf("bench: server process: %w", err)
	}
	return s, nil
}

func (s *serverProc) read() (string, error) {
	t := time.NewTimer(replyTimeout)
	defer t.Stop()
	select {
	case line, ok := <-s.lines:
		if !ok {
			return "", errors.New("server process exited")
		}
		return line, nil
	case <-t.C:
		return "", errors.New("server process did not answer in time")
	}
}

// do sends one command and waits for its answer.
func (s *serverProc) do(format string, args ...any) error {
	_, err := s.ask(fmt.Sprintf(format, args...))
	return err
}

// cpu returns the server process's user+system CPU time so far, as the
// process measures it (getrusage, to the microsecond: /proc's 10 ms ticks
// would swamp a short cell's figure).
func (s *serverProc) cpu() (time.Duration, error) {
	v, err := s.ask("cpu")
	if err != nil {
		return 0, err
	}
	ns, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("bench: server \"cpu\": answer %q", v)
	}
	return time.Duration(ns), nil
}

// ask sends one command and returns what followed "ok" in its answer.
func (s *serverProc) ask(cmd string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := fmt.Fprintln(s.stdin, cmd); err != nil {
		return "", fmt.Errorf("bench: server %q: %w", cmd, err)
	}
	line, err := s.read()
	if err != nil {
		return "", fmt.Errorf("bench: server %q: %w", cmd, err)
	}
	rest, ok := strings.CutPrefix(line, "ok")
	if !ok || (rest != "" && rest[0] != ' ') {
		return "", fmt.Errorf("bench: server %q: %s", cmd, strings.TrimPrefix(line, "error: "))
	}
	return strings.TrimPrefix(rest, " "), nil
}

// close ends the server process: stdin closed (Serve returns), then a kill
// if it has not exited within three seconds. It waits for the process.
func (s *serverProc) close() {
	s.stdin.Close()
	t := time.NewTimer(3 * time.Second)
	defer t.Stop()
	select {
	case <-s.gone:
		return
	case <-t.C:
	}
	s.cmd.Process.Kill()
	// Drain what it printed so the reader can reach EOF and wait.
	for range s.lines {
	}
	<-s.gone
}

// ServeMain is the body of a server process: Serve on os.Stdin and
// os.Stdout, exiting with its status. Binaries that re-execute themselves
// to be the server process call it.
func ServeMain(nodes int) {
	if err := Serve(os.Stdin, os.Stdout, nodes); err != nil {
		fmt.Fprintln(os.Stderr, "bench serve:", err)
		os.Exit(1)
	}
	os.Exit(0)
}
