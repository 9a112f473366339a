package middleware

import (
	"context"

	"github.com/lbrpc/lbrpc/transport"
)

// Call is one call as it passes through the chain. It is not safe for
// concurrent use: attempts of a call run one after another.
type Call struct {
	// ServiceMethod is "Service.Method".
	ServiceMethod string
	// Args is sent as the request.
	Args any
	// Reply receives the answer; it is written only on success.
	Reply any

	// Attempt is 0 for the first attempt and n for the nth retry.
	Attempt int
	// Addr is the address of the node the current attempt went to. It is
	// set when the node is picked, so a middleware inside Retry reads it
	// after next returns; it is empty before the first pick.
	Addr string
	// Tried lists the nodes of the earlier attempts, oldest first. Pickers
	// avoid them.
	Tried []string
	// Closing is closed when the client starts to close. Middleware that
	// waits for anything but the next invoker (a rate-limit token, a
	// backoff) waits on it as on ctx.Done(), and returns ErrClosed when it
	// fires. Nil, which never fires, outside a client.
	Closing <-chan struct{}
}

// ErrClosed is returned by middleware that stopped waiting because its
// client is closing (Call.Closing). It is the client's ErrClosed.
var ErrClosed = transport.ErrClosed

// Invoker performs a call.
type Invoker func(ctx context.Context, call *Call) error

// Middleware wraps an Invoker with more behaviour.
type Middleware func(next Invoker) Invoker

// Chain composes middleware: the first is the outermost. Nil entries are
// skipped.
func Chain(mws ...Middleware) Middleware {
	return func(next Invoker) Invoker {
		for i := len(mws) - 1; i >= 0; i-- {
			if mws[i] != nil {
				next = mws[i](next)
			}
		}
		return next
	}
}
