package transport_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/rpc"
	"net/rpc/jsonrpc"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lbrpc/lbrpc/internal/rpctest"
	"github.com/lbrpc/lbrpc/transport"
)

// errWire is the error of a wireConn told to fail its writes.
var errWire = errors.New("test: write failed")

// wireDialer dials TCP and wraps each connection to count its Writes, to
// hold one Write at a gate, or to fail them all.
type wireDialer struct {
	writes  atomic.Int64 // Writes made, on every connection
	failing atomic.Bool  // Writes fail with errWire, sending nothing
	held    atomic.Pointer[gate]
}

// gate holds one Write until it is opened or its connection is closed.
type gate struct {
	reached chan struct{} // closed when a Write waits at the gate
	open    chan struct{}
}

// hold makes the next Write, on any connection, wait at the gate returned.
func (d *wireDialer) hold() *gate {
	g := &gate{reached: make(chan struct{}), open: make(chan struct{})}
	d.held.Store(g)
	return g
}

func (d *wireDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &wireConn{Conn: c, d: d, closed: make(chan struct{})}, nil
}

type wireConn struct {
	net.Conn
	d      *wireDialer
	once   sync.Once
	closed chan struct{}
}

func (c *wireConn) Write(p []byte) (int, error) {
	c.d.writes.Add(1)
	if c.d.held.Load() != nil {
		if g := c.d.held.Swap(nil); g != nil {
			close(g.reached)
			select {
			case <-g.open:
			case <-c.closed: // as a write blocked on a full socket is freed
				return 0, net.ErrClosed
			}
		}
	}
	if c.d.failing.Load() {
		return 0, errWire
	}
	return c.Conn.Write(p)
}

