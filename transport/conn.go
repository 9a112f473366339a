package transport

import (
	"errors"
	"io"
	"net/rpc"
	"sync"
	"sync/atomic"
)

// ErrBadArgs is the cause of a call whose args the codec could not encode
// (gob cannot encode nil, a type without exported fields, a func or a
// chan). It is the caller's error, not the node's: the call was not sent,
// nothing counts against the node, and a retry would fail the same way. It
// is not wrapped in an *Error.
var ErrBadArgs = errors.New("lbrpc: args cannot be encoded")

// errSpoiled refuses the requests made on a connection after one failed to
// encode (see watchCodec): nothing was written, so the call goes on
// another connection.
var errSpoiled = errors.New("lbrpc: connection retired after an encoding error")

// conn is one connection of a node.
type conn struct {
	*rpc.Client
	codec *watchCodec
	// closed is set before the pool closes the connection itself (a broken
	// call, a recycle, a removal), so that its reader, failing then, does
	// not report the loss of a connection the pool has already dropped.
	closed atomic.Bool
}

// close closes c for good; calls pending on it fail.
func (c *conn) close() {
	c.closed.Store(true)
	c.Client.Close()
}

// refused reports whether err says that net/rpc refused the request
// without writing it: its connection was already shut (the server closed
// it, or the pool did: a recycle, a retirement, a removal), was being shut
// as the request reached it (watchCodec.WriteRequest), or retired after an
// encoding error. net/rpc also gives rpc.ErrShutdown to the calls it had
// sent when its reader gets io.EOF after Close; watchCodec.readFailed never
// lets it see io.EOF (nor a codec's own ErrShutdown), so that ErrShutdown
// means "not written" alone.
func (c *conn) refused(err error) bool {
	return err == errSpoiled || err == rpc.ErrShutdown
}

// watchCodec wraps the codec of every connection. It tells the node when
// the connection can answer nothing more (a read failed: the server closed
// it, even while it was idle), so that the pool redials before a call finds
// it dead; it tells an encoding error, the caller's, from a failed write,
// the connection's; and it counts the calls outstanding, telling the
// coalescingConn before each request whether it is the only one.
type watchCodec struct {
	rpc.ClientCodec
	co *coalescingConn // the connection the codec writes to
	// outstanding counts the requests written and not yet answered. It
	// steers only the choice between an inline and a queued write, never
	// the order of bytes, and when a retired connection closes; it can
	// drift (a request that fails half-written may still be answered) at
	// the cost of a handoff, of a batch missed, or of a retired connection
	// closed at the drain timeout rather than at its last answer.
	outstanding atomic.Int64

	owner   atomic.Pointer[conn] // set once the connection is made
	node    *node
	dead    atomic.Bool // a read failed
	spoiled atomic.Bool // a request failed to encode: write nothing more

	// Answers that did not fit their reply (ErrReplyMismatch), by reply:
	// net/rpc would end the connection at such an error, so the codec
	// keeps it from net/rpc and the call's sender takes it from here.
	wholeAnswers bool         // the codec reads each answer whole first: a value error leaves the stream in step
	mismatches   atomic.Int64 // entries in misfits; lets the senders of fitting answers skip the map
	misfits      sync.Map     // reply -> error
}

// maxMisfits bounds the misfits an abandoned call leaves behind (its answer
// came after its sender stopped waiting): past it, a misfit ends the
// connection, as net/rpc would.
const maxMisfits = 1024

var _ rpc.ClientCodec = (*watchCodec)(nil)

