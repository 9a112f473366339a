// Package middleware defines the call chain of lbrpc and its built-in links.
//
// A Middleware wraps an Invoker and returns one, like net/http's
// func(http.Handler) http.Handler. The client builds the chain once, in New,
// outermost first:
//
//	Tracing -> Metrics -> RateLimit -> CircuitBreaker -> per-call user middleware
//	  -> Retry -> TracingAttempts -> MetricsAttempts -> per-attempt user middleware
//	  -> pick and send
//
// Everything outside Retry runs once per call; everything inside it runs once
// per attempt. Each built-in is usable on its own, in any order, with Chain.
//
// A Middleware may read and change the Call, return without calling next
// (short-circuit), and look at the error next returns. It must not keep the
// Call after it returns. Middleware that waits for something other than
// next (a token, a backoff) stops when ctx ends or Call.Closing fires, so
// that Close does not wait on it.
package middleware