func (c *wireConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// countSent wraps a codec to count the requests it has written (into the
// transport's buffer, when they are coalesced).
func countSent(codec transport.Codec, n *atomic.Int64) transport.Codec {
	return func(rwc io.ReadWriteCloser) rpc.ClientCodec {
		return &sentCounter{ClientCodec: codec(rwc), n: n}
	}
}

type sentCounter struct {
	rpc.ClientCodec
	n *atomic.Int64
}

func (c *sentCounter) WriteRequest(r *rpc.Request, body any) error {
	err := c.ClientCodec.WriteRequest(r, body)
	if err == nil {
		c.n.Add(1)
	}
	return err
}

// protocols are the ways the tests reach a server. Tests of what happens
// after the handshake run over the first two only.
var protocols = []struct {
	name      string
	mode      rpctest.Mode
	opts      []transport.Option
	handshake int64 // writes a connection makes before its first request
}{
	{"gob", rpctest.Gob, nil, 0},
	{"jsonrpc", rpctest.JSON, []transport.Option{transport.JSONRPC()}, 0},
	{"http", rpctest.HTTP, []transport.Option{transport.WithHTTP("")}, 1},
}

// safetyNet bounds a test's calls, so that a hung call fails the test with
// context.DeadlineExceeded instead of hanging it. It is never the assertion.
func safetyNet(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// goCall makes one call in a goroutine; the error says whether the reply
// was wrong.
func goCall(ctx context.Context, p *transport.Pool, addr, arg string) <-chan error {
	errc := make(chan error, 1)
	go func() {
		var reply string
		err := p.Call(ctx, addr, "Hello.Say", arg, &reply)
		if want := "hello, " + arg; err == nil && reply != want {
			err = fmt.Errorf("reply %.40q, want %.40q", reply, want)
		}
		errc <- err
	}()
	return errc
}

// callAll makes callers×each calls, callers at a time, each with its own
// argument, so that a reply given to the wrong call would show.
func callAll(t *testing.T, p *transport.Pool, addr string, callers, each int, arg func(g, i int) string) {
	t.Helper()
	ctx := safetyNet(t)
	var wg sync.WaitGroup
	for g := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if err := <-goCall(ctx, p, addr, arg(g, i)); err != nil {
					t.Errorf("caller %d, call %d: %v", g, i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// reached reports whether a Write waits at g.
func reached(g *gate) bool {
	select {
	case <-g.reached:
		return true
	default:
		return false
	}
}

// Concurrent callers on one connection get their own replies; with
// coalescing their requests share writes, without it each takes one.
func TestCoalescingConcurrentCallers(t *testing.T) {
	for _, pr := range protocols {
		for _, on := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/coalesce=%t", pr.name, on), func(t *testing.T) {
				s := rpctest.Start(t, 1, pr.mode)[0]
				var d wireDialer
				p := newPool(t, slices.Concat(pr.opts, []transport.Option{
					transport.WithDialer(d.dial), transport.WithWriteCoalescing(on)})...)
				const callers, each = 64, 20
				callAll(t, p, s.Addr, callers, each, func(g, i int) string { return fmt.Sprintf("%d.%d", g, i) })
				if got := s.Accepts(); got != 1 {
					t.Fatalf("%d connections, want 1", got)
				}
				requests, writes := int64(callers*each), d.writes.Load()-pr.handshake
				t.Logf("%d requests in %d writes", requests, writes)
				switch {
				case on && writes >= requests:
					t.Errorf("%d writes for %d concurrent requests: nothing coalesced", writes, requests)
				case !on && writes != requests:
					t.Errorf("%d writes for %d requests without coalescing, want one each", writes, requests)
				}
			})
		}
	}
}

// A lone caller's requests are written inline, one write each.
func TestCoalescingSerialCallerWritesInline(t *testing.T) {
	for _, pr := range protocols {
		t.Run(pr.name, func(t *testing.T) {
			s := rpctest.Start(t, 1, pr.mode)[0]
			var d wireDialer
			p := newPool(t, append(slices.Clone(pr.opts), transport.WithDialer(d.dial))...)
			const calls = 50
			callAll(t, p, s.Addr, 1, calls, func(_, i int) string { return fmt.Sprint(i) })
			if got := d.writes.Load() - pr.handshake; got != calls {
				t.Fatalf("%d writes for %d serial requests, want one each", got, calls)
			}
		})
	}
}

// Requests made while the connection is busy writing leave together: with
// the flusher held in a write, every request queues, and once the write
// ends the flusher sends them all in one more write.
func TestCoalescingBatchesWhileWriting(t *testing.T) {
	s := rpctest.Start(t, 1, rpctest.JSON)[0]
	var d wireDialer
	var sent atomic.Int64
	p := newPool(t, transport.WithDialer(d.dial), transport.WithCodec(countSent(jsonrpc.NewClientCodec, &sent)))
	ctx := safetyNet(t)

	// One call the server holds, so that the others are never alone.
	s.SetLatency(time.Hour)
	hctx, cancel := context.WithCancel(ctx)
	held := goCall(hctx, p, s.Addr, "held")
	rpctest.Eventually(t, "the held call to reach the server", func() bool { return s.Calls() == 1 })
	s.SetLatency(0)
	if got := d.writes.Load(); got != 1 {
		t.Fatalf("%d writes for the first request, want 1 (inline)", got)
	}

	g := d.hold()
	const n = 16
	errs := make([]<-chan error, n)
	for i := range errs {
		errs[i] = goCall(ctx, p, s.Addr, fmt.Sprint(i))
	}
	rpctest.Eventually(t, "every request to be queued behind the held write", func() bool {
		return reached(g) && sent.Load() == 1+n
	})
	close(g.open)
	for i, errc := range errs {
		if err := <-errc; err != nil {
			t.Errorf("call %d: %v", i, err)
		}
	}
	// The held write took the first request (or more); the rest left in one.
	if got := d.writes.Load() - 1; got > 2 {
		t.Errorf("%d writes for %d requests queued together, want at most 2", got, n)
	}
	cancel()
	if err := <-held; !errors.Is(err, context.Canceled) {
		t.Errorf("held call: err = %v, want context.Canceled", err)
	}
}

// A write error fails the call that made it, the calls pending on the
// connection and the calls after it; none hangs.
func TestCoalescingWriteError(t *testing.T) {
	for _, pr := range protocols[:2] {
		for _, queued := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/queued=%t", pr.name, queued), func(t *testing.T) {
				s := rpctest.Start(t, 1, pr.mode)[0]
				var d wireDialer
				p := newPool(t, slices.Concat(pr.opts, []transport.Option{
					transport.WithDialer(d.dial), transport.WithBackoff(time.Millisecond, 5*time.Millisecond)})...)
				ctx := safetyNet(t)
				if err := <-goCall(ctx, p, s.Addr, "first"); err != nil {
					t.Fatal(err)
				}
				var pending []<-chan error // calls the failed write must end
				if queued {
					// A call the server holds, so that the next requests queue
					// and the flusher's write is the one that fails.
					s.SetLatency(time.Hour)
					pending = append(pending, goCall(ctx, p, s.Addr, "held"))
					rpctest.Eventually(t, "the held call to reach the server", func() bool { return s.Calls() == 2 })
				}
				d.failing.Store(true)
				n := 1
				if queued {
					n = 16
				}
				for i := range n {
					pending = append(pending, goCall(ctx, p, s.Addr, fmt.Sprint(i)))
				}
				for i, errc := range pending {
					err := <-errc
					switch {
					case err == nil:
						t.Errorf("call %d succeeded over a failing connection", i)
					case errors.Is(err, context.DeadlineExceeded):
						t.Errorf("call %d hung", i)
					case !queued && !errors.Is(err, errWire):
						t.Errorf("inline write: err = %v, want the write error", err)
					}
				}
				for i := range 3 {
					err := <-goCall(ctx, p, s.Addr, "later")
					if err == nil || errors.Is(err, context.DeadlineExceeded) {
						t.Errorf("later call %d: err = %v, want a prompt error", i, err)
					}
				}
			})
		}
	}
}

