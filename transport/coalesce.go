package transport

import (
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
)

// maxRetained caps the capacity of a write buffer kept for reuse: a buffer
// that grew past it for a burst of large requests is dropped after its write,
// so that the burst does not pin memory for the life of the connection.
const maxRetained = 64 << 10

// coalescingConn is the net.Conn every codec writes to. With batching (write
// coalescing), writes made while other calls are outstanding on the
// connection are gathered into one buffer that a flusher goroutine writes to
// the connection in one Write: requests made at the same time share a
// write(2) instead of taking one each. Reads and the other methods of
// net.Conn pass through.
//
// A Write is inline when nothing is pending and nobody is writing, and, with
// batching, its request is the only call outstanding: it writes what the
// socket takes at once, without waiting (write(2) on the non-blocking
// socket), and queues the rest. Otherwise it copies p, wakes the flusher and
// returns len(p), nil. Either way no Write waits for the peer to read, so a
// caller whose peer stops reading is not stuck in rpc.Client.Go, deaf to its
// context, nor is every caller after it. (A connection that is not the
// socket itself, from a custom dialer, has no non-blocking write: with
// batching its writes all go through the flusher; without, they are made
// inline and block, as net/rpc's do.) Which way a Write goes is a heuristic
// (see watchCodec);
// the order of the bytes does not depend on it: Writes append to pending in
// the order they are made, and a Write goes inline only when pending is
// empty and no write to the connection is in progress, that is when every
// earlier byte has been written.
//
// The first write error is sticky: every later Write returns it, and the
// connection is closed, so that the codec's reader fails and net/rpc ends
// every call pending on it. Bytes pending then, or at Close, are dropped; their
// calls fail in the same way.
//
// pending has no bound of its own: while a write is stuck (a peer that stops
// reading), it holds the requests of the calls made meanwhile, each of which
// waits for its answer or its context; their timeouts recycle the
// connection (WithMaxTimeouts), which drops it. Without the wrapper those
// calls would instead block in rpc.Client.Go, their contexts unheeded.
//
// net/rpc makes one Write at a time (its Client holds a mutex across
// WriteRequest), but Write and Close are safe for concurrent use. The flusher
// runs only while there is something to write: the Write that queues onto an
// empty queue starts it, and it returns once the queue is empty, so an idle
// connection (a client of 10,000 nodes has many) holds no goroutine. Close
// waits for it.
type coalescingConn struct {
	net.Conn

	// batch queues a request made while other calls are outstanding, to
	// share a write with them (write coalescing). Without it a request is
	// queued only behind bytes not yet written.
	batch bool
	solo  atomic.Bool // set by watchCodec: no other call is outstanding

	// raw writes inline without blocking; nil if the conn has no raw
	// connection, and then every Write is queued. rawP, rawN and rawErr are
	// rawWrite's argument and results, fields so that rawFn, bound once,
	// allocates nothing; only the inline writer uses them.
	raw    syscall.RawConn
	rawFn  func(fd uintptr) bool
	rawP   []byte
	rawN   int
	rawErr error

	mu       sync.Mutex
	pending  []byte // copied by Write, not yet taken by the flusher
	spare    []byte // the flusher's last batch, emptied, for reuse
	writing  bool   // an inline Write or the flusher is in Conn.Write
	flushing bool   // a flusher goroutine is running
	err      error  // sticky: the first write error, or why writing stopped
	wErr     error  // the first write error, if writing stopped for one

	rfailed atomic.Bool  // a Read failed
	taken   atomic.Int64 // Writes taken, written or queued (see watchCodec.WriteRequest)

	flushers sync.WaitGroup // Close waits for the flusher
	flushFn  func()         // c.flush, bound once: `go c.flush()` would allocate its closure per batch

	closeOnce sync.Once
	closeErr  error
}

func newCoalescingConn(conn net.Conn, batch bool) *coalescingConn {
	c := &coalescingConn{Conn: conn, raw: rawConnOf(conn), batch: batch}
	c.flushFn = c.flush
	c.rawFn = c.rawWrite
	return c
}

// Read reads from the connection and notes a failure: a codec's decoding
// error with no failed read behind it leaves the stream in step (see
// watchCodec.ReadResponseBody).
func (c *coalescingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.rfailed.Store(true)
	}
	return n, err
}

// readFailed reports whether a Read failed.
func (c *coalescingConn) readFailed() bool { return c.rfailed.Load() }

// Write writes p inline or queues it for the flusher; see coalescingConn.
func (c *coalescingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return 0, err
	}
	if c.writing || len(c.pending) > 0 || c.batch && (!c.solo.Load() || c.raw == nil) {
		c.pending = append(c.pending, p...)
		c.taken.Add(1)
		start := c.startLocked()
		c.mu.Unlock()
		if start {
			go c.flushFn()
		}
		return len(p), nil
	}
	c.writing = true // the flusher may not start until this write ends
	c.taken.Add(1)
	c.mu.Unlock()

	var n int
	var err error
	if c.raw != nil {
		n, err = c.tryWrite(p)
	} else {
		n, err = c.Conn.Write(p) // without batching and a socket of its own: as net/rpc
	}

	c.mu.Lock()
	c.writing = false
	if err != nil {
		c.failLocked(err)
	} else if n < len(p) {
		// The socket's buffer is full (a slow or stuck peer): the rest goes
		// to the flusher, ahead of what was queued meanwhile, and the caller
		// returns, so that it waits for its answer where its context is
		// heeded.
		rest := append(make([]byte, 0, len(p)-n+len(c.pending)), p[n:]...)
		c.pending = append(rest, c.pending...)
	}
	// Bytes queued meanwhile (only if Writes were made concurrently) found
	// this write in progress and left them to be started here.
	start := err == nil && len(c.pending) > 0 && c.startLocked()
	c.mu.Unlock()
	if err != nil {
		c.closeConn()
		return n, err
	}
	if start {
		go c.flushFn()
	}
	return len(p), nil // all of p is written or queued
}

// tryWrite writes what of p the socket takes now, without waiting.
func (c *coalescingConn) tryWrite(p []byte) (int, error) {
	c.rawP = p
	err := c.raw.Write(c.rawFn)
	c.rawP = nil
	if err != nil {
		return 0, err
	}
	return c.rawN, c.rawErr
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
			c.failLocked(err)
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

// failLocked stops writing after a write failed, with c.mu held.
func (c *coalescingConn) failLocked(err error) {
	if c.err == nil {
		c.wErr = err
	}
	c.haltLocked(err)
}

// writeError returns the write error that stopped writing, if one did:
// the cause to give the calls that the closed connection fails.
func (c *coalescingConn) writeError() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.wErr
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

// writeFailed reports whether writing stopped: a write failed, a read
// failed (see watchCodec) or the conn was closed.
func (c *coalescingConn) writeFailed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err != nil
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
