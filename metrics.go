package lbrpc

import (
	"context"
	"errors"

	"github.com/sony/gobreaker/v2"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/lbrpc/lbrpc/middleware"
)

// The gauges WithMetrics reports, read from State when the meter collects.
const (
	// NodesMetric counts the nodes of the set, by whether they are in the
	// ready set (attribute lbrpc.node.ready).
	NodesMetric = "lbrpc.client.nodes"
	// EjectedMetric counts the nodes ejected as outliers.
	EjectedMetric = "lbrpc.client.nodes.ejected"
	// BreakerMetric counts the nodes whose own breaker is not closed
	// (WithNodeBreaker), by state (attribute lbrpc.breaker.state: open,
	// half-open).
	BreakerMetric = "lbrpc.client.nodes.breaker"
	// PanicMetric is 1 while the client is in panic mode (Panicking), else 0.
	PanicMetric = "lbrpc.client.panic"
	// InFlightMetric counts the calls in flight, over all nodes.
	InFlightMetric = "lbrpc.client.calls.in_flight"
)

// Attribute keys of the gauges.
const (
	// ReadyKey tells NodesMetric's ready nodes from the others.
	ReadyKey = attribute.Key("lbrpc.node.ready")
	// BreakerKey is the breaker state of BreakerMetric's nodes.
	BreakerKey = attribute.Key("lbrpc.breaker.state")
)

// WithMetrics records metrics with OpenTelemetry. A nil mp means the global
// MeterProvider. It adds middleware.Metrics (the rpc.client.duration
// histogram of calls) outside the rate limit, middleware.MetricsAttempts
// (each attempt, by node) inside Retry, and gauges of the node set: see
// NodesMetric and the names beside it. With WithChain the chain is the
// user's: WithMetrics then adds only the gauges, and the chain may include
// middleware.Metrics and middleware.MetricsAttempts where it wants them.
func WithMetrics(mp metric.MeterProvider) Option {
	return func(c *config) error {
		if mp == nil {
			mp = otel.GetMeterProvider()
		}
		c.metrics, c.mp = true, mp
		return nil
	}
}

// observe registers the gauges of c with mp; the registration ends when c
// closes.
func (c *Client) observe(mp metric.MeterProvider) (metric.Registration, error) {
	if _, ok := mp.(noop.MeterProvider); ok {
		return nil, nil
	}
	m := mp.Meter(middleware.MeterName)
	nodes, err1 := m.Int64ObservableGauge(NodesMetric, metric.WithUnit("{node}"),
		metric.WithDescription("Nodes of the client's set, by whether they are in the ready set."))
	ejected, err2 := m.Int64ObservableGauge(EjectedMetric, metric.WithUnit("{node}"),
		metric.WithDescription("Nodes ejected as outliers."))
	breakers, err3 := m.Int64ObservableGauge(BreakerMetric, metric.WithUnit("{node}"),
		metric.WithDescription("Nodes whose own circuit breaker is open or half-open."))
	panicking, err4 := m.Int64ObservableGauge(PanicMetric, metric.WithUnit("1"),
		metric.WithDescription("1 while the client picks among all nodes because too few are fit to serve."))
	inFlight, err5 := m.Int64ObservableGauge(InFlightMetric, metric.WithUnit("{call}"),
		metric.WithDescription("Attempts in flight, over all nodes."))
	if err := errors.Join(err1, err2, err3, err4, err5); err != nil {
		return nil, err
	}
	readyOpts := []metric.ObserveOption{metric.WithAttributes(ReadyKey.Bool(true))}
	unreadyOpts := []metric.ObserveOption{metric.WithAttributes(ReadyKey.Bool(false))}
	openOpts := []metric.ObserveOption{metric.WithAttributes(BreakerKey.String("open"))}
	halfOpts := []metric.ObserveOption{metric.WithAttributes(BreakerKey.String("half-open"))}
	return m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		var ready, unready, ej, open, half, calls int64
		for _, s := range c.State() {
			if s.Ready {
				ready++
			} else {
				unready++
			}
			if s.Ejected {
				ej++
			}
			switch s.Breaker {
			case gobreaker.StateOpen:
				open++
			case gobreaker.StateHalfOpen:
				half++
			}
			calls += s.InFlight
		}
		var p int64
		if c.Panicking() {
			p = 1
		}
		o.ObserveInt64(nodes, ready, readyOpts...)
		o.ObserveInt64(nodes, unready, unreadyOpts...)
		o.ObserveInt64(ejected, ej)
		o.ObserveInt64(breakers, open, openOpts...)
		o.ObserveInt64(breakers, half, halfOpts...)
		o.ObserveInt64(panicking, p)
		o.ObserveInt64(inFlight, calls)
		return nil
	}, nodes, ejected, breakers, panicking, inFlight)
}