// Closing the pool ends calls in flight, even while the connection is
// stuck in a write (as to a peer that stopped reading), and leaks nothing.
func TestCoalescingCloseInFlight(t *testing.T) {
	for _, pr := range protocols[:2] {
		t.Run(pr.name, func(t *testing.T) {
			s := rpctest.Start(t, 1, pr.mode)[0]
			var d wireDialer
			p := newPool(t, append(slices.Clone(pr.opts), transport.WithDialer(d.dial))...)
			ctx := safetyNet(t)
			if err := <-goCall(ctx, p, s.Addr, "first"); err != nil {
				t.Fatal(err)
			}
			s.SetLatency(time.Hour)
			calls := []<-chan error{goCall(ctx, p, s.Addr, "held")}
			rpctest.Eventually(t, "the held call to reach the server", func() bool { return s.Calls() == 2 })
			g := d.hold()
			for i := range 16 {
				calls = append(calls, goCall(ctx, p, s.Addr, fmt.Sprint(i)))
			}
			rpctest.Eventually(t, "the flusher to be stuck in a write", func() bool { return reached(g) })
			if err := p.Close(); err != nil {
				t.Fatal(err)
			}
			for i, errc := range calls {
				if err := <-errc; !errors.Is(err, transport.ErrClosed) {
					t.Errorf("call %d: err = %v, want ErrClosed", i, err)
				}
			}
		})
	}
}

// Requests larger than the buffers the transport keeps go through, alone
// and concurrently, and the connection serves small ones after them.
func TestCoalescingLargeRequests(t *testing.T) {
	big := strings.Repeat("x", 100<<10)
	for _, pr := range protocols[:2] {
		t.Run(pr.name, func(t *testing.T) {
			s := rpctest.Start(t, 1, pr.mode)[0]
			p := newPool(t, pr.opts...)
			for _, callers := range []int{1, 8} {
				callAll(t, p, s.Addr, callers, 4, func(g, i int) string { return fmt.Sprintf("%d.%d.%s", g, i, big) })
			}
			callAll(t, p, s.Addr, 8, 4, func(g, i int) string { return fmt.Sprintf("%d.%d", g, i) })
			if got := s.Accepts(); got != 1 {
				t.Fatalf("%d connections, want 1", got)
			}
		})
	}
}

func TestWithWriteCoalescingOption(t *testing.T) {
	for _, on := range []bool{true, false} {
		p, err := transport.New(transport.WithWriteCoalescing(on))
		if err != nil {
			t.Fatalf("WithWriteCoalescing(%t): %v", on, err)
		}
		p.Close()
	}
}

// A connection runs a flusher only while it has requests queued: once the
// calls are done, its connection holds no flusher goroutine (a client of
// many nodes holds many idle connections).
func TestCoalescingIdleConnectionHoldsNoFlusher(t *testing.T) {
	s := rpctest.Start(t, 1, rpctest.Gob)[0]
	var d wireDialer
	p := newPool(t, transport.WithDialer(d.dial))
	callAll(t, p, s.Addr, 64, 20, func(g, i int) string { return fmt.Sprintf("%d.%d", g, i) })
	if w := d.writes.Load(); w >= 64*20 {
		t.Fatalf("%d writes for %d concurrent requests: the flusher never ran", w, 64*20)
	}
	rpctest.Eventually(t, "the flusher to return once the queue is empty", func() bool {
		return flushers() == 0
	})
}

// flushers counts the goroutines running a coalescing connection's flusher.
func flushers() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), "transport.(*coalescingConn).flush(")
		}
		buf = make([]byte, 2*len(buf))
	}
}
