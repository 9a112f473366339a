package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/rpc"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kit/kit/circuitbreaker"
	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	"github.com/go-kit/kit/sd/lb"
	gobreakerv1 "github.com/sony/gobreaker"
	"github.com/sony/gobreaker/v2"
	"go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/lbrpc/lbrpc"
	"github.com/lbrpc/lbrpc/middleware"
	"github.com/lbrpc/lbrpc/picker"
	"github.com/lbrpc/lbrpc/registry"
	"github.com/lbrpc/lbrpc/transport"
)

// The clients, by the names Config.Clients and the report use.
const (
	Raw       = "net/rpc"    // raw rpc.Client per node, hand-rolled round robin: the ceiling
	LBRPC     = "lbrpc"      // lbrpc, round robin, no middleware
	LBRPCFull = "lbrpc-full" // lbrpc, full chain, FullChainPicker
	GoKit     = "go-kit"     // go-kit sd/lb round robin + lb.Retry + gobreaker
	GRPC      = "grpc-go"    // grpc-go, round_robin, one ClientConn

	// LBRPCNoCoalesce is lbrpc-full with write coalescing off
	// (transport.WithWriteCoalescing(false)): what coalescing is worth.
	LBRPCNoCoalesce = "lbrpc-nocoalesce"
)

// AllClients lists the default clients in report order.
var AllClients = []string{Raw, LBRPC, LBRPCFull, GoKit, GRPC}

// ExtraClients may be asked for by name but are not measured by default.
var ExtraClients = []string{LBRPCNoCoalesce}

// caller is one client under test. call is safe for concurrent use; the
// request is the client's payload, fixed when it is made.
type caller interface {
	call(ctx context.Context, reply *[]byte) error
	close() error
}

// Settings shared by the clients that have them, so that none is tuned
// differently from another.
const (
	attempts       = 3           // one call and two retries at most
	breakerTimeout = time.Second // gobreaker's defaults but this: a node killed mid-cell is tried again within the cell
	kitTimeout     = 5 * time.Second
	redialBackoff  = 100 * time.Millisecond // raw and go-kit: wait before redialling a node
)

func newCaller(name string, a Addrs, args []byte) (caller, error) {
	switch name {
	case Raw:
		return newRaw(a.RPC, args), nil
	case LBRPC:
		return newLBRPC(a.RPC, args, false)
	case LBRPCFull:
		return newLBRPC(a.RPC, args, true)
	case LBRPCNoCoalesce:
		return newLBRPC(a.RPC, args, true, lbrpc.WithTransportOptions(transport.WithWriteCoalescing(false)))
	case GoKit:
		return newGoKit(a.RPC, args), nil
	case GRPC:
		return newGRPC(a.GRPC, args)
	}
	return nil, fmt.Errorf("bench: unknown client %q (have %v and %v)", name, AllClients, ExtraClients)
}

// rpcConn is one lazily (re)dialled rpc.Client, for the raw and go-kit
// clients: neither library reconnects, so the harness gives both the same
// minimal redial (at most one dial per redialBackoff), or a killed node
// would stay dead for them after its restart.
type rpcConn struct {
	addr string
	c    atomic.Pointer[rpc.Client]

	mu      sync.Mutex
	retryAt time.Time
}

var errNodeDown = errors.New("bench: node down, waiting to redial")

