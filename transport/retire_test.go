package transport_test

import (
	"context"
	"net"
	"net/rpc"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lbrpc/lbrpc/internal/rpctest"
	"github.com/lbrpc/lbrpc/transport"
)

// Big answers a large reply to a small request.
type Big struct{}

func (Big) Get(n int, reply *string) error {
	*reply = strings.Repeat("y", n)
	return nil
}

// bigServer serves Big over gob on loopback until the test ends.
func bigServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := rpc.NewServer()
	if err := srv.RegisterName("Big", Big{}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	conns := make(chan net.Conn, 16)
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns <- c
			go srv.ServeConn(c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		close(conns)
		for c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// slowReader dials TCP and makes every Read return at most 32 KiB, after
// 1ms: a large answer takes a while to arrive, as over a real network.
type slowReader struct{ read atomic.Int64 }

func (d *slowReader) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &slowConn{Conn: c, d: d}, nil
}

type slowConn struct {
	net.Conn
	d *slowReader
}

func (c *slowConn) Read(p []byte) (int, error) {
	time.Sleep(time.Millisecond)
	if len(p) > 32<<10 {
		p = p[:32<<10]
	}
	n, err := c.Conn.Read(p)
	c.d.read.Add(int64(n))
	return n, err
}

// A bad-args call made while a good call's large answer is still arriving
// retires the connection only once that answer is in: the good call
// succeeds.
func TestBadArgsWhileAnswerArrives(t *testing.T) {
	for _, coalesce := range []bool{true, false} {
		t.Run(map[bool]string{true: "coalescing", false: "plain"}[coalesce], func(t *testing.T) {
			addr := bigServer(t)
			var d slowReader
			p := newPool(t, transport.WithDialer(d.dial), transport.WithWriteCoalescing(coalesce))
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var small string
			if err := p.Call(ctx, addr, "Big.Get", 1, &small); err != nil {
				t.Fatal(err)
			}
			const size = 8 << 20
			errc := make(chan error, 1)
			go func() {
				var reply string
				err := p.Call(ctx, addr, "Big.Get", size, &reply)
				if err == nil && len(reply) != size {
					t.Errorf("reply of %d bytes, want %d", len(reply), size)
				}
				errc <- err
			}()
			before := d.read.Load()
			rpctest.Eventually(t, "the big answer's body to be arriving", func() bool { return d.read.Load()-before > 1<<20 })
			var reply string
			if err := p.Call(ctx, addr, "Big.Get", nil, &reply); err == nil {
				t.Fatal("nil args: no error")
			}
			if err := <-errc; err != nil {
				t.Fatalf("good call answered while another call's args failed to encode: %v", err)
			}
		})
	}
}