func (c *watchCodec) WriteRequest(r *rpc.Request, body any) error {
	if c.spoiled.Load() {
		return errSpoiled
	}
	c.co.solo.Store(c.outstanding.Add(1) <= 1)
	taken := c.co.taken.Load()
	err := c.ClientCodec.WriteRequest(r, body)
	if err == nil {
		return nil
	}
	if c.co.writeFailed() {
		c.outstanding.Add(-1)
		if c.co.taken.Load() == taken {
			// Writing had stopped (a read failed, the connection was
			// closed) before any of the request was taken: it is refused
			// unwritten, as net/rpc refuses it once it sees the connection
			// shut (see conn.refused).
			return rpc.ErrShutdown
		}
		return err
	}
	// The codec failed on its own: it may hold half a request, which the
	// next request would follow onto the wire. The connection takes no
	// more requests; the calls pending on it are still answered. spoiled
	// is set before this request leaves the count, so that the last answer
	// sees it and closes the connection (ReadResponseBody), whichever of
	// the two comes last.
	c.spoiled.Store(true)
	left := c.outstanding.Add(-1)
	if cn := c.owner.Load(); cn != nil {
		c.node.retire(cn, left == 0)
	}
	return &badArgsError{err}
}

func (c *watchCodec) ReadResponseHeader(r *rpc.Response) error {
	if err := c.ClientCodec.ReadResponseHeader(r); err != nil {
		return c.readFailed(err)
	}
	return nil
}

// ReadResponseBody ends every answer, even one net/rpc discards: only now is
// the answer off the connection, and a retired connection may close.
func (c *watchCodec) ReadResponseBody(body any) error {
	if err := c.ClientCodec.ReadResponseBody(body); err != nil {
		if body == nil || !c.wholeAnswers || c.co.readFailed() || c.mismatches.Load() >= maxMisfits {
			return c.readFailed(err)
		}
		// The answer was read whole; only its value did not fit.
		c.misfits.Store(body, &mismatchError{err})
		c.mismatches.Add(1)
	}
	if c.outstanding.Add(-1) <= 0 && c.spoiled.Load() {
		if cn := c.owner.Load(); cn != nil {
			c.node.p.retired(cn) // a retired connection's last answer is in
		}
	}
	return nil
}

// readFailed runs on net/rpc's reader when a read fails: net/rpc ends the
// client then, so nothing written after could be answered. It returns the
// error to give net/rpc, which fails the calls pending with it: the write
// error, if a failed write closed the connection.
func (c *watchCodec) readFailed(err error) error {
	c.co.halt(err)
	if werr := c.co.writeError(); werr != nil {
		err = werr
	}
	switch {
	case err == io.EOF:
		err = io.ErrUnexpectedEOF // the calls pending were sent (see conn.refused)
	case errors.Is(err, rpc.ErrShutdown):
		err = &shutError{err}
	}
	c.dead.Store(true)
	if cn := c.owner.Load(); cn != nil && !cn.closed.Load() {
		if c.spoiled.Load() {
			c.node.p.retired(cn) // retired, and no answer can come now
		} else {
			c.node.lost(cn, err)
		}
	}
	return err
}

func (c *watchCodec) Close() error {
	err := c.ClientCodec.Close()
	c.co.Close() // even if the inner codec does not close its conn
	return err
}

// mismatch returns the error of reply's answer if it did not fit reply, and
// forgets it. It costs an atomic load when no answer misfitted.
func (c *watchCodec) mismatch(reply any) error {
	if c.mismatches.Load() == 0 {
		return nil
	}
	if err, ok := c.misfits.LoadAndDelete(reply); ok {
		c.mismatches.Add(-1)
		return err.(error)
	}
	return nil
}

// mismatchError is a reply's decoding error, as ErrReplyMismatch.
type mismatchError struct{ err error }

func (e *mismatchError) Error() string   { return ErrReplyMismatch.Error() + ": " + e.err.Error() }
func (e *mismatchError) Unwrap() []error { return []error{ErrReplyMismatch, e.err} }

// shutError is a codec's own rpc.ErrShutdown from a read: errors.Is still
// finds it, but it is not the ErrShutdown of a request refused unwritten.
type shutError struct{ err error }

func (e *shutError) Error() string { return "lbrpc: connection lost: " + e.err.Error() }
func (e *shutError) Unwrap() error { return e.err }

// badArgsError is an encoding error, as ErrBadArgs.
type badArgsError struct{ err error }

func (e *badArgsError) Error() string   { return ErrBadArgs.Error() + ": " + e.err.Error() }
func (e *badArgsError) Unwrap() []error { return []error{ErrBadArgs, e.err} }
