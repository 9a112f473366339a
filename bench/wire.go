package bench

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
)

// The one method every client calls. Request and reply are the same bytes:
// the server echoes the payload, so both directions carry it.
const (
	rpcMethod  = "Echo.Echo"              // net/rpc: service "Echo", method "Echo"
	grpcMethod = "/lbrpc.bench.Echo/Echo" // gRPC: the same method, registered by hand
)

// Echo is the net/rpc service of the bench servers.
type Echo struct{ n *serverNode }

// Echo answers args, after the node's injected latency.
func (e *Echo) Echo(args []byte, reply *[]byte) error {
	e.n.delay()
	*reply = args
	return nil
}

// grpcDesc registers the Echo method by hand: no protoc, no protobuf. The
// messages are raw bytes carried by rawCodec.
var grpcDesc = grpc.ServiceDesc{
	ServiceName: "lbrpc.bench.Echo",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Echo",
		Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			var in []byte
			if err := dec(&in); err != nil {
				return nil, err
			}
			srv.(*serverNode).delay()
			return &in, nil
		},
	}},
	Metadata: "lbrpc/bench/wire.go",
}

// rawCodec is a gRPC codec for *[]byte messages: the bytes are the message.
// It is the cheapest codec gRPC can have, so gRPC's figures are its
// transport's, not protobuf's. Unmarshal reuses the reply's capacity, as
// gob does for raw net/rpc.
type rawCodec struct{}

var errNotBytes = errors.New("bench: raw codec carries *[]byte only")

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	p, ok := v.(*[]byte)
	if !ok {
		return nil, errNotBytes
	}
	return mem.BufferSlice{mem.SliceBuffer(*p)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	p, ok := v.(*[]byte)
	if !ok {
		return errNotBytes
	}
	b := (*p)[:0]
	for _, buf := range data {
		b = append(b, buf.ReadOnlyData()...)
	}
	*p = b
	return nil
}

func (rawCodec) Name() string { return "lbrpc-raw" }

// payload returns n bytes of a fixed pattern.
func payload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + i%26)
	}
	return b
}

// sleepFor waits d; zero is free.
func sleepFor(d time.Duration) {
	if d > 0 {
		time.Sleep(d)
	}
}