func (r *rpcConn) get() (*rpc.Client, error) {
	if c := r.c.Load(); c != nil {
		return c, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.c.Load(); c != nil {
		return c, nil
	}
	if time.Now().Before(r.retryAt) {
		return nil, errNodeDown
	}
	conn, err := net.DialTimeout("tcp", r.addr, time.Second)
	if err != nil {
		r.retryAt = time.Now().Add(redialBackoff)
		return nil, err
	}
	c := rpc.NewClient(conn)
	r.c.Store(c)
	return c, nil
}

// failed drops c after an error that was not the server's answer.
func (r *rpcConn) failed(c *rpc.Client, err error) {
	if _, ok := err.(rpc.ServerError); ok {
		return
	}
	if r.c.CompareAndSwap(c, nil) {
		c.Close()
	}
}

func (r *rpcConn) close() {
	if c := r.c.Swap(nil); c != nil {
		c.Close()
	}
}

func dialAll(addrs []string) []*rpcConn {
	conns := make([]*rpcConn, len(addrs))
	for i, a := range addrs {
		conns[i] = &rpcConn{addr: a}
		conns[i].get() // a failure is retried on use
	}
	return conns
}

// rawClient is the ceiling: rpc.Client.Call on one connection per node,
// taken in turn.
type rawClient struct {
	conns []*rpcConn
	next  atomic.Uint64
	args  any
}

func newRaw(addrs []string, args []byte) *rawClient {
	return &rawClient{conns: dialAll(addrs), args: args}
}

func (c *rawClient) call(_ context.Context, reply *[]byte) error {
	rc := c.conns[c.next.Add(1)%uint64(len(c.conns))]
	cl, err := rc.get()
	if err != nil {
		return err
	}
	if err := cl.Call(rpcMethod, c.args, reply); err != nil {
		rc.failed(cl, err)
		return err
	}
	return nil
}

func (c *rawClient) close() error {
	for _, rc := range c.conns {
		rc.close()
	}
	return nil
}

// lbrpcClient is lbrpc.Client, bare or with the full chain.
type lbrpcClient struct {
	c    *lbrpc.Client
	args any
}

// FullChainOptions are the options of the lbrpc-full client: every built-in
// link of the chain, with tracing on a no-op provider and a rate limit far
// above what the machine can reach (a finite one, so the limiter does its
// real work on every call).
func FullChainOptions() []lbrpc.Option {
	return []lbrpc.Option{
		lbrpc.WithPicker(FullChainPicker()),
		lbrpc.WithTracing(noop.NewTracerProvider()),
		lbrpc.WithRateLimit(rate.Limit(1e9), 1_000_000, middleware.Wait),
		lbrpc.WithCircuitBreaker(gobreaker.Settings{Timeout: breakerTimeout}),
		lbrpc.WithRetry(attempts - 1),
	}
}

func newLBRPC(addrs []string, args []byte, full bool, more ...lbrpc.Option) (*lbrpcClient, error) {
	opts := []lbrpc.Option{
		lbrpc.WithRegistry(registry.Static(addrs...)),
		lbrpc.WithPicker(picker.RoundRobin()),
	}
	if full {
		opts = append(opts, FullChainOptions()...)
	}
	opts = append(opts, more...)
	c, err := lbrpc.New(opts...)
	if err != nil {
		return nil, err
	}
	return &lbrpcClient{c: c, args: args}, nil
}

func (c *lbrpcClient) call(ctx context.Context, reply *[]byte) error {
	return c.c.Call(ctx, rpcMethod, c.args, reply)
}

func (c *lbrpcClient) close() error { return c.c.Close() }

// goKitClient is go-kit's recipe for a load-balanced client: one endpoint
// per instance, each behind its own gobreaker (circuitbreaker.Gobreaker),
// an sd.FixedEndpointer, lb.NewRoundRobin and lb.Retry. go-kit has no
// net/rpc transport, so the endpoint is written here the way lbrpc's
// transport calls: rpc.Client.Go and a select on ctx, which lb.Retry's
// deadline needs.
type goKitClient struct {
	conns []*rpcConn
	e     endpoint.Endpoint
	args  any
}

func newGoKit(addrs []string, args []byte) *goKitClient {
	c := &goKitClient{conns: dialAll(addrs), args: args}
	eps := make(sd.FixedEndpointer, len(c.conns))
	for i, rc := range c.conns {
		cb := gobreakerv1.NewCircuitBreaker(gobreakerv1.Settings{Name: rc.addr, Timeout: breakerTimeout})
		eps[i] = circuitbreaker.Gobreaker(cb)(rpcEndpoint(rc))
	}
	c.e = lb.Retry(attempts, kitTimeout, lb.NewRoundRobin(eps))
	return c
}

func rpcEndpoint(rc *rpcConn) endpoint.Endpoint {
	return func(ctx context.Context, request any) (any, error) {
		cl, err := rc.get()
		if err != nil {
			return nil, err
		}
		var reply []byte
		call := cl.Go(rpcMethod, request, &reply, make(chan *rpc.Call, 1))
		select {
		case <-call.Done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if call.Error != nil {
			rc.failed(cl, call.Error)
			return nil, call.Error
		}
		return reply, nil
	}
}

func (c *goKitClient) call(ctx context.Context, reply *[]byte) error {
	resp, err := c.e(ctx, c.args)
	if err != nil {
		return err
	}
	*reply = resp.([]byte)
	return nil
}

func (c *goKitClient) close() error {
	for _, rc := range c.conns {
		rc.close()
	}
	return nil
}

// grpcClient is grpc-go tuned as it would be in production: one ClientConn
// for the run, the round_robin policy from the service config, addresses
// from a manual resolver, and a raw-bytes codec (no protobuf) that reuses
// the reply's buffer.
type grpcClient struct {
	cc   *grpc.ClientConn
	args any
}

func newGRPC(addrs []string, args []byte) (*grpcClient, error) {
	r := manual.NewBuilderWithScheme("lbrpcbench")
	st := resolver.State{}
	for _, a := range addrs {
		st.Addresses = append(st.Addresses, resolver.Address{Addr: a})
	}
	r.InitialState(st)
	cc, err := grpc.NewClient(r.Scheme()+":///echo",
		grpc.WithResolvers(r),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig": [{"round_robin": {}}]}`),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})),
	)
	if err != nil {
		return nil, err
	}
	cc.Connect()
	return &grpcClient{cc: cc, args: &args}, nil
}

func (c *grpcClient) call(ctx context.Context, reply *[]byte) error {
	return c.cc.Invoke(ctx, grpcMethod, c.args, reply)
}

func (c *grpcClient) close() error { return c.cc.Close() }
