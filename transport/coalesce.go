package transport

import (
	"net"
	"net/rpc"
	"runtime"
	"sync"
	"sync/atomic"
)

// maxRetained caps the capacity of a write buffer kept for reuse: a buffer
// that grew past it for a burst of large requests is dropped after its write,
// so that the burst does not pin memory for the life of the connection.
const maxRetained = 64 << 10

// coalesce wraps conn for write coalescing and returns the codec made by
// codec over it, itself wrapped to count the calls outstanding.
func coalesce(conn net.Conn, codec Codec) rpc.ClientCodec {
	c := newCoalescingConn(conn)
	return &countingCodec{ClientCodec: codec(c), conn: c}
}

// coalescingConn is a net.Conn whose writes are gathered, while other calls
// are outstanding on the connection, into one buffer that a flusher goroutine
// writes to the connection in one Write: requests made at the same time share
// a write(2) instead of taking one each. Reads and the other methods of
// net.Conn pass through.
//
// A Write is inline (synchronous, as without the wrapper) when its request is
// the only call outstanding, nothing is pending and nobody is writing.
// Otherwise it copies p, wakes the flusher and returns len(p), nil. Which way
// a Write goes is a heuristic (see countingCodec); the order of the bytes does
// not depend on it: Writes append to pending in the order they are made, and a
// Write goes inline only when pending is empty and no write to the connection
// is in progress, that is when every earlier byte has been written.
//
// The first write error is sticky: every later Write returns it, and the
// connection is closed, so that the codec's reader fails and net/rpc ends
// every call pending on it. Bytes pending then, or at Close, are dropped; their
// calls fail in the same way.
//
// pending has no bound of its own: while a write is stuck (a peer that stops
// reading), it holds the requests of the calls made meanwhile, each of which
// waits for its answer or its context. Without the wrapper those calls would
// instead block in rpc.Client.Go, their contexts unheeded.
//
// net/rpc makes one Write at a time (its Client holds a mutex across
// WriteRequest), but Write and Close are safe for concurrent use. The flusher
// runs only while there is something to write: the Write that queues onto an
// empty queue starts it, and it returns once the queue is empty, so an idle
// connection (a client of 10,000 nodes has many) holds no goroutine. Close
// waits for it.
type coalescingConn struct {
	net.Conn

	solo atomic.Bool // set by countingCodec: no other call is outstanding

	mu       sync.Mutex
	pending  []byte // copied by Write, not yet taken by the flusher
	spare    []byte // the flusher's last batch, emptied, for reuse
	writing  bool   // an inline Write or the flusher is in Conn.Write
	flushing bool   // a flusher goroutine is running
	err      error  // sticky: the first write error, or why writing stopped

	flushers sync.WaitGroup // Close waits for the flusher
	flushFn  func()         // c.flush, bound once: `go c.flush()` would allocate its closure per batch

	closeOnce sync.Once
	closeErr  error
}

func newCoalescingConn(conn net.Conn) *coalescingConn {
	c := &coalescingConn{Conn: conn}
	c.flushFn = c.flush
	return c
}

// Write writes p inline or queues it for the flusher; see coalescingConn.
func (c *coalescingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return 0, err
	}
	if c.writing || len(c.pending) > 0 || !c.solo.Load() {
		c.pending = append(c.pending, p...)
		start := c.startLocked()
		c.mu.Unlock()
		if start {
			go c.flushFn()
		}
		return len(p), nil
	}
	c.writing = true // the flusher may not start until this write ends
	c.mu.Unlock()

	n, err := c.Conn.Write(p)

	c.mu.Lock()
	c.writing = false
	if err != nil {
		c.haltLocked(err)
	}
	// Bytes queued meanwhile (only if Writes were made concurrently) found
	// this write in progress and left them to be started here.
	start := err == nil && len(c.pending) > 0 && c.startLocked()
	c.mu.Unlock()
	if err != nil {
		c.closeConn()
	} else if start {
		go c.flushFn()
	}
	return n, err
}

