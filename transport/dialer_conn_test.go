package transport_test

import (
	"context"
	"net"
	"net/rpc"
	"testing"
	"time"

	"github.com/lbrpc/lbrpc/transport"
)

// scrambledConn is a connection that transforms its bytes (as an
// encrypting or compressing wrapper would) and embeds *net.TCPConn for the
// rest, so SyscallConn is promoted from the TCPConn.
type scrambledConn struct{ *net.TCPConn }

func xor(p []byte) []byte {
	q := make([]byte, len(p))
	for i, b := range p {
		q[i] = b ^ 0x5a
	}
	return q
}

func (c scrambledConn) Write(p []byte) (int, error) { return c.TCPConn.Write(xor(p)) }

func (c scrambledConn) Read(p []byte) (int, error) {
	n, err := c.TCPConn.Read(p)
	copy(p[:n], xor(p[:n]))
	return n, err
}

type scrambledServerConn struct{ net.Conn }

func (c scrambledServerConn) Write(p []byte) (int, error) { return c.Conn.Write(xor(p)) }

func (c scrambledServerConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	copy(p[:n], xor(p[:n]))
	return n, err
}

// A custom dialer's conn that embeds *net.TCPConn (and so has its
// SyscallConn) but transforms its bytes: every write goes through its own
// Write, never around it to the socket.
func TestDialerConnWriteNotBypassed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := rpc.NewServer()
	if err := srv.RegisterName("Big", Big{}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var served []net.Conn
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			served = append(served, c)
			go srv.ServeConn(scrambledServerConn{c})
		}
	}()
	defer func() {
		ln.Close()
		<-done
		for _, c := range served {
			c.Close()
		}
	}()
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var nd net.Dialer
		c, err := nd.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return scrambledConn{c.(*net.TCPConn)}, nil
	}
	p := newPool(t, transport.WithDialer(dial))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var reply string
	if err := p.Call(ctx, ln.Addr().String(), "Big.Get", 3, &reply); err != nil || reply != "yyy" {
		t.Fatalf("call through a dialer's transforming conn: reply %q, err %v", reply, err)
	}
}
