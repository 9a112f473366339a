package lbrpc_test

import (
	"context"
	"errors"
	"maps"
	"net"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/lbrpc/lbrpc"
	"github.com/lbrpc/lbrpc/internal/rpctest"
	"github.com/lbrpc/lbrpc/middleware"
	"github.com/lbrpc/lbrpc/picker"
	"github.com/lbrpc/lbrpc/registry"
)

// collect reads every metric of r, by name.
func collect(t *testing.T, r sdkmetric.Reader) map[string]metricdata.Aggregation {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]metricdata.Aggregation{}
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != middleware.MeterName {
			t.Errorf("metric scope %q, want %q", sm.Scope.Name, middleware.MeterName)
		}
		for _, m := range sm.Metrics {
			out[m.Name] = m.Data
		}
	}
	return out
}

// counts sums the histogram's counts by the values of keys, joined by "|"
// ("" for an absent attribute).
func counts(t *testing.T, a metricdata.Aggregation, keys ...attribute.Key) map[string]uint64 {
	t.Helper()
	h, ok := a.(metricdata.Histogram[float64])
	if !ok {
		t.Fatalf("aggregation %T, want a float64 histogram", a)
	}
	out := map[string]uint64{}
	for _, dp := range h.DataPoints {
		var k string
		for i, key := range keys {
			if i > 0 {
				k += "|"
			}
			if v, ok := dp.Attributes.Value(key); ok {
				k += v.Emit()
			}
		}
		out[k] += dp.Count
	}
	return out
}

// gauge returns the gauge's values by the value of key ("" for none).
func gauge(t *testing.T, a metricdata.Aggregation, key attribute.Key) map[string]int64 {
	t.Helper()
	g, ok := a.(metricdata.Gauge[int64])
	if !ok {
		t.Fatalf("aggregation %T, want an int64 gauge", a)
	}
	out := map[string]int64{}
	for _, dp := range g.DataPoints {
		v, _ := dp.Attributes.Value(key)
		out[v.Emit()] = dp.Value
	}
	return out
}

// Calls and attempts are counted with their method, node and error type.
func TestMetricsEndToEnd(t *testing.T) {
	servers := rpctest.Start(t, 3, rpctest.Gob)
	reader, mp := sdkMeter(t)
	c := newClient(t, servers, lbrpc.WithMetrics(mp), lbrpc.WithRetry(1), lbrpc.WithPicker(picker.RoundRobin()))
	mustCall(t, c, 30)
	servers[0].SetError("boom")
	var errs int
	for range 3 { // round robin: one reaches servers[0], and is not retried
		if err := callWithin(c, 10*time.Second); err != nil {
			errs++
		}
	}
	if errs != 1 {
		t.Fatalf("%d of 3 calls failed, want 1", errs)
	}

	got := collect(t, reader)
	want := map[string]uint64{
		"go_net_rpc|Hello|Say|":             32,
		"go_net_rpc|Hello|Say|server_error": 1,
	}
	calls := counts(t, got["rpc.client.duration"], "rpc.system", "rpc.service", "rpc.method", "error.type")
	if !maps.Equal(calls, want) {
		t.Errorf("rpc.client.duration counts %v, want %v", calls, want)
	}
	node := func(i int, errType string) string {
		host, port, err := net.SplitHostPort(servers[i].Addr)
		if err != nil {
			t.Fatal(err)
		}
		return host + "|" + port + "|" + errType
	}
	want = map[string]uint64{
		node(0, ""): 10, node(0, "server_error"): 1,
		node(1, ""): 11,
		node(2, ""): 11,
	}
	byNode := counts(t, got[middleware.AttemptDurationName], "server.address", "server.port", "error.type")
	if !maps.Equal(byNode, want) {
		t.Errorf("%s counts %v, want %v", middleware.AttemptDurationName, byNode, want)
	}
}

