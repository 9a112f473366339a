// Package lbrpc is a load-balancing client for Go's net/rpc.
//
// A Client spreads calls over the nodes a registry reports, through a chain
// of middleware, and talks to stock net/rpc servers: no server change is
// needed.
//
//	c, err := lbrpc.New(
//		lbrpc.WithRegistry(registry.Static("127.0.0.1:8081", "127.0.0.1:8082")),
//		lbrpc.WithPicker(picker.RoundRobin()),
//		lbrpc.WithRetry(3),
//	)
//	if err != nil { ... }
//	defer c.Close()
//	var reply string
//	err = c.Call(ctx, "HelloService.Say", "world", &reply)
//
// A call flows through, outermost first:
//
//	tracing -> metrics -> rate limit -> circuit breaker -> per-call middleware
//	  -> retry -> attempt tracing -> attempt metrics -> per-attempt middleware
//	  -> picker -> transport
//
// Each link is optional and set by an option (WithTracing, WithMetrics,
// WithRateLimit, WithCircuitBreaker, WithRetry, WithCallMiddleware,
// WithMiddleware); WithChain replaces the order.
// See docs/architecture.md for why the order is what it is.
//
// The picker chooses among the ready set: the registry's nodes less those
// that are not fit to serve. A node leaves the ready set while
//   - the transport cannot reach it (it waits to redial after failures);
//   - it is ejected as an outlier: Consecutive calls in a row got no answer
//     (WithOutlierDetection, on by default: 5 in a row eject a node for
//     30s times its number of ejections, at most 300s, never more than
//     half the nodes at once);
//   - its own circuit breaker is open (WithNodeBreaker), until the breaker
//     turns half-open and a real call probes the node;
//   - it fails its active health check (WithHealthCheck: Health.Check,
//     served by servers that call health.Register, or a TCP connect).
//
// If that leaves no node (or fewer than WithPanicThreshold's share), the
// client picks among all of them rather than fail every call (panic mode,
// Client.Panicking). A node that joins or
// returns can ramp up over a window (WithSlowStart). Client.State shows
// each node's standing; all of it is computed off the call path, by a
// goroutine the client owns, and read on it through an immutable snapshot.
//
// Errors are sentinels and types usable with errors.Is and errors.As:
// ErrNoNodes, ErrClosed, ErrCircuitOpen, ErrRateLimited, ErrBadReply,
// ErrBadMethod, ErrBadArgs, ErrReplyMismatch, ErrNilContext,
// ErrUnbufferedDone, *transport.Error for
// failures to reach a node (it carries the address; an attempt a node
// breaker refused is one, wrapping ErrNodeCircuitOpen, and never sent), and
// the server's rpc.ServerError, reachable with errors.As. When retries run
// out, the error joins the error of every attempt.
//
// A Client is safe for concurrent use.
package lbrpc
