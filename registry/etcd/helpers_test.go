package etcd_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/lbrpc/lbrpc/registry"
)

// wait bounds every wait for something to happen in these tests. It is long
// on purpose: the tests poll and never rely on it passing.
const wait = 15 * time.Second

// cluster is a one-member etcd in this process, reached through a proxy that
// can cut clients off.
type cluster struct {
	t     testing.TB
	dir   string
	proxy *proxy

	mu   sync.Mutex
	e    *embed.Etcd
	stop func() // closes e, once
}

// startCluster starts etcd on 127.0.0.1 random ports in a temporary
// directory. Cleanup stops it; clients made afterwards are closed first.
func startCluster(t testing.TB) *cluster {
	t.Helper()
	c := &cluster{t: t, dir: t.TempDir(), proxy: newProxy(t)}
	c.start()
	t.Cleanup(func() {
		c.proxy.close()
		c.mu.Lock()
		defer c.mu.Unlock()
		c.stop()
	})
	return c
}

func (c *cluster) start() {
	c.t.Helper()
	cfg := embed.NewConfig()
	cfg.Dir = c.dir
	local := url.URL{Scheme: "http", Host: "127.0.0.1:0"}
	cfg.ListenClientUrls = []url.URL{local}
	cfg.AdvertiseClientUrls = []url.URL{local}
	cfg.ListenPeerUrls = []url.URL{local}
	cfg.AdvertisePeerUrls = []url.URL{local}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.TickMs, cfg.ElectionMs = 10, 50
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		c.t.Fatalf("start etcd: %v", err)
	}
	stop := sync.OnceFunc(e.Close) // a second Close panics
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(wait):
		stop()
		c.t.Fatal("etcd not ready")
	}
	c.mu.Lock()
	c.e, c.stop = e, stop
	c.mu.Unlock()
	c.proxy.setTarget(e.Clients[0].Addr().String())
}

// fail cuts every client off etcd; restore lets them in again.
func (c *cluster) fail()    { c.proxy.setDown(true) }
func (c *cluster) restore() { c.proxy.setDown(false) }

// restart stops etcd and starts it again on the same data directory, with
// clients cut off in between. hold runs while etcd is down.
func (c *cluster) restart(hold func()) {
	c.t.Helper()
	c.fail() // no open streams, so Close does not wait for them
	c.mu.Lock()
	c.stop()
	c.mu.Unlock()
	if hold != nil {
		hold()
	}
	c.start()
	c.restore()
}

// client returns a client that reaches etcd through the proxy. Its gRPC
// reconnect backoff is short so that tests recover quickly.
func (c *cluster) client(t testing.TB) *clientv3.Client {
	t.Helper()
	return newClient(t, c.proxy.addr())
}

// directClient returns a client that the proxy cannot cut off (until etcd
// stops).
func (c *cluster) directClient(t testing.TB) *clientv3.Client {
	t.Helper()
	c.mu.Lock()
	addr := c.e.Clients[0].Addr().String()
	c.mu.Unlock()
	return newClient(t, addr)
}

func newClient(t testing.TB, addr string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{addr},
		DialTimeout: wait,
		Logger:      zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  20 * time.Millisecond,
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   200 * time.Millisecond,
			},
			MinConnectTimeout: wait,
		})},
	})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// proxy forwards TCP connections to etcd. When down it closes every
// connection and refuses new ones (it accepts and closes them at once).
type proxy struct {
	ln net.Listener
	wg sync.WaitGroup

	mu     sync.Mutex
	target string
	down   bool
	conns  map[net.Conn]struct{}
}

func newProxy(t testing.TB) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) setTarget(addr string) {
	p.mu.Lock()
	p.target = addr
	p.mu.Unlock()
}

func (p *proxy) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for c := range p.conns {
			c.Close()
		}
	}
}

func (p *proxy) close() {
	p.ln.Close()
	p.setDown(true)
	p.wg.Wait()
}

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		down, target := p.down, p.target
		p.mu.Unlock()
		if down {
			c.Close()
			continue
		}
		p.wg.Add(1)
		go p.pipe(c, target)
	}
}

func (p *proxy) pipe(c net.Conn, target string) {
	defer p.wg.Done()
	defer c.Close()
	u, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer u.Close()
	if !p.track(c, u) {
		return
	}
	defer p.untrack(c, u)
	done := make(chan struct{})
	go func() {
		io.Copy(u, c)
		u.Close()
		close(done)
	}()
	io.Copy(c, u)
	c.Close()
	<-done
}

func (p *proxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *proxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		delete(p.conns, c)
	}
}

// result is what one Next returned.
type result struct {
	nodes []registry.Node
	err   error
}

// recorder calls Next in a loop and hands over what it returns.
type recorder struct {
	t    testing.TB
	w    registry.Watcher
	ch   chan result
	done chan struct{}
}

// watch starts a watcher on reg and a recorder for it; cleanup stops both.
func watch(t testing.TB, reg registry.Registry) *recorder {
	t.Helper()
	w, err := reg.Watch(context.Background())
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	r := &recorder{t: t, w: w, ch: make(chan result, 1000), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for {
			nodes, err := w.Next()
			if errors.Is(err, registry.ErrStopped) {
				return
			}
			r.ch <- result{nodes, err}
		}
	}()
	t.Cleanup(r.stop)
	return r
}

func (r *recorder) stop() {
	r.w.Stop()
	<-r.done
}

// next returns the next result, failing the test if none comes in time.
func (r *recorder) next() result {
	r.t.Helper()
	select {
	case res := <-r.ch:
		return res
	case <-time.After(wait):
		r.t.Fatal("Next returned nothing in time")
		return result{}
	}
}

// until reads results until ok accepts one and returns it. Every result it
// reads, accepted or not, goes to check first, if check is not nil.
func (r *recorder) until(what string, ok func(result) bool, check func(result)) result {
	r.t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case res := <-r.ch:
			r.t.Logf("Next: %v, %v", addrsOf(res.nodes), res.err)
			if check != nil {
				check(res)
			}
			if ok(res) {
				return res
			}
		case <-deadline:
			r.t.Fatalf("no %s in time", what)
			return result{}
		}
	}
}

// untilAddrs waits for a snapshot of exactly addrs, in order.
func (r *recorder) untilAddrs(addrs ...string) []registry.Node {
	r.t.Helper()
	return r.until(fmt.Sprint("snapshot ", addrs), func(res result) bool {
		return res.err == nil && slices.Equal(addrsOf(res.nodes), addrs)
	}, nil).nodes
}

func addrsOf(nodes []registry.Node) []string {
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.Addr
	}
	return out
}

// pollKey waits until the value at key satisfies ok.
func pollKey(t testing.TB, cli *clientv3.Client, key string, ok func(*clientv3.GetResponse) bool) *clientv3.GetResponse {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		resp, err := cli.Get(ctx, key)
		cancel()
		if err == nil && ok(resp) {
			return resp
		}
		if time.Now().After(deadline) {
			t.Fatalf("key %s: condition not met in time (last error %v)", key, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