// The gauges follow the node set, all ready, then one ejected, and stop
// with the client.
func TestMetricsGauges(t *testing.T) {
	servers := rpctest.Start(t, 3, rpctest.Gob)
	reader, mp := sdkMeter(t)
	c, err := lbrpc.New(isolated(
		lbrpc.WithRegistry(registry.Static(rpctest.Addrs(servers)...)),
		lbrpc.WithMetrics(mp),
		lbrpc.WithOutlierDetection(lbrpc.OutlierDetection{Consecutive: 1, BaseEjection: time.Hour}),
	)...)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	mustCall(t, c, 3)
	got := collect(t, reader)
	if g := gauge(t, got[lbrpc.NodesMetric], lbrpc.ReadyKey); !maps.Equal(g, map[string]int64{"true": 3, "false": 0}) {
		t.Errorf("%s = %v, want 3 ready", lbrpc.NodesMetric, g)
	}
	for _, name := range []string{lbrpc.EjectedMetric, lbrpc.PanicMetric, lbrpc.InFlightMetric} {
		if g := gauge(t, got[name], ""); !maps.Equal(g, map[string]int64{"": 0}) {
			t.Errorf("%s = %v, want 0", name, g)
		}
	}

	servers[2].SetLatency(time.Hour)
	hangUntil(t, c, "the hung node to be ejected", func() bool { return stateOf(t, c, servers[2].Addr).Ejected })
	got = collect(t, reader)
	if g := gauge(t, got[lbrpc.NodesMetric], lbrpc.ReadyKey); !maps.Equal(g, map[string]int64{"true": 2, "false": 1}) {
		t.Errorf("%s = %v, want 2 ready and 1 not", lbrpc.NodesMetric, g)
	}
	if g := gauge(t, got[lbrpc.EjectedMetric], ""); !maps.Equal(g, map[string]int64{"": 1}) {
		t.Errorf("%s = %v, want 1", lbrpc.EjectedMetric, g)
	}
	// The hung calls that timed out are still pending on the server, but
	// not in flight for the client.
	if g := gauge(t, got[lbrpc.InFlightMetric], ""); !maps.Equal(g, map[string]int64{"": 0}) {
		t.Errorf("%s = %v, want 0", lbrpc.InFlightMetric, g)
	}

	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := collect(t, reader)[lbrpc.NodesMetric]; ok {
		t.Errorf("%s still reported after Close", lbrpc.NodesMetric)
	}
	servers[2].SetLatency(0)
}

// A call that never entered the chain (bad input) is not measured; one
// the chain refused is, with its reason.
func TestMetricsErrorTypes(t *testing.T) {
	servers := rpctest.Start(t, 1, rpctest.Gob)
	reader, mp := sdkMeter(t)
	// One token, and the next in 1000s.
	c := newClient(t, servers, lbrpc.WithMetrics(mp), lbrpc.WithRateLimit(0.001, 1, middleware.FailFast))
	mustCall(t, c, 1)
	if err := callWithin(c, 10*time.Second); !errors.Is(err, lbrpc.ErrRateLimited) {
		t.Fatalf("second call: %v, want ErrRateLimited", err)
	}
	var reply string
	if err := c.Call(context.Background(), "HelloSay", "x", &reply); !errors.Is(err, lbrpc.ErrBadMethod) {
		t.Fatalf("bad method: %v, want ErrBadMethod", err)
	}
	got := counts(t, collect(t, reader)["rpc.client.duration"], "error.type")
	if want := map[string]uint64{"": 1, "rate_limited": 1}; !maps.Equal(got, want) {
		t.Errorf("counts by error.type %v, want %v", got, want)
	}
}

// sdkMeter returns an SDK MeterProvider read by hand, shut down when the
// test ends.
func sdkMeter(t testing.TB) (*sdkmetric.ManualReader, *sdkmetric.MeterProvider) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { mp.Shutdown(context.Background()) })
	return reader, mp
}
