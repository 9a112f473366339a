package etcd

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/lbrpc/lbrpc/registry"
)

// Registration is a node kept registered under a lease by Register, the only
// way to make one. Its methods are safe for concurrent use.
type Registration struct {
	client *clientv3.Client
	key    string
	value  string
	ttl    time.Duration // whole seconds
	cfg    config

	cancel    context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
	err       error // set by run before done is closed
}

// Register writes node under prefix/service/node.Addr (see WithPrefix) with
// a lease of ttl, rounded up to whole seconds, and keeps the lease alive from
// a goroutine of its own until ctx ends or Close is called; then it revokes
// the lease, which deletes the key.
//
// ctx is the registration's lifetime, not a timeout for the call: a ctx with
// a deadline deregisters the node at that deadline. Register returns once
// the key is written, or with an error, leaving nothing behind, if that does
// not happen within ttl.
//
// If the lease is lost afterwards (etcd was unreachable for longer than ttl,
// or the lease was revoked), the key is written again under a new lease, with
// backoff (see WithBackoff), until that succeeds or ctx ends.
//
// Weight is written as given: 0 asks clients to drain the node, so set it to
// 1 unless nodes are weighed. A process that dies without Close leaves its key
// until the lease expires, ttl later.
//
// The Registration does not close client; close client after it. A nil ctx
// is registry.ErrNilContext.
func Register(ctx context.Context, client *clientv3.Client, service string, node registry.Node, ttl time.Duration, opts ...Option) (*Registration, error) {
	if ctx == nil {
		return nil, registry.ErrNilContext
	}
	if client == nil {
		return nil, errors.New("lbrpc/registry/etcd: nil client")
	}
	if err := checkService(service); err != nil {
		return nil, err
	}
	node.Addr = strings.TrimSpace(node.Addr)
	switch {
	case node.Addr == "":
		return nil, errors.New("lbrpc/registry/etcd: empty node address")
	case node.Weight < 0:
		return nil, fmt.Errorf("lbrpc/registry/etcd: negative weight %d", node.Weight)
	case ttl < time.Second:
		return nil, fmt.Errorf("lbrpc/registry/etcd: ttl %v is under a second", ttl)
	}
	c, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	v, err := encodeNode(node)
	if err != nil {
		return nil, fmt.Errorf("lbrpc/registry/etcd: %w", err)
	}
	rctx, cancel := context.WithCancel(ctx)
	r := &Registration{
		client: client,
		key:    c.servicePrefix(service) + node.Addr,
		value:  v,
		ttl:    (ttl + time.Second - 1).Truncate(time.Second),
		cfg:    c,
		cancel: cancel,
		done:   make(chan struct{}),
	}
	lease, ka, err := r.register(rctx)
	if err != nil {
		cancel()
		return nil, err
	}
	go r.run(rctx, lease, ka)
	return r, nil
}

// Key returns the etcd key the node is written under.
func (r *Registration) Key() string { return r.key }

// Close revokes the lease, deleting the key, and waits for the
// Registration's goroutine. It waits at most the ttl for etcd; if the revoke
// fails, the key goes when the lease expires. Close returns the revoke's
// error; calling it again returns the same error.
func (r *Registration) Close() error {
	r.closeOnce.Do(r.cancel)
	<-r.done
	return r.err
}

// register grants a lease, writes the key under it and starts keeping it
// alive until ctx ends.
func (r *Registration) register(ctx context.Context) (clientv3.LeaseID, <-chan *clientv3.LeaseKeepAliveResponse, error) {
	// A put that lands later than ttl after the grant would fail anyway.
	actx, cancel := context.WithTimeout(ctx, r.ttl)
	defer cancel()
	grant, err := r.client.Grant(actx, int64(r.ttl/time.Second))
	if err != nil {
		return 0, nil, fmt.Errorf("lbrpc/registry/etcd: grant lease for %s: %w", r.key, err)
	}
	_, err = r.client.Put(actx, r.key, r.value, clientv3.WithLease(grant.ID))
	if err == nil {
		var ka <-chan *clientv3.LeaseKeepAliveResponse
		if ka, err = r.client.KeepAlive(ctx, grant.ID); err == nil {
			return grant.ID, ka, nil
		}
	}
	r.revoke(context.WithoutCancel(ctx), grant.ID)
	return 0, nil, fmt.Errorf("lbrpc/registry/etcd: register %s: %w", r.key, err)
}

func (r *Registration) revoke(ctx context.Context, lease clientv3.LeaseID) error {
	ctx, cancel := context.WithTimeout(ctx, r.ttl)
	defer cancel()
	_, err := r.client.Revoke(ctx, lease)
	if err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("lbrpc/registry/etcd: revoke lease of %s: %w", r.key, err)
	}
	return nil
}

// run drains the keep-alive responses, registers again when the lease is
// lost, and revokes the lease when ctx ends.
func (r *Registration) run(ctx context.Context, lease clientv3.LeaseID, ka <-chan *clientv3.LeaseKeepAliveResponse) {
	defer close(r.done)
	bo := newBackoff(r.cfg)
	for ctx.Err() == nil {
		for range ka {
		}
		// The keep-alive channel is closed: ctx ended, the client was
		// closed, or the lease is gone.
		l, k, err := r.reregister(ctx, &bo)
		if err != nil {
			break
		}
		lease, ka = l, k
	}
	if r.client.Ctx().Err() != nil {
		r.err = fmt.Errorf("lbrpc/registry/etcd: client closed; %s stays until its lease expires", r.key)
		return
	}
	// The last lease may be lost, but the key may still be on it.
	r.err = r.revoke(context.WithoutCancel(ctx), lease)
}

// reregister registers again, with backoff, until it succeeds, ctx ends or
// the client is closed.
func (r *Registration) reregister(ctx context.Context, bo *backoff) (clientv3.LeaseID, <-chan *clientv3.LeaseKeepAliveResponse, error) {
	defer bo.reset()
	for {
		if err := cmp.Or(ctx.Err(), r.client.Ctx().Err()); err != nil {
			return 0, nil, err
		}
		lease, ka, err := r.register(ctx)
		if err == nil {
			return lease, ka, nil
		}
		t := time.NewTimer(bo.next())
		select {
		case <-ctx.Done():
		case <-r.client.Ctx().Done():
		case <-t.C:
		}
		t.Stop()
	}
}
