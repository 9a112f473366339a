package transport

import (
	"context"
	"errors"
	"io"
	"net"
	"net/rpc"
	"net/rpc/jsonrpc"
	"time"
)

// Dialer opens a network connection, like net.Dialer.DialContext.
type Dialer func(ctx context.Context, network, addr string) (net.Conn, error)

// Codec wraps a connection in an rpc.ClientCodec, like jsonrpc.NewClientCodec.
type Codec func(conn io.ReadWriteCloser) rpc.ClientCodec

// Option configures New.
type Option func(*config) error

type config struct {
	dialer       Dialer
	codec        Codec // nil means net/rpc's gob codec
	wholeAnswers bool  // the codec reads each answer whole before decoding its value: the built-in ones
	httpPath     string
	useHTTP      bool
	dialTimeout  time.Duration
	backoffBase  time.Duration
	backoffMax   time.Duration
	maxTimeouts  int
	drainTimeout time.Duration
	lazy         bool
	coalesce     bool // write coalescing (coalesce.go)
}

func defaultConfig() config {
	var d net.Dialer
	return config{
		dialer:       d.DialContext,
		dialTimeout:  5 * time.Second,
		backoffBase:  100 * time.Millisecond,
		backoffMax:   10 * time.Second,
		maxTimeouts:  5,
		drainTimeout: 30 * time.Second,
		coalesce:     true,
		wholeAnswers: true, // the gob codec
	}
}

// WithDialer sets how connections are opened (default: a net.Dialer over "tcp").
func WithDialer(d Dialer) Option {
	return func(c *config) error {
		if d == nil {
			return errors.New("lbrpc/transport: nil dialer")
		}
		c.dialer = d
		return nil
	}
}

// WithCodec sets the client codec (default: net/rpc's gob codec). The server
// must speak the same codec.
func WithCodec(codec Codec) Option {
	return func(c *config) error {
		if codec == nil {
			return errors.New("lbrpc/transport: nil codec")
		}
		c.codec, c.wholeAnswers = codec, false
		return nil
	}
}

// JSONRPC selects the JSON-RPC 1.0 codec of net/rpc/jsonrpc, for servers that
// serve connections with jsonrpc.ServeConn.
func JSONRPC() Option {
	return func(c *config) error {
		c.codec, c.wholeAnswers = jsonrpc.NewClientCodec, true
		return nil
	}
}

// WithHTTP makes the transport reach servers mounted with rpc.HandleHTTP (or
// Server.HandleHTTP) at path, as rpc.DialHTTPPath does. An empty path means
// rpc.DefaultRPCPath.
func WithHTTP(path string) Option {
	return func(c *config) error {
		if path == "" {
			path = rpc.DefaultRPCPath
		}
		c.useHTTP, c.httpPath = true, path
		return nil
	}
}

// WithDialTimeout bounds each dial, HTTP handshake included (default 5s). A
// dial that runs out of it is the node's failure, an *Error that does not
// match context.DeadlineExceeded, so callers retry it elsewhere.
func WithDialTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return errors.New("lbrpc/transport: dial timeout must be positive")
		}
		c.dialTimeout = d
		return nil
	}
}

// WithBackoff sets the redial backoff after failures: base doubles per
// consecutive failure up to max, with jitter (defaults 100ms and 10s).
func WithBackoff(base, max time.Duration) Option {
	return func(c *config) error {
		if base <= 0 || max < base {
			return errors.New("lbrpc/transport: backoff needs 0 < base <= max")
		}
		c.backoffBase, c.backoffMax = base, max
		return nil
	}
}

// WithMaxTimeouts sets how many calls in a row may time out on one
// connection before it is closed and re-dialled (default 5). This bounds the
// memory net/rpc holds for calls abandoned on a hung node.
func WithMaxTimeouts(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return errors.New("lbrpc/transport: max timeouts must be at least 1")
		}
		c.maxTimeouts = n
		return nil
	}
}

// WithDrainTimeout bounds how long a removed node's connection stays open
// for its calls in flight (default 30s).
func WithDrainTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return errors.New("lbrpc/transport: drain timeout must be positive")
		}
		c.drainTimeout = d
		return nil
	}
}

// WithLazyDial dials a node on its first call instead of when it arrives.
func WithLazyDial() Option {
	return func(c *config) error { c.lazy = true; return nil }
}

// WithWriteCoalescing turns write coalescing on or off (default on).
//
// net/rpc writes every request by itself, one write(2) per call, while
// holding the connection's request lock. With coalescing on, a request made
// while other calls are outstanding on its connection is copied into a
// buffer, and a goroutine of the connection, which runs only while the
// buffer is not empty, writes all that has piled up in a single write. That
// saves CPU when many calls run at once on each connection. A lone caller's
// request is still written inline, so a serial caller pays no goroutine
// handoff. With coalescing off, each request is written by itself, inline.
//
// Either way, on a TCP or Unix socket no caller waits for the peer to read:
// an inline write takes what the socket accepts at once and leaves the rest
// to the connection's goroutine, so a peer that stops reading holds no call
// past its context (WithMaxTimeouts then recycles the connection). A
// connection from WithDialer that is not the socket itself has no such
// write: with coalescing on, its writes are all made by the goroutine; off,
// they block the caller, as net/rpc's do.
//
// The bytes on the wire are those of the unchanged protocol, for every codec
// (gob, JSON-RPC or one set by WithCodec, which is handed a net.Conn wrapping
// the dialled one): servers need no change. A write error closes the
// connection, failing the calls pending on it.
func WithWriteCoalescing(on bool) Option {
	return func(c *config) error { c.coalesce = on; return nil }
}
