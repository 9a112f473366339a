// Package transport carries calls to nodes over stock net/rpc.
//
// The default Transport, made by New, keeps one multiplexed *rpc.Client per
// node. It dials when a node arrives (or on first use), with a dial timeout;
// it re-dials a broken connection with exponential backoff and jitter, never
// caches a dead one and never dials a dead node in a tight loop; and it
// recycles a connection after a run of timed-out calls, because net/rpc keeps
// every abandoned call in its pending map until the connection closes.
//
// Calls honour their context: Call returns as soon as ctx ends. Each call is
// decoded into a fresh value of the reply's type and copied into the caller's
// reply only on success, so a late answer never writes into a reply whose
// Call has returned.
//
// Writes are coalesced (WithWriteCoalescing, on by default): a request made
// while other calls are outstanding on its connection leaves with the
// requests made at the same time, in one write(2), by a goroutine of the
// connection; a lone caller's request is written inline, as net/rpc does.
// The protocol is unchanged, for every codec.
//
// TCP with gob is the default; HTTP (the CONNECT handshake of
// rpc.DialHTTPPath), JSON-RPC (net/rpc/jsonrpc) and any rpc.ClientCodec or
// net dialer are options.
package transport
