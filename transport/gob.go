package transport

import (
	"bufio"
	"encoding/gob"
	"io"
	"net/rpc"
)

// gobCodec is net/rpc's gob client codec, which net/rpc does not export, so
// that the default codec can run over a wrapped connection. It does what
// rpc.NewClient's does, byte for byte: each request is gob-encoded, header
// then body, into a bufio.Writer flushed once per request, and answers are
// decoded from the connection through a bufio.Reader (gob.NewDecoder adds
// it). A stock rpc.Server serves it.
type gobCodec struct {
	rwc io.ReadWriteCloser
	dec *gob.Decoder
	enc *gob.Encoder
	buf *bufio.Writer
}

// newGobCodec is a Codec for net/rpc's gob protocol.
func newGobCodec(rwc io.ReadWriteCloser) rpc.ClientCodec {
	buf := bufio.NewWriter(rwc)
	return &gobCodec{rwc: rwc, dec: gob.NewDecoder(rwc), enc: gob.NewEncoder(buf), buf: buf}
}

func (c *gobCodec) WriteRequest(r *rpc.Request, body any) error {
	if err := c.enc.Encode(r); err != nil {
		return err
	}
	if err := c.enc.Encode(body); err != nil {
		return err
	}
	return c.buf.Flush()
}

func (c *gobCodec) ReadResponseHeader(r *rpc.Response) error { return c.dec.Decode(r) }

func (c *gobCodec) ReadResponseBody(body any) error { return c.dec.Decode(body) }

func (c *gobCodec) Close() error { return c.rwc.Close() }
