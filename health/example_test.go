package health_test

import (
	"fmt"
	"log"
	"net"
	"net/rpc"

	"github.com/lbrpc/lbrpc/health"
)

// Register adds the Health service to a stock net/rpc server in one line.
// Clients probe it with lbrpc.WithHealthCheck; SetServing(false) takes the
// server out of their rotation, for example before a drain.
func ExampleRegister() {
	srv := rpc.NewServer()
	hs, err := health.Register(srv)
	if err != nil {
		log.Fatal(err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		srv.ServeConn(conn)
	}()

	c, err := rpc.Dial("tcp", ln.Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	var resp health.Response
	if err := c.Call("Health.Check", health.Request{}, &resp); err != nil {
		log.Fatal(err)
	}
	fmt.Println(resp.Status)

	hs.SetServing(false) // draining
	if err := c.Call("Health.Check", health.Request{}, &resp); err != nil {
		log.Fatal(err)
	}
	fmt.Println(resp.Status)
	// Output:
	// serving
	// not serving
}
