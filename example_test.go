package lbrpc_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/rpc"
	"sync"
	"time"

	"github.com/sony/gobreaker/v2"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/lbrpc/lbrpc"
	"github.com/lbrpc/lbrpc/middleware"
	"github.com/lbrpc/lbrpc/picker"
	"github.com/lbrpc/lbrpc/registry"
)

// HelloService is a stock net/rpc service: lbrpc needs no server change.
type HelloService struct{}

// Say greets.
func (HelloService) Say(name string, reply *string) error {
	*reply = "hello, " + name
	return nil
}

// startServers starts n net/rpc servers on loopback and returns their
// addresses and a function that stops them.
func startServers(n int) (addrs []string, stop func()) {
	var lns []net.Listener
	var wg sync.WaitGroup
	for range n {
		srv := rpc.NewServer()
		if err := srv.Register(HelloService{}); err != nil {
			log.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			log.Fatal(err)
		}
		lns = append(lns, ln)
		addrs = append(addrs, ln.Addr().String())
		wg.Add(1)
		go func() {
			defer wg.Done()
			var conns sync.WaitGroup
			defer conns.Wait()
			for {
				conn, err := ln.Accept()
				if err != nil {
					return
				}
				conns.Add(1)
				go func() { defer conns.Done(); srv.ServeConn(conn) }()
			}
		}()
	}
	return addrs, func() {
		for _, ln := range lns {
			ln.Close()
		}
	}
}

func Example() {
	addrs, stop := startServers(3)
	defer stop()

	c, err := lbrpc.New(
		lbrpc.WithRegistry(registry.Static(addrs...)),
		lbrpc.WithPicker(picker.RoundRobin()),
		lbrpc.WithRetry(3),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	var reply string
	if err := c.Call(context.Background(), "HelloService.Say", "world", &reply); err != nil {
		log.Fatal(err)
	}
	fmt.Println(reply)
	// Output: hello, world
}

// A user middleware that runs once per attempt sees the node it went to.
func ExampleWithMiddleware() {
	addrs, stop := startServers(2)
	defer stop()

	perNode := map[string]int{}
	count := func(next middleware.Invoker) middleware.Invoker {
		return func(ctx context.Context, call *middleware.Call) error {
			err := next(ctx, call) // call.Addr is set once next has picked
			perNode[call.Addr]++   // calls here are sequential; guard it otherwise
			return err
		}
	}
	c, err := lbrpc.New(lbrpc.WithRegistry(registry.Static(addrs...)), lbrpc.WithPicker(picker.RoundRobin()), lbrpc.WithMiddleware(count))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	for range 10 {
		var reply string
		if err := c.Call(context.Background(), "HelloService.Say", "x", &reply); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Println(perNode[addrs[0]], perNode[addrs[1]])
	// Output: 5 5
}

// pushRegistry is a user registry: node sets pushed into a channel.
type pushRegistry chan []registry.Node

func (r pushRegistry) Watch(context.Context) (registry.Watcher, error) {
	return &pushWatcher{sets: r, stop: make(chan struct{})}, nil
}

type pushWatcher struct {
	sets pushRegistry
	stop chan struct{}
	once sync.Once
}

func (w *pushWatcher) Next() ([]registry.Node, error) {
	select {
	case nodes := <-w.sets:
		return nodes, nil
	case <-w.stop:
		return nil, registry.ErrStopped
	}
}

func (w *pushWatcher) Stop() error { w.once.Do(func() { close(w.stop) }); return nil }

// A registry of your own: a Watch that returns a Watcher whose Next blocks
// until there is news.
func Example_customRegistry() {
	addrs, stop := startServers(2)
	defer stop()

	push := make(pushRegistry)
	c, err := lbrpc.New(lbrpc.WithRegistry(push))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	push <- []registry.Node{{Addr: addrs[0], Weight: 1}} // the first set
	var reply string
	err = c.Call(context.Background(), "HelloService.Say", "first", &reply)
	fmt.Println(reply, err)

	push <- []registry.Node{{Addr: addrs[1], Weight: 1}} // addrs[0] leaves
	push <- []registry.Node{{Addr: addrs[1], Weight: 1}} // sent after the first is applied
	fmt.Println(c.Nodes()[0].Addr == addrs[1])
	// Output:
	// hello, first <nil>
	// true
}

// The ready set: the nodes the picker chooses from are those fit to serve.
// Outlier detection is on by default; node breakers, health checks (servers
// register the health service: health.Register) and slow start are options.
// State shows how the client sees each node.
func ExampleClient_State() {
	addrs, stop := startServers(2)
	defer stop()

	c, err := lbrpc.New(
		lbrpc.WithRegistry(registry.Static(addrs...)),
		lbrpc.WithOutlierDetection(lbrpc.OutlierDetection{Consecutive: 5, BaseEjection: 30 * time.Second}),
		lbrpc.WithNodeBreaker(gobreaker.Settings{Timeout: 10 * time.Second}),
		lbrpc.WithHealthCheck(lbrpc.HealthCheck{TCP: true}), // these servers have no health service
		lbrpc.WithSlowStart(lbrpc.SlowStart{Window: 30 * time.Second}),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	var reply string
	if err := c.Call(context.Background(), "HelloService.Say", "world", &reply); err != nil {
		log.Fatal(err)
	}
	for i, s := range c.State() {
		fmt.Printf("node %d: ready %v, ejected %v, breaker %v, healthy %v, share %v\n",
			i, s.Ready, s.Ejected, s.Breaker, s.Healthy, s.Share)
	}
	fmt.Println("panicking:", c.Panicking())
	// Output:
	// node 0: ready true, ejected false, breaker closed, healthy true, share 1
	// node 1: ready true, ejected false, breaker closed, healthy true, share 1
	// panicking: false
}

// WithMetrics records every call and attempt, and gauges of the node set,
// with any OpenTelemetry MeterProvider: here the SDK's, read by hand.
func ExampleWithMetrics() {
	addrs, stop := startServers(2)
	defer stop()

	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	c, err := lbrpc.New(
		lbrpc.WithRegistry(registry.Static(addrs...)),
		lbrpc.WithMetrics(mp),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	var reply string
	for range 10 {
		if err := c.Call(context.Background(), "HelloService.Say", "world", &reply); err != nil {
			log.Fatal(err)
		}
	}
	c.Call(context.Background(), "HelloService.Shout", "world", &reply) // no such method

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		log.Fatal(err)
	}
	for _, m := range rm.ScopeMetrics[0].Metrics {
		switch d := m.Data.(type) {
		case metricdata.Histogram[float64]:
			if m.Name != "rpc.client.duration" {
				continue
			}
			for _, dp := range d.DataPoints {
				method, _ := dp.Attributes.Value("rpc.method")
				errType, _ := dp.Attributes.Value("error.type")
				fmt.Printf("%s: %s %q: %d\n", m.Name, method.AsString(), errType.AsString(), dp.Count)
			}
		case metricdata.Gauge[int64]:
			if m.Name != lbrpc.NodesMetric {
				continue
			}
			for _, dp := range d.DataPoints {
				if ready, _ := dp.Attributes.Value(lbrpc.ReadyKey); ready.AsBool() {
					fmt.Printf("%s: %d ready\n", m.Name, dp.Value)
				}
			}
		}
	}
	// Unordered output:
	// rpc.client.duration: Say "": 10
	// rpc.client.duration: Shout "server_error": 1
	// lbrpc.client.nodes: 2 ready
}
