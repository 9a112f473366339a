package transport

import (
	"errors"
	"fmt"
)

// ErrClosed is returned for calls made on, or pending when, the transport
// (and so the client) is closed.
var ErrClosed = errors.New("lbrpc: client closed")

// ErrNodeDown is the cause of an Error for a node that is backing off after
// failed dials: the call was not sent.
var ErrNodeDown = errors.New("lbrpc: node down, waiting to redial")

// ErrNodeRemoved is the cause of an Error for a node that has left the node
// set: the call was not sent.
var ErrNodeRemoved = errors.New("lbrpc: node removed")

// Op names the step of a call that failed.
type Op string

// The steps of a call.
const (
	OpDial Op = "dial" // connecting, or waiting to reconnect; nothing was sent
	OpCall Op = "call" // the request may have reached the server
)

// Error is a failure to carry a call to a node. It is never an
// application error: an rpc.ServerError from the server is returned as is.
type Error struct {
	Addr string // the node
	Op   Op
	Err  error // the cause: a net error, rpc.ErrShutdown, io.ErrUnexpectedEOF, ctx.Err(), ...
}

func (e *Error) Error() string {
	return fmt.Sprintf("lbrpc: %s %s: %v", e.Op, e.Addr, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Unsent reports whether the request surely never reached the server, so a
// retry cannot run the method twice.
func (e *Error) Unsent() bool { return e.Op == OpDial }
