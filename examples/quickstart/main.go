// Quickstart is the first lbrpc program to run. It starts three stock
// net/rpc servers, calls them through a client with every built-in link of
// the chain, kills one server half way, and shows that the calls go on.
//
//	go run ./examples/quickstart
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/rpc"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/sony/gobreaker/v2"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"golang.org/x/time/rate"

	"github.com/lbrpc/lbrpc"
	"github.com/lbrpc/lbrpc/middleware"
	"github.com/lbrpc/lbrpc/picker"
	"github.com/lbrpc/lbrpc/registry"
)

const (
	numCalls = 300
	workers  = 8
	victim   = 1 // index of the server killed after numCalls/2 calls
)

func main() {
	if err := run(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

// HelloService is a plain net/rpc service: lbrpc needs no server change.
type HelloService struct {
	addr    string
	latency time.Duration
}

// Say answers "hello, <name> from <addr>" after the server's latency.
func (h *HelloService) Say(name string, reply *string) error {
	time.Sleep(h.latency) // stands in for real work, so percentiles mean something
	*reply = "hello, " + name + " from " + h.addr
	return nil
}

// server is a stock net/rpc server that can be killed as a crashed process
// would be: listener and live connections closed at once.
type server struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]bool // nil once killed
}

func startServer(latency time.Duration) (*server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	rs := rpc.NewServer()
	if err := rs.RegisterName("HelloService", &HelloService{ln.Addr().String(), latency}); err != nil {
		ln.Close()
		return nil, err
	}
	s := &server{ln: ln, conns: map[net.Conn]bool{}}
	s.wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return // closed by kill
			}
			s.mu.Lock()
			alive := s.conns != nil
			if alive {
				s.conns[conn] = true
				s.wg.Go(func() { rs.ServeConn(conn) })
			}
			s.mu.Unlock()
			if !alive { // accepted just as kill ran
				conn.Close()
				return
			}
		}
	})
	return s, nil
}

// kill stops the server and waits for its goroutines. It is idempotent.
func (s *server) kill() {
	s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.conns = nil
	s.mu.Unlock()
	s.wg.Wait()
}

// stats is filled by the user middleware count.
type stats struct {
	killed  atomic.Bool // set once the victim is dead
	mu      sync.Mutex
	nodes   map[string]struct{ before, after, failed int } // attempts per node
	retries int
}

// count is a user middleware. Given to WithMiddleware it runs inside retry,
// once per attempt, so after next returns it sees the node the attempt went
// to (call.Addr) and whether it was a retry (call.Attempt > 0).
func (st *stats) count(next middleware.Invoker) middleware.Invoker {
	return func(ctx context.Context, call *middleware.Call) error {
		err := next(ctx, call)
		st.mu.Lock()
		defer st.mu.Unlock()
		n := st.nodes[call.Addr] // "" if no node could be picked
		if st.killed.Load() {
			n.after++
		} else {
			n.before++
		}
		if err != nil {
			n.failed++
		}
		st.nodes[call.Addr] = n
		if call.Attempt > 0 {
			st.retries++
		}
		return err
	}
}

// serverLatency is how long server i takes per call: nodes of unequal speed,
// so that the picker has something to choose between.
func serverLatency(i int) time.Duration { return time.Duration(i+1) * time.Millisecond }

