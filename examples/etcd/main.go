// Command etcd shows discovery through etcd: two net/rpc servers register
// themselves, an lbrpc client discovers them and spreads calls over them, and
// one server leaves.
//
// It runs etcd inside the process, so it needs no etcd installed:
//
//	go run .
package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/rpc"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/lbrpc/lbrpc"
	"github.com/lbrpc/lbrpc/picker"
	"github.com/lbrpc/lbrpc/registry"
	"github.com/lbrpc/lbrpc/registry/etcd"
)

// Greeter is the net/rpc service the servers offer.
type Greeter struct{ name string }

// Hello answers with the server's name.
func (g *Greeter) Hello(who string, reply *string) error {
	*reply = fmt.Sprintf("hello %s, from %s", who, g.name)
	return nil
}

// server is one net/rpc server registered in etcd.
type server struct {
	ln   net.Listener
	reg  *etcd.Registration
	once sync.Once
}

// startServer serves Greeter on a random local port and registers it.
func startServer(out io.Writer, client *clientv3.Client, name string) (*server, error) {
	rs := rpc.NewServer()
	if err := rs.Register(&Greeter{name: name}); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go func() {
		// rs.Accept would log the error that ends every listener.
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go rs.ServeConn(conn)
		}
	}()
	node := registry.Node{Addr: ln.Addr().String(), Weight: 1, Meta: map[string]string{"name": name}}
	reg, err := etcd.Register(context.Background(), client, "greeter", node, 5*time.Second)
	if err != nil {
		ln.Close()
		return nil, err
	}
	fmt.Fprintf(out, "%s: serving on %s, registered as %s\n", name, node.Addr, reg.Key())
	return &server{ln: ln, reg: reg}, nil
}

// stop deregisters the server first, so that clients stop picking it, and
// then stops serving.
func (s *server) stop() {
	s.once.Do(func() {
		s.reg.Close()
		s.ln.Close()
	})
}

// greet makes n calls through the client and counts the answers per server.
func greet(out io.Writer, c *lbrpc.Client, n int) error {
	count := map[string]int{}
	for range n {
		var reply string
		if err := c.Call(context.Background(), "Greeter.Hello", "client", &reply); err != nil {
			return err
		}
		count[reply[strings.LastIndex(reply, " ")+1:]]++
	}
	names := make([]string, 0, len(count))
	for name, k := range count {
		names = append(names, fmt.Sprintf("%s answered %d", name, k))
	}
	sort.Strings(names)
	fmt.Fprintf(out, "%d calls: %s\n", n, strings.Join(names, ", "))
	return nil
}

// waitNodes waits, bounded, until the client uses want nodes.
func waitNodes(c *lbrpc.Client, want int) error {
	deadline := time.Now().Add(30 * time.Second)
	for len(c.Nodes()) != want {
		if time.Now().After(deadline) {
			return fmt.Errorf("client still has %d nodes, want %d", len(c.Nodes()), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

func main() {
	if err := run(os.Stdout); err != nil {
		log.Fatal(err)
	}
}

func run(out io.Writer) error {
	endpoint, stopEtcd, err := startEtcd()
	if err != nil {
		return err
	}
	defer stopEtcd()
	fmt.Fprintln(out, "etcd: listening on", endpoint)
	client, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer client.Close()

	s1, err := startServer(out, client, "server-1")
	if err != nil {
		return err
	}
	defer s1.stop()
	s2, err := startServer(out, client, "server-2")
	if err != nil {
		return err
	}
	defer s2.stop()

	// Discovery: the client side needs only the service name.
	reg, err := etcd.New(client, "greeter")
	if err != nil {
		return err
	}
	c, err := lbrpc.New(lbrpc.WithRegistry(reg), lbrpc.WithPicker(picker.RoundRobin()), lbrpc.WithRetry(2))
	if err != nil {
		return err
	}
	defer c.Close()
	if err := waitNodes(c, 2); err != nil {
		return err
	}
	fmt.Fprintf(out, "client discovered %d nodes\n", len(c.Nodes()))
	if err := greet(out, c, 10); err != nil {
		return err
	}

	fmt.Fprintln(out, "stopping server-1: it deregisters, then stops serving")
	s1.stop()
	if err := waitNodes(c, 1); err != nil {
		return err
	}
	fmt.Fprintf(out, "client now has %d node: %s\n", len(c.Nodes()), c.Nodes()[0].Meta["name"])
	return greet(out, c, 10)
}

// startEtcd runs a one-member etcd in this process on random local ports,
// with its data in a temporary directory.
func startEtcd() (endpoint string, stop func(), err error) {
	dir, err := os.MkdirTemp("", "lbrpc-etcd-example")
	if err != nil {
		return "", nil, err
	}
	cfg := embed.NewConfig()
	cfg.Dir = dir
	local := url.URL{Scheme: "http", Host: "127.0.0.1:0"}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{local}, []url.URL{local}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{local}, []url.URL{local}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	stop = func() {
		e.Close()
		os.RemoveAll(dir)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(time.Minute):
		stop()
		return "", nil, fmt.Errorf("etcd did not start")
	}
	return e.Clients[0].Addr().String(), stop, nil
}
