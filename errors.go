package lbrpc

import (
	"errors"

	"github.com/lbrpc/lbrpc/middleware"
	"github.com/lbrpc/lbrpc/picker"
	"github.com/lbrpc/lbrpc/transport"
)

// The errors of lbrpc. Each is the same value as the one its package
// returns, so errors.Is works with either name.
var (
	// ErrNoNodes: the registry reported no node, or none could be picked.
	ErrNoNodes = picker.ErrNoNodes
	// ErrClosed: the client is closed, or was closed while the call was
	// pending.
	ErrClosed = transport.ErrClosed
	// ErrCircuitOpen: the client-wide circuit breaker rejected the call.
	ErrCircuitOpen = middleware.ErrCircuitOpen
	// ErrRateLimited: the client-wide rate limit rejected the call.
	ErrRateLimited = middleware.ErrRateLimited
	// ErrBadReply: the reply is nil or not a pointer.
	ErrBadReply = transport.ErrBadReply
	// ErrReplyMismatch: the answer could not be decoded into the reply (a
	// reply of another type than the method's). The server ran the method;
	// the call is not retried, nothing counts against the node, and with
	// the built-in codecs the node's other calls are not disturbed.
	ErrReplyMismatch = transport.ErrReplyMismatch
	// ErrBadArgs: the codec could not encode the args (gob cannot encode
	// nil, a func, a chan or a struct without exported fields). Nothing was
	// sent, the call is not retried, and nothing counts against the node.
	ErrBadArgs = transport.ErrBadArgs
	// ErrBadMethod: the service method is not of the form "Service.Method".
	ErrBadMethod = errors.New("lbrpc: service method must be \"Service.Method\"")
	// ErrNilContext: Call or Go was given a nil context.
	ErrNilContext = errors.New("lbrpc: nil context")
	// ErrUnbufferedDone: Go was given an unbuffered done channel.
	ErrUnbufferedDone = errors.New("lbrpc: done channel is unbuffered")
	// ErrNodeCircuitOpen: a node's own breaker (WithNodeBreaker) refused
	// the attempt and no other node would take it. It comes wrapped in a
	// *transport.Error whose Unsent reports true, so Retry retries it.
	ErrNodeCircuitOpen = errors.New("lbrpc: node circuit breaker open")
	// ErrNotServing: a node answered its health check (WithHealthCheck)
	// with a status other than health.Serving. NodeState.LastErr carries it.
	ErrNotServing = errors.New("lbrpc: node not serving")
)