// run is the demo: main prints its output, the test checks it.
func run(w io.Writer) error {
	var servers []*server
	defer func() {
		for _, s := range servers {
			s.kill()
		}
	}()
	var addrs []string
	for i := range 3 {
		s, err := startServer(serverLatency(i))
		if err != nil {
			return err
		}
		servers = append(servers, s)
		addrs = append(addrs, s.ln.Addr().String())
	}

	// Spans go to memory so that we can count them; a real program would
	// give the TracerProvider an exporter.
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer tp.Shutdown(context.Background())

	// Metrics are read by hand at the end; a real program would give the
	// MeterProvider an exporter (OTLP, Prometheus).
	metrics := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(metrics))
	defer mp.Shutdown(context.Background())

	st := &stats{nodes: map[string]struct{ before, after, failed int }{}}
	client, err := lbrpc.New(
		lbrpc.WithRegistry(registry.Static(addrs...)),
		// The default, shown here because it is the point of the demo: the
		// 1ms node takes the most calls, the 3ms node the fewest.
		lbrpc.WithPicker(picker.LeastLoaded()),
		lbrpc.WithRetry(3),
		// The breaker sees calls after their retries, so it opens when the
		// whole service fails, not when one node does.
		lbrpc.WithCircuitBreaker(gobreaker.Settings{
			Name:        "HelloService",
			ReadyToTrip: middleware.ConsecutiveFailures(10),
			Timeout:     5 * time.Second,
		}),
		lbrpc.WithRateLimit(rate.Limit(5000), 100, middleware.Wait),
		lbrpc.WithTracing(tp),
		lbrpc.WithMetrics(mp),
		lbrpc.WithTimeout(2*time.Second),
		lbrpc.WithMiddleware(st.count),
	)
	if err != nil {
		return err
	}
	defer client.Close()

	fmt.Fprintf(w, "lbrpc quickstart: %d calls, %d workers, 3 stock net/rpc servers; %s dies after %d calls\n\n",
		numCalls, workers, addrs[victim], numCalls/2)

	// The worker that completes call numCalls/2 triggers the kill, which
	// runs beside the workers so that calls keep flowing meanwhile.
	half := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		<-half
		servers[victim].kill()
		st.killed.Store(true)
	})
	var (
		next, done atomic.Int64
		latencies  = make([]time.Duration, numCalls) // one slot per call: no lock
		mu         sync.Mutex
		errs       []error
	)
	for range workers {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < numCalls; i = next.Add(1) - 1 {
				name := fmt.Sprintf("gopher-%d", i)
				var reply string
				start := time.Now()
				err := client.Call(context.Background(), "HelloService.Say", name, &reply)
				latencies[i] = time.Since(start)
				if err == nil && !strings.HasPrefix(reply, "hello, "+name+" from ") {
					err = fmt.Errorf("call %d: unexpected reply %q", i, reply)
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
				if done.Add(1) == numCalls/2 {
					close(half)
				}
			}
		})
	}
	wg.Wait()

	slices.Sort(latencies)
	// Nearest rank: the smallest latency that p% of the calls did not exceed.
	pct := func(p int) time.Duration { return latencies[(numCalls*p+99)/100-1].Round(10 * time.Microsecond) }
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "calls made\t%d\n", numCalls)
	fmt.Fprintf(tw, "succeeded\t%d\n", numCalls-len(errs))
	fmt.Fprintf(tw, "failed\t%d\n", len(errs))
	fmt.Fprintf(tw, "retries\t%d\n", st.retries)
	fmt.Fprintf(tw, "latency p50\t%v\n", pct(50))
	fmt.Fprintf(tw, "latency p99\t%v\n", pct(99))
	fmt.Fprintf(tw, "spans recorded\t%d (one per call, one per attempt)\n", len(spans.Ended()))
	m, err := readMetrics(metrics)
	if err != nil {
		return err
	}
	fmt.Fprintf(tw, "metrics recorded\t%d calls, %d attempts, %d ready nodes of %d now\n", m.calls, m.attempts, m.ready, len(addrs))
	fmt.Fprintln(tw) // an empty line: the node table aligns on its own
	fmt.Fprintln(tw, "attempts per node\tbefore kill\tafter kill\tfailed")
	for i, a := range addrs {
		n := st.nodes[a]
		label := fmt.Sprintf("%s (%v)", a, serverLatency(i))
		if i == victim {
			label = fmt.Sprintf("%s (%v, killed)", a, serverLatency(i))
		}
		fmt.Fprintf(tw, "  %s\t%d\t%d\t%d\n", label, n.before, n.after, n.failed)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, err := range errs[:min(len(errs), 5)] { // the first few tell the story
		fmt.Fprintln(w, "  error:", err)
	}
	if len(errs) > 0 {
		fmt.Fprintf(w, "\nverdict: %d of %d calls failed\n", len(errs), numCalls)
		return errors.New("some calls failed")
	}
	fmt.Fprintf(w, "\nverdict: all %d calls succeeded although one node died half way\n", numCalls)
	return nil
}

// metricFigures are what the summary shows of the client's metrics.
type metricFigures struct{ calls, attempts, ready int64 }

func readMetrics(r sdkmetric.Reader) (metricFigures, error) {
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		return metricFigures{}, err
	}
	var f metricFigures
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Histogram[float64]:
				for _, dp := range d.DataPoints {
					switch m.Name {
					case "rpc.client.duration":
						f.calls += int64(dp.Count)
					case middleware.AttemptDurationName:
						f.attempts += int64(dp.Count)
					}
				}
			case metricdata.Gauge[int64]:
				for _, dp := range d.DataPoints {
					if ready, _ := dp.Attributes.Value(lbrpc.ReadyKey); m.Name == lbrpc.NodesMetric && ready.AsBool() {
						f.ready = dp.Value
					}
				}
			}
		}
	}
	return f, nil
}
