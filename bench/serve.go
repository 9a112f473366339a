package bench

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/rpc"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
)

// Addrs is what the server process prints on its first line of output: the
// addresses of its nodes, node i serving net/rpc at RPC[i] and gRPC at
// GRPC[i].
type Addrs struct {
	RPC  []string `json:"rpc"`
	GRPC []string `json:"grpc"`
}

// Serve is the server process. It starts nodes stock servers on 127.0.0.1,
// each a net/rpc server (gob over TCP, rpc.ServeConn) and a gRPC server,
// serving the echo method. It prints their Addrs as one line of JSON on out,
// then obeys the commands read from in, one a line, answering each with
// "ok" (cpu: "ok <nanoseconds>") or "error: <why>":
//
//	latency <i|*> <duration>   delay node i's answers (or every node's)
//	kill <i>                   close node i's listeners and connections
//	restart <i>                listen again on node i's addresses
//	cpu                        the process's user+system CPU time so far (getrusage; 0 where not measured)
//	ping
//
// When in ends (the parent closed it, or died) Serve stops every node and
// returns nil.
func Serve(in io.Reader, out io.Writer, nodes int) error {
	if nodes < 1 {
		return errors.New("bench: serve needs at least one node")
	}
	ns := make([]*serverNode, nodes)
	defer func() {
		for _, n := range ns {
			if n != nil {
				n.kill()
			}
		}
	}()
	var addrs Addrs
	for i := range ns {
		n, err := newServerNode()
		if err != nil {
			return err
		}
		ns[i] = n
		addrs.RPC = append(addrs.RPC, n.rpcAddr)
		addrs.GRPC = append(addrs.GRPC, n.grpcAddr)
	}
	line, err := json.Marshal(addrs)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(out, "%s\n", line); err != nil {
		return err
	}
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		reply := "ok"
		if v, err := command(ns, strings.Fields(sc.Text())); err != nil {
			reply = "error: " + err.Error()
		} else if v != "" {
			reply += " " + v
		}
		if _, err := fmt.Fprintln(out, reply); err != nil {
			return err
		}
	}
	return nil
}

// command runs one control command and returns what its answer carries
// after "ok", if anything.
func command(ns []*serverNode, f []string) (string, error) {
	if len(f) == 0 {
		return "", errors.New("empty command")
	}
	node := func(s string) (*serverNode, error) {
		i, err := strconv.Atoi(s)
		if err != nil || i < 0 || i >= len(ns) {
			return nil, fmt.Errorf("no node %q", s)
		}
		return ns[i], nil
	}
	switch {
	case f[0] == "ping" && len(f) == 1:
		return "", nil
	case f[0] == "cpu" && len(f) == 1:
		return strconv.FormatInt(int64(cpuTime()), 10), nil
	case f[0] == "latency" && len(f) == 3:
		d, err := time.ParseDuration(f[2])
		if err != nil || d < 0 {
			return "", fmt.Errorf("bad duration %q", f[2])
		}
		if f[1] == "*" {
			for _, n := range ns {
				n.latency.Store(int64(d))
			}
			return "", nil
		}
		n, err := node(f[1])
		if err != nil {
			return "", err
		}
		n.latency.Store(int64(d))
		return "", nil
	case f[0] == "kill" && len(f) == 2:
		n, err := node(f[1])
		if err != nil {
			return "", err
		}
		n.kill()
		return "", nil
	case f[0] == "restart" && len(f) == 2:
		n, err := node(f[1])
		if err != nil {
			return "", err
		}
		return "", n.restart()
	}
	return "", fmt.Errorf("unknown command %q", strings.Join(f, " "))
}

// serverNode is one node: a net/rpc server and a gRPC server that can be
// killed and restarted on the same ports.
type serverNode struct {
	rpcAddr, grpcAddr string
	rpc               *rpc.Server
	latency           atomic.Int64 // nanoseconds

	mu    sync.Mutex
	ln    net.Listener // nil while killed
	conns map[net.Conn]struct{}
	gs    *grpc.Server
	wg    sync.WaitGroup // accept loops and connections
}

func newServerNode() (*serverNode, error) {
	n := &serverNode{rpc: rpc.NewServer()}
	if err := n.rpc.RegisterName("Echo", &Echo{n: n}); err != nil {
		return nil, err
	}
	if err := n.listen("127.0.0.1:0", "127.0.0.1:0"); err != nil {
		return nil, err
	}
	return n, nil
}

func (n *serverNode) delay() { sleepFor(time.Duration(n.latency.Load())) }

func (n *serverNode) listen(rpcAddr, grpcAddr string) error {
	ln, err := net.Listen("tcp", rpcAddr)
	if err != nil {
		return err
	}
	gln, err := net.Listen("tcp", grpcAddr)
	if err != nil {
		ln.Close()
		return err
	}
	gs := grpc.NewServer(grpc.ForceServerCodecV2(rawCodec{}))
	gs.RegisterService(&grpcDesc, n)
	n.mu.Lock()
	n.rpcAddr, n.grpcAddr = ln.Addr().String(), gln.Addr().String()
	n.ln, n.gs, n.conns = ln, gs, map[net.Conn]struct{}{}
	n.mu.Unlock()
	n.wg.Add(2)
	go func() {
		defer n.wg.Done()
		gs.Serve(gln) // returns when Stop closes it
	}()
	go n.accept(ln)
	return nil
}

func (n *serverNode) accept(ln net.Listener) {
	defer n.wg.Done()
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		n.mu.Lock()
		if n.conns == nil { // killed between Accept and here
			n.mu.Unlock()
			conn.Close()
			return
		}
		n.conns[conn] = struct{}{}
		n.wg.Add(1)
		n.mu.Unlock()
		go func() {
			defer n.wg.Done()
			n.rpc.ServeConn(conn)
		}()
	}
}

// kill closes the node's listeners and connections, as a crashed process
// would, and waits for its goroutines. It is idempotent.
func (n *serverNode) kill() {
	n.mu.Lock()
	ln, gs, conns := n.ln, n.gs, n.conns
	n.ln, n.gs, n.conns = nil, nil, nil
	n.mu.Unlock()
	if ln == nil {
		return
	}
	ln.Close()
	for c := range conns {
		c.Close()
	}
	gs.Stop()
	n.wg.Wait()
}

// restart listens again on the node's addresses after kill. The ports may
// linger for a moment, so it tries for up to two seconds.
func (n *serverNode) restart() error {
	n.mu.Lock()
	up := n.ln != nil
	n.mu.Unlock()
	if up {
		return nil
	}
	var err error
	for range 100 {
		if err = n.listen(n.rpcAddr, n.grpcAddr); err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return err
}