// startLocked reports whether the caller is to start the flusher (with c.mu
// held): when none runs and no write is in progress, whose end would start
// it. It counts the flusher in before c.mu is released, so that Close, which
// halts under c.mu first, waits for every flusher started.
func (c *coalescingConn) startLocked() bool {
	if c.flushing || c.writing || c.err != nil {
		return false
	}
	c.flushing = true
	c.flushers.Add(1)
	return true
}

// flush writes pending in batches until it is empty or writing stops.
func (c *coalescingConn) flush() {
	defer c.flushers.Done()
	// Let the callers that are ready to run queue their requests first, as
	// grpc-go's loopyWriter does before a small flush: the new goroutine
	// runs next on its P, so without this the flusher would, on one P, take
	// each request alone.
	runtime.Gosched()
	for {
		c.mu.Lock()
		if c.err != nil || len(c.pending) == 0 || c.writing {
			// An inline Write in progress starts a flusher again when it
			// ends, if bytes are pending then: two writers never overlap.
			c.flushing = false
			c.mu.Unlock()
			return
		}
		batch := c.pending
		c.pending, c.spare = c.spare[:0], nil
		c.writing = true
		c.mu.Unlock()

		_, err := c.Conn.Write(batch)

		c.mu.Lock()
		c.writing = false
		if cap(batch) <= maxRetained {
			c.spare = batch[:0]
		}
		if err != nil {
			c.haltLocked(err)
			c.flushing = false
		}
		c.mu.Unlock()
		if err != nil {
			c.closeConn()
			return
		}
	}
}

// halt stops writing: later Writes fail with err (unless an earlier error
// stands), pending bytes are dropped and no flusher starts or goes on.
func (c *coalescingConn) halt(err error) {
	c.mu.Lock()
	c.haltLocked(err)
	c.mu.Unlock()
}

// haltLocked is halt with c.mu held.
func (c *coalescingConn) haltLocked(err error) {
	if c.err == nil {
		c.err = err
	}
	c.pending = nil
}

func (c *coalescingConn) closeConn() error {
	c.closeOnce.Do(func() { c.closeErr = c.Conn.Close() })
	return c.closeErr
}

// Close drops pending bytes, closes the connection and waits for the
// flusher, if one runs, which closing the connection unblocks. It is idempotent: every
// call returns the result of closing the connection.
func (c *coalescingConn) Close() error {
	c.halt(net.ErrClosed)
	err := c.closeConn()
	c.flushers.Wait()
	return err
}

// countingCodec wraps the configured codec to count the calls outstanding on
// a coalescingConn, that is written and not yet answered, and tells the conn
// before each request whether it is the only one. The count steers only the
// choice between an inline and a queued write, never the order of bytes; it
// can drift (a request that fails half-written may still be answered) at the
// cost of a handoff or of a batch missed, no more.
//
// It also stops the conn's writing when a read fails: net/rpc ends the
// client on any error reading a response, so nothing written after one could
// be answered. Close closes the conn even if the inner codec does not.
type countingCodec struct {
	rpc.ClientCodec
	conn        *coalescingConn
	outstanding atomic.Int64
}

var _ rpc.ClientCodec = (*countingCodec)(nil)

func (c *countingCodec) WriteRequest(r *rpc.Request, body any) error {
	c.conn.solo.Store(c.outstanding.Add(1) <= 1)
	if err := c.ClientCodec.WriteRequest(r, body); err != nil {
		c.outstanding.Add(-1)
		return err
	}
	return nil
}

func (c *countingCodec) ReadResponseHeader(r *rpc.Response) error {
	if err := c.ClientCodec.ReadResponseHeader(r); err != nil {
		c.conn.halt(err)
		return err
	}
	c.outstanding.Add(-1)
	return nil
}

func (c *countingCodec) ReadResponseBody(body any) error {
	err := c.ClientCodec.ReadResponseBody(body)
	if err != nil {
		c.conn.halt(err)
	}
	return err
}

func (c *countingCodec) Close() error {
	err := c.ClientCodec.Close()
	c.conn.Close()
	return err
}
