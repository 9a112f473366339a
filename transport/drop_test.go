package transport_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/rpc"
	"net/rpc/jsonrpc"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lbrpc/lbrpc/internal/rpctest"
	"github.com/lbrpc/lbrpc/transport"
)

// gatedDialer records the connections it makes; the first one's Close
// blocks until gate is closed, holding up whoever drops it.
type gatedDialer struct {
	gate    chan struct{}
	inClose chan struct{} // closed when the first connection's Close starts

	mu    sync.Mutex
	conns []*gatedConn
}

func newGatedDialer() *gatedDialer {
	return &gatedDialer{gate: make(chan struct{}), inClose: make(chan struct{})}
}

type gatedConn struct {
	net.Conn
	d      *gatedDialer
	first  bool
	once   sync.Once
	closed atomic.Bool
}

func (c *gatedConn) Close() error {
	if c.first {
		c.once.Do(func() { close(c.d.inClose) })
		<-c.d.gate
	}
	c.closed.Store(true)
	return c.Conn.Close()
}

func (d *gatedDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var nd net.Dialer
	nc, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	c := &gatedConn{Conn: nc, d: d, first: len(d.conns) == 0}
	d.conns = append(d.conns, c)
	return c, nil
}

func (d *gatedDialer) dials() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.conns)
}

// open returns the indexes of the connections not closed.
func (d *gatedDialer) open() []int {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []int
	for i, c := range d.conns {
		if !c.closed.Load() {
			out = append(out, i)
		}
	}
	return out
}

// While a lost connection is being closed, a new one can be dialled and
// answer. Finishing the drop of the old one must neither mark the node
// down (its new connection works) nor dial over the new one and leak it.
func TestDropWhileRedialled(t *testing.T) {
	for _, tc := range []struct {
		name   string
		proven bool // the new connection answers before the old one's drop ends
	}{
		{"new connection not yet proven", false},
		{"new connection proven", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := rpctest.Start(t, 1, rpctest.Gob)[0]
			d := newGatedDialer()
			p := newPool(t, transport.WithDialer(d.dial), transport.WithBackoff(5*time.Millisecond, 10*time.Millisecond))
			var release sync.Once
			t.Cleanup(func() { release.Do(func() { close(d.gate) }) }) // before p.Close, if the test fails early
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var reply string
			if err := p.Call(ctx, s.Addr, "Hello.Say", "x", &reply); err != nil {
				t.Fatal(err)
			}
			s.Kill() // the reader's EOF drops the connection; its Close blocks
			<-d.inClose
			if err := s.Restart(); err != nil {
				t.Fatal(err)
			}
			p.Update([]string{s.Addr}) // warm: dial a new connection
			rpctest.Eventually(t, "the new connection", func() bool { return state(p, s.Addr).Connected })
			if tc.proven {
				if err := p.Call(ctx, s.Addr, "Hello.Say", "x", &reply); err != nil {
					t.Fatal(err)
				}
			}
			release.Do(func() { close(d.gate) }) // the old connection's drop ends
			rpctest.Eventually(t, "the old connection closed", func() bool { return d.conns[0].closed.Load() })
			for range 3 {
				if err := p.Call(ctx, s.Addr, "Hello.Say", "x", &reply); err != nil {
					t.Fatal(err)
				}
			}
			if st := state(p, s.Addr); !st.Reachable || st.Dials != 2 {
				t.Errorf("node state %+v: want reachable, 2 dials: the connected, answering node was marked down or redialled", st)
			}
			p.Close()
			if open := d.open(); len(open) != 0 {
				t.Errorf("connections %v of %d still open after Close", open, d.dials())
			}
		})
	}
}

// lazyCloseCodec is a codec whose Close does not close its connection.
type lazyCloseCodec struct{ rpc.ClientCodec }

func (lazyCloseCodec) Close() error { return nil }

