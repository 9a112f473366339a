package bench

import (
	"bufio"
	"bytes"
	"encoding/gob"
	"io"
	"net/rpc"
	"sync"
)

// coalescingCodec is net/rpc's gob client codec with its writes coalesced:
// WriteRequest encodes into a buffer and returns, and one flusher goroutine
// per connection writes whatever has piled up, so requests made at the same
// time leave in one write(2) instead of one each. The profile of the
// loopback benchmark shows why: the client spends half its CPU in write.
//
// It is a prototype of a transport option (see docs/benchmarks.md), measured
// here as the lbrpc-coalesce client; it speaks the stock gob protocol, so
// servers need no change.
type coalescingCodec struct {
	rwc io.ReadWriteCloser
	dec *gob.Decoder
	enc *gob.Encoder // writes into the codec itself (Write), under mu

	mu      sync.Mutex
	pending *bytes.Buffer // encoded, not yet written
	spare   *bytes.Buffer
	err     error // the first write error; later requests fail with it

	kick    chan struct{} // capacity 1: there is something to write
	closing chan struct{}
	once    sync.Once
	done    chan struct{} // the flusher has returned
}

func newCoalescingCodec(conn io.ReadWriteCloser) rpc.ClientCodec {
	c := &coalescingCodec{
		rwc:     conn,
		dec:     gob.NewDecoder(bufio.NewReader(conn)),
		pending: new(bytes.Buffer),
		spare:   new(bytes.Buffer),
		kick:    make(chan struct{}, 1),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
	}
	c.enc = gob.NewEncoder(c)
	go c.flush()
	return c
}

// Write is the encoder's sink; net/rpc calls WriteRequest one at a time.
func (c *coalescingCodec) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	return c.pending.Write(p)
}

func (c *coalescingCodec) WriteRequest(r *rpc.Request, body any) error {
	if err := c.enc.Encode(r); err != nil {
		return err
	}
	if err := c.enc.Encode(body); err != nil {
		return err
	}
	select {
	case c.kick <- struct{}{}:
	default: // a flush is already due and will take this request too
	}
	return nil
}

func (c *coalescingCodec) flush() {
	defer close(c.done)
	for {
		select {
		case <-c.kick:
		case <-c.closing:
			return
		}
		c.mu.Lock()
		out := c.pending
		c.pending, c.spare = c.spare, out
		c.mu.Unlock()
		if out.Len() == 0 {
			continue
		}
		_, err := c.rwc.Write(out.Bytes())
		out.Reset()
		if err != nil {
			c.mu.Lock()
			c.err = err
			c.mu.Unlock()
			c.rwc.Close() // the reader fails too, and net/rpc ends the pending calls
			return
		}
	}
}

func (c *coalescingCodec) ReadResponseHeader(r *rpc.Response) error { return c.dec.Decode(r) }
func (c *coalescingCodec) ReadResponseBody(body any) error          { return c.dec.Decode(body) }

// Close stops the flusher and closes the connection.
func (c *coalescingCodec) Close() error {
	var err error
	c.once.Do(func() {
		close(c.closing)
		err = c.rwc.Close()
		<-c.done
	})
	return err
}
