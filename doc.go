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
//	tracing -> rate limit -> circuit breaker -> per-call middleware -> retry
//	  -> attempt tracing -> per-attempt middleware -> picker -> transport
//
// Each link is optional and set by an option; WithChain replaces the order.
// See docs/architecture.md for why the order is what it is.
//
// Errors are sentinels and types usable with errors.Is and errors.As:
// ErrNoNodes, ErrClosed, ErrCircuitOpen, ErrRateLimited, ErrBadReply,
// ErrBadMethod, *transport.Error for failures to reach a node (it carries the
// address), and the server's rpc.ServerError, reachable with errors.As. When
// retries run out, the error joins the error of every attempt.
//
// A Client is safe for concurrent use.
package lbrpc
