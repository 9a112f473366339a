package etcd_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc/connectivity"

	"github.com/lbrpc/lbrpc/registry"
	"github.com/lbrpc/lbrpc/registry/etcd"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fast keeps retries quick in tests.
var fast = etcd.WithBackoff(10*time.Millisecond, 100*time.Millisecond)

func register(t *testing.T, cli *clientv3.Client, service string, node registry.Node, ttl time.Duration, opts ...etcd.Option) *etcd.Registration {
	t.Helper()
	// The context is the registration's lifetime, so no timeout here.
	reg, err := etcd.Register(context.Background(), cli, service, node, ttl, append([]etcd.Option{fast}, opts...)...)
	if err != nil {
		t.Fatalf("Register %s: %v", node.Addr, err)
	}
	t.Cleanup(func() { reg.Close() })
	return reg
}

func newRegistry(t *testing.T, cli *clientv3.Client, service string, opts ...etcd.Option) registry.Registry {
	t.Helper()
	reg, err := etcd.New(cli, service, append([]etcd.Option{fast}, opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return reg
}

func put(t *testing.T, cli *clientv3.Client, key, value string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := cli.Put(ctx, key, value); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

// noEmptySet fails the test on a snapshot with no nodes or on an error that
// comes with a set.
func noEmptySet(t *testing.T) func(result) {
	return func(res result) {
		t.Helper()
		switch {
		case res.err != nil && res.nodes != nil:
			t.Errorf("Next returned %v with error %v; want a nil set", res.nodes, res.err)
		case res.err == nil && len(res.nodes) == 0:
			t.Errorf("Next returned an empty set")
		}
	}
}

func TestNewValidates(t *testing.T) {
	c := startCluster(t)
	cli := c.client(t)
	tests := []struct {
		name    string
		client  *clientv3.Client
		service string
		opts    []etcd.Option
	}{
		{"nil client", nil, "svc", nil},
		{"empty service", cli, "", nil},
		{"slash in service", cli, "a/b", nil},
		{"empty prefix", cli, "svc", []etcd.Option{etcd.WithPrefix("")}},
		{"zero backoff", cli, "svc", []etcd.Option{etcd.WithBackoff(0, time.Second)}},
		{"max under base", cli, "svc", []etcd.Option{etcd.WithBackoff(time.Second, time.Millisecond)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if reg, err := etcd.New(tt.client, tt.service, tt.opts...); err == nil {
				t.Errorf("New = %v, nil; want an error", reg)
			}
		})
	}
}

func TestRegisterValidates(t *testing.T) {
	c := startCluster(t)
	cli := c.client(t)
	good := registry.Node{Addr: "10.0.0.1:1", Weight: 1}
	tests := []struct {
		name    string
		client  *clientv3.Client
		service string
		node    registry.Node
		ttl     time.Duration
		opts    []etcd.Option
	}{
		{"nil client", nil, "svc", good, time.Second, nil},
		{"empty service", cli, "", good, time.Second, nil},
		{"slash in service", cli, "a/b", good, time.Second, nil},
		{"empty addr", cli, "svc", registry.Node{Addr: " ", Weight: 1}, time.Second, nil},
		{"negative weight", cli, "svc", registry.Node{Addr: "a:1", Weight: -1}, time.Second, nil},
		{"ttl under a second", cli, "svc", good, 999 * time.Millisecond, nil},
		{"bad option", cli, "svc", good, time.Second, []etcd.Option{etcd.WithPrefix("")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if reg, err := etcd.Register(context.Background(), tt.client, tt.service, tt.node, tt.ttl, tt.opts...); err == nil {
				reg.Close()
				t.Errorf("Register succeeded; want an error")
			}
		})
	}
}

func TestRegisterAndWatch(t *testing.T) {
	c := startCluster(t)
	cli := c.client(t)
	rec := watch(t, newRegistry(t, cli, "svc"))

	// An empty prefix is an empty snapshot, not an error.
	if res := rec.next(); res.err != nil || res.nodes == nil || len(res.nodes) != 0 {
		t.Fatalf("first Next = %v, %v; want an empty non-nil set", res.nodes, res.err)
	}

	register(t, cli, "svc", registry.Node{Addr: "10.0.0.2:1", Weight: 1}, 5*time.Second)
	a := register(t, cli, "svc", registry.Node{Addr: "10.0.0.1:1", Weight: 3, Meta: map[string]string{"zone": "z1"}}, 5*time.Second)
	register(t, cli, "other", registry.Node{Addr: "10.0.0.9:1", Weight: 1}, 5*time.Second)
	register(t, cli, "svc2", registry.Node{Addr: "10.0.0.9:1", Weight: 1}, 5*time.Second)

	got := rec.untilAddrs("10.0.0.1:1", "10.0.0.2:1")
	want := []registry.Node{
		{Addr: "10.0.0.1:1", Weight: 3, Meta: map[string]string{"zone": "z1"}},
		{Addr: "10.0.0.2:1", Weight: 1},
	}
	if !slices.EqualFunc(got, want, sameNode) {
		t.Errorf("nodes = %v; want %v", got, want)
	}

	if err := a.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	rec.untilAddrs("10.0.0.2:1")
	pollKey(t, cli, a.Key(), func(r *clientv3.GetResponse) bool { return r.Count == 0 })

	// Ending the context also deletes the key.
	ctx, cancel := context.WithCancel(context.Background())
	d, err := etcd.Register(ctx, cli, "svc", registry.Node{Addr: "10.0.0.4:1", Weight: 1}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	rec.untilAddrs("10.0.0.2:1", "10.0.0.4:1")
	cancel()
	rec.untilAddrs("10.0.0.2:1")
	if err := d.Close(); err != nil {
		t.Errorf("Close after cancel: %v", err)
	}
}

func sameNode(a, b registry.Node) bool {
	if a.Addr != b.Addr || a.Weight != b.Weight || len(a.Meta) != len(b.Meta) {
		return false
	}
	for k, v := range a.Meta {
		if b.Meta[k] != v {
			return false
		}
	}
	return true
}

func TestKeyLayout(t *testing.T) {
	c := startCluster(t)
	cli := c.client(t)
	reg := register(t, cli, "svc", registry.Node{Addr: "10.0.0.1:1", Weight: 2, Meta: map[string]string{"v": "1"}}, 5*time.Second, etcd.WithPrefix("/custom/"))
	if got, want := reg.Key(), "/custom/svc/10.0.0.1:1"; got != want {
		t.Fatalf("Key = %q; want %q", got, want)
	}
	resp := pollKey(t, cli, reg.Key(), func(r *clientv3.GetResponse) bool { return r.Count == 1 })
	var v map[string]any
	if err := json.Unmarshal(resp.Kvs[0].Value, &v); err != nil {
		t.Fatal(err)
	}
	if v["addr"] != "10.0.0.1:1" || v["weight"] != 2.0 || v["meta"].(map[string]any)["v"] != "1" {
		t.Errorf("value = %s", resp.Kvs[0].Value)
	}
	if resp.Kvs[0].Lease == 0 {
		t.Error("key has no lease")
	}

	// Only a registry with the same prefix sees it.
	rec := watch(t, newRegistry(t, cli, "svc", etcd.WithPrefix("/custom")))
	rec.untilAddrs("10.0.0.1:1")
	other := watch(t, newRegistry(t, cli, "svc"))
	if res := other.next(); res.err != nil || len(res.nodes) != 0 {
		t.Errorf("default prefix: Next = %v, %v; want an empty set", res.nodes, res.err)
	}
}

// A process that dies without Close leaves its key until the lease expires.
func TestLeaseExpiry(t *testing.T) {
	c := startCluster(t)
	cli := c.client(t)
	rec := watch(t, newRegistry(t, cli, "svc"))
	rec.untilAddrs()

	register(t, cli, "svc", registry.Node{Addr: "10.0.0.1:1", Weight: 1}, 10*time.Second)
	dying := c.client(t)
	reg := register(t, dying, "svc", registry.Node{Addr: "10.0.0.2:1", Weight: 1}, time.Second)
	rec.untilAddrs("10.0.0.1:1", "10.0.0.2:1")

	dying.Close() // keep-alives stop; nothing revokes the lease
	rec.untilAddrs("10.0.0.1:1")
	if err := reg.Close(); err == nil {
		t.Error("Close after the client was closed: nil error; want one")
	}
}

// A lease lost behind the Registration's back is replaced.
func TestReregisterAfterLeaseLoss(t *testing.T) {
	c := startCluster(t)
	cli := c.client(t)
	rec := watch(t, newRegistry(t, cli, "svc"))
	rec.untilAddrs()

	reg := register(t, cli, "svc", registry.Node{Addr: "10.0.0.1:1", Weight: 1}, 2*time.Second) // keep-alives every 2/3 s
	rec.untilAddrs("10.0.0.1:1")
	first := pollKey(t, cli, reg.Key(), func(r *clientv3.GetResponse) bool { return r.Count == 1 }).Kvs[0].Lease

	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := cli.Revoke(ctx, clientv3.LeaseID(first)); err != nil {
		t.Fatal(err)
	}
	rec.untilAddrs()
	rec.untilAddrs("10.0.0.1:1")
	resp := pollKey(t, cli, reg.Key(), func(r *clientv3.GetResponse) bool { return r.Count == 1 })
	if resp.Kvs[0].Lease == first {
		t.Error("key is back on the revoked lease")
	}
}

// While etcd is unreachable Next reports errors with a nil set, never an
// empty set, and reports the set again when etcd is back.
func TestUnreachableKeepsLastSet(t *testing.T) {
	c := startCluster(t)
	direct := c.directClient(t)
	register(t, direct, "svc", registry.Node{Addr: "10.0.0.1:1", Weight: 1}, 10*time.Second)

	rec := watch(t, newRegistry(t, c.client(t), "svc"))
	rec.untilAddrs("10.0.0.1:1")

	c.fail()
	res := rec.until("error", func(res result) bool { return res.err != nil }, noEmptySet(t))
	if !errors.Is(res.err, etcd.ErrUnreachable) {
		t.Errorf("Next error = %v; want ErrUnreachable", res.err)
	}
	// Changes made meanwhile show up once etcd is back.
	register(t, direct, "svc", registry.Node{Addr: "10.0.0.2:1", Weight: 1}, 10*time.Second)
	c.restore()
	rec.until("snapshot after restore", func(res result) bool {
		return res.err == nil && slices.Equal(addrsOf(res.nodes), []string{"10.0.0.1:1", "10.0.0.2:1"})
	}, noEmptySet(t))
}

// An unreachable etcd at the start is an error, not an empty set.
func TestUnreachableAtStart(t *testing.T) {
	c := startCluster(t)
	register(t, c.directClient(t), "svc", registry.Node{Addr: "10.0.0.1:1", Weight: 1}, 10*time.Second)
	c.fail()
	rec := watch(t, newRegistry(t, c.client(t), "svc"))
	res := rec.next()
	if !errors.Is(res.err, etcd.ErrUnreachable) || res.nodes != nil {
		t.Fatalf("first Next = %v, %v; want nil, ErrUnreachable", res.nodes, res.err)
	}
	c.restore()
	rec.until("snapshot", func(res result) bool { return res.err == nil }, noEmptySet(t))
}

// A client whose connection has already failed (TRANSIENT_FAILURE, where
// gRPC stays while etcd is down) when Watch is called: the first Next still
// reports ErrUnreachable, rather than waiting for a state change that does
// not come. Several watchers, as the monitor and the first attempt race.
func TestUnreachableBeforeWatch(t *testing.T) {
	c := startCluster(t)
	register(t, c.directClient(t), "svc", registry.Node{Addr: "10.0.0.1:1", Weight: 1}, 10*time.Second)
	c.fail()
	cli := c.client(t)
	cli.ActiveConnection().Connect()
	deadline := time.Now().Add(wait)
	for cli.ActiveConnection().GetState() != connectivity.TransientFailure {
		if time.Now().After(deadline) {
			t.Fatal("the connection never failed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // into gRPC's reconnect backoff: no state change soon
	reg := newRegistry(t, cli, "svc")
	for i := range 8 {
		rec := watch(t, reg)
		if res := rec.next(); !errors.Is(res.err, etcd.ErrUnreachable) || res.nodes != nil {
			t.Fatalf("watcher %d: first Next = %v, %v; want nil, ErrUnreachable", i, res.nodes, res.err)
		}
		rec.stop()
	}
	c.restore()
	rec := watch(t, reg)
	rec.until("snapshot", func(res result) bool { return res.err == nil }, noEmptySet(t))
}

// After a restart on the same data directory the watch resumes, a lease
// that outlived the outage is kept, and a registration whose lease expired
// registers again.
func TestEtcdRestart(t *testing.T) {
	c := startCluster(t)
	cli := c.client(t)
	long := register(t, cli, "svc", registry.Node{Addr: "10.0.0.1:1", Weight: 1}, 30*time.Second)
	short := register(t, cli, "svc", registry.Node{Addr: "10.0.0.2:1", Weight: 1}, time.Second)
	rec := watch(t, newRegistry(t, cli, "svc"))
	rec.untilAddrs("10.0.0.1:1", "10.0.0.2:1")
	shortLease := pollKey(t, cli, short.Key(), func(r *clientv3.GetResponse) bool { return r.Count == 1 }).Kvs[0].Lease

	// Cut the registrations off until etcd expires the short lease, then
	// restart etcd.
	direct := c.directClient(t)
	c.fail()
	pollKey(t, direct, short.Key(), func(r *clientv3.GetResponse) bool { return r.Count == 0 })
	c.restart(nil)

	// The watcher reports the outage, never an empty set, and then both
	// nodes again.
	hasLong := func(res result) {
		t.Helper()
		if res.err == nil && !slices.Contains(addrsOf(res.nodes), "10.0.0.1:1") {
			t.Errorf("snapshot %v lost the long-lived node", addrsOf(res.nodes))
		}
		if res.err != nil && res.nodes != nil {
			t.Errorf("error %v came with set %v", res.err, res.nodes)
		}
	}
	rec.until("error", func(res result) bool { return res.err != nil }, hasLong)
	rec.until("snapshot after restart", func(res result) bool {
		return res.err == nil && slices.Equal(addrsOf(res.nodes), []string{"10.0.0.1:1", "10.0.0.2:1"})
	}, hasLong)
	pollKey(t, cli, short.Key(), func(r *clientv3.GetResponse) bool {
		return r.Count == 1 && r.Kvs[0].Lease != shortLease
	})

	if err := long.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	rec.untilAddrs("10.0.0.2:1")
}

// TestBadValues proves that keys whose values are not nodes (not JSON, JSON
// that is not an object, null included, a negative weight) are left out of
// the snapshot and reported once each, after it, as *BadValueErrors.
func TestBadValues(t *testing.T) {
	c := startCluster(t)
	cli := c.client(t)
	const p = "/lbrpc/services/svc/"
	put(t, cli, p+"10.0.0.1:1", `{"addr":"10.0.0.1:1","weight":2}`)
	put(t, cli, p+"junk", `not json`)
	put(t, cli, p+"neg", `{"addr":"10.0.0.3:1","weight":-1}`)
	put(t, cli, p+"10.0.0.4:1", `{}`)   // address from the key, weight 1
	put(t, cli, p+"10.0.0.8:1", `[]`)   // not an object
	put(t, cli, p+"10.0.0.9:1", `null`) // not a node, though Unmarshal takes it

	rec := watch(t, newRegistry(t, cli, "svc"))
	res := rec.next()
	want := []registry.Node{{Addr: "10.0.0.1:1", Weight: 2}, {Addr: "10.0.0.4:1", Weight: 1}}
	if res.err != nil || !slices.EqualFunc(res.nodes, want, sameNode) {
		t.Fatalf("first Next = %v, %v; want %v, nil", res.nodes, res.err, want)
	}
	res = rec.next()
	if res.nodes != nil {
		t.Errorf("bad values came with set %v", res.nodes)
	}
	if got, want := badKeys(res.err), []string{p + "10.0.0.8:1", p + "10.0.0.9:1", p + "junk", p + "neg"}; !slices.Equal(got, want) {
		t.Errorf("bad keys = %q from %v; want %q", got, res.err, want)
	}

	// Unrelated changes do not report them again; fixing one brings it in;
	// breaking a good one reports it and drops it.
	put(t, cli, p+"10.0.0.5:1", `{"addr":"10.0.0.5:1"}`)
	if res := rec.next(); res.err != nil || !slices.Equal(addrsOf(res.nodes), []string{"10.0.0.1:1", "10.0.0.4:1", "10.0.0.5:1"}) {
		t.Fatalf("Next = %v, %v", res.nodes, res.err)
	}
	put(t, cli, p+"neg", `{"addr":"10.0.0.3:1","weight":0}`)
	if res := rec.next(); res.err != nil || !slices.Equal(addrsOf(res.nodes), []string{"10.0.0.1:1", "10.0.0.3:1", "10.0.0.4:1", "10.0.0.5:1"}) {
		t.Fatalf("Next = %v, %v", res.nodes, res.err)
	}
	put(t, cli, p+"10.0.0.5:1", `{"addr":"10.0.0.5:1","weight":"heavy"}`)
	if res := rec.next(); res.err != nil || !slices.Equal(addrsOf(res.nodes), []string{"10.0.0.1:1", "10.0.0.3:1", "10.0.0.4:1"}) {
		t.Fatalf("Next = %v, %v", res.nodes, res.err)
	}
	if res := rec.next(); !slices.Equal(badKeys(res.err), []string{p + "10.0.0.5:1"}) {
		t.Fatalf("Next = %v, %v; want the bad value at 10.0.0.5:1", res.nodes, res.err)
	}
}

// badKeys lists the keys of the BadValueErrors in err.
func badKeys(err error) []string {
	var keys []string
	var walk func(error)
	walk = func(err error) {
		var bad *etcd.BadValueError
		if errors.As(err, &bad) && bad == err {
			keys = append(keys, bad.Key)
			return
		}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
		}
	}
	walk(err)
	return keys
}

// A watch that starts behind a compaction lists again, without an error.
func TestCompaction(t *testing.T) {
	c := startCluster(t)
	cli := c.client(t)
	const p = "/lbrpc/services/svc/"
	put(t, cli, p+"10.0.0.1:1", `{"addr":"10.0.0.1:1"}`)

	var lists atomic.Int32
	var once sync.Once
	hook := etcd.WithListHook(func(rev int64) {
		lists.Add(1)
		once.Do(func() {
			// Move on two revisions and compact them away before the
			// watch starts at rev+1.
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			cli.Put(ctx, p+"10.0.0.2:1", `{"addr":"10.0.0.2:1"}`)
			resp, err := cli.Put(ctx, p+"10.0.0.3:1", `{"addr":"10.0.0.3:1"}`)
			if err != nil {
				t.Errorf("put: %v", err)
				return
			}
			if _, err := cli.Compact(ctx, resp.Header.Revision); err != nil {
				t.Errorf("compact: %v", err)
			}
		})
	})
	rec := watch(t, newRegistry(t, cli, "svc", hook))
	rec.until("full snapshot", func(res result) bool {
		return res.err == nil && len(res.nodes) == 3
	}, func(res result) {
		if res.err != nil {
			t.Errorf("Next error %v; want a re-list without error", res.err)
		}
	})
	if n := lists.Load(); n != 2 {
		t.Errorf("listed %d times; want 2", n)
	}
	// The new watch works.
	put(t, cli, p+"10.0.0.4:1", `{"addr":"10.0.0.4:1"}`)
	rec.untilAddrs("10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1", "10.0.0.4:1")
}

func TestStop(t *testing.T) {
	c := startCluster(t)
	cli := c.client(t)
	w, err := newRegistry(t, cli, "svc").Watch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Next(); err != nil {
		t.Fatal(err)
	}
	c.fail() // Stop must not wait for etcd
	errc := make(chan error, 1)
	go func() {
		for {
			if _, err := w.Next(); errors.Is(err, registry.ErrStopped) {
				errc <- err
				return
			}
		}
	}()
	if err := w.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
	select {
	case <-errc:
	case <-time.After(wait):
		t.Fatal("Stop did not unblock Next")
	}
	if err := w.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if _, err := w.Next(); !errors.Is(err, registry.ErrStopped) {
		t.Errorf("Next after Stop = %v; want ErrStopped", err)
	}

	// Watch with a done context fails.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := newRegistry(t, cli, "svc").Watch(ctx); err == nil {
		t.Error("Watch with a cancelled context succeeded")
	}
}

// TestNilContext proves that Watch and Register answer a nil ctx with
// registry.ErrNilContext instead of panicking.
func TestNilContext(t *testing.T) {
	c := startCluster(t)
	cli := c.client(t)
	var ctx context.Context
	t.Run("Watch", func(t *testing.T) {
		w, err := newRegistry(t, cli, "svc").Watch(ctx)
		if !errors.Is(err, registry.ErrNilContext) {
			if w != nil {
				w.Stop()
			}
			t.Fatalf("Watch(nil) = %v, %v; want registry.ErrNilContext", w, err)
		}
	})
	t.Run("Register", func(t *testing.T) {
		reg, err := etcd.Register(ctx, cli, "svc", registry.Node{Addr: "10.0.0.1:1", Weight: 1}, 5*time.Second)
		if !errors.Is(err, registry.ErrNilContext) {
			if reg != nil {
				reg.Close()
			}
			t.Fatalf("Register(nil, ...) = %v, %v; want registry.ErrNilContext", reg, err)
		}
	})
}

// Closing the client is reported once; the watcher does not close the
// client itself.
func TestClientClosed(t *testing.T) {
	c := startCluster(t)
	cli := c.client(t)
	rec := watch(t, newRegistry(t, cli, "svc"))
	rec.untilAddrs()
	rec.stop()
	if _, err := cli.Get(context.Background(), "x"); err != nil {
		t.Fatalf("client unusable after Stop: %v", err)
	}

	rec = watch(t, newRegistry(t, cli, "svc"))
	rec.untilAddrs()
	cli.Close()
	if res := rec.next(); res.err == nil || res.nodes != nil {
		t.Fatalf("Next after client Close = %v, %v; want an error", res.nodes, res.err)
	}
}