// A connection the server closes is closed by the pool even when its codec
// does not close it.
func TestLostClosesSocket(t *testing.T) {
	s := rpctest.Start(t, 1, rpctest.JSON)[0]
	d := newGatedDialer()
	close(d.gate)
	p := newPool(t, transport.WithDialer(d.dial), transport.WithCodec(func(c io.ReadWriteCloser) rpc.ClientCodec {
		return lazyCloseCodec{jsonrpc.NewClientCodec(c)}
	}))
	var reply string
	if err := p.Call(context.Background(), s.Addr, "Hello.Say", "x", &reply); err != nil {
		t.Fatal(err)
	}
	s.Kill()
	rpctest.Eventually(t, "the connection dropped", func() bool { return !state(p, s.Addr).Connected })
	rpctest.Eventually(t, "the socket closed", func() bool { return len(d.open()) == 0 })
}

// slowBadArgs cannot be encoded, once release is closed.
type slowBadArgs struct{ release chan struct{} }

func (b slowBadArgs) GobEncode() ([]byte, error) {
	<-b.release
	return nil, errors.New("cannot encode")
}

// A call queued behind a request that fails to encode is refused by the
// connection the failure retires, unwritten: it goes on a new connection
// instead of failing as maybe sent.
func TestRefusedByRetiredConnection(t *testing.T) {
	s := rpctest.Start(t, 1, rpctest.Gob)[0]
	p := newPool(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var reply string
	if err := p.Call(ctx, s.Addr, "Hello.Say", "x", &reply); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	errA, errB := make(chan error, 1), make(chan error, 1)
	go func() { var r string; errA <- p.Call(ctx, s.Addr, "Hello.Say", slowBadArgs{release}, &r) }()
	time.Sleep(50 * time.Millisecond) // A holds net/rpc's request lock, encoding
	go func() { var r string; errB <- p.Call(ctx, s.Addr, "Hello.Say", "b", &r) }()
	time.Sleep(50 * time.Millisecond) // B waits for the lock, on the same connection
	close(release)
	if err := <-errA; !errors.Is(err, transport.ErrBadArgs) {
		t.Fatalf("A: %v, want ErrBadArgs", err)
	}
	if err := <-errB; err != nil {
		t.Fatalf("B, never written on the retired connection, failed: %v", err)
	}
	if got := s.Calls(); got != 2 {
		t.Fatalf("server saw %d calls, want 2 (the first, and B once)", got)
	}
}

// gatedCodec holds the request it is told to at a gate: net/rpc has taken
// it for its connection, and the codec has not written it yet.
type gatedCodec struct {
	rpc.ClientCodec
	held *atomic.Pointer[gate]
}

func (c *gatedCodec) WriteRequest(r *rpc.Request, body any) error {
	if g := c.held.Swap(nil); g != nil {
		close(g.reached)
		<-g.open
	}
	return c.ClientCodec.WriteRequest(r, body)
}

// A request that reaches its connection as the connection shuts (here its
// reader has just seen the server close it) is refused unwritten, and so
// sent again on the new connection: not failed as maybe sent, with the
// reader's io.EOF.
func TestRefusedWhileConnectionShuts(t *testing.T) {
	s := rpctest.Start(t, 1, rpctest.JSON)[0]
	var held atomic.Pointer[gate]
	p := newPool(t, transport.WithCodec(func(rwc io.ReadWriteCloser) rpc.ClientCodec {
		return &gatedCodec{ClientCodec: jsonrpc.NewClientCodec(rwc), held: &held}
	}))
	ctx := safetyNet(t)
	if err := <-goCall(ctx, p, s.Addr, "first"); err != nil {
		t.Fatal(err)
	}
	g := &gate{reached: make(chan struct{}), open: make(chan struct{})}
	held.Store(g)
	errc := goCall(ctx, p, s.Addr, "held")
	<-g.reached
	s.Kill()
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	rpctest.Eventually(t, "the lost connection to be replaced", func() bool { return state(p, s.Addr).Dials == 2 })
	close(g.open)
	if err := <-errc; err != nil {
		t.Fatalf("call that reached a shutting connection: %v, want it sent on the new one", err)
	}
}
