// Package etcd is an lbrpc registry backed by etcd v3: servers Register
// themselves under a lease, and clients discover them with the Registry that
// New returns.
//
// # Keys and values
//
// Each node of a service is one key,
//
//	/lbrpc/services/<service>/<addr>
//
// (the "/lbrpc/services" root is DefaultPrefix; WithPrefix changes it), whose
// value is JSON:
//
//	{"addr": "10.0.0.1:8080", "weight": 1, "meta": {"zone": "eu-1"}}
//
// A missing weight means 1 and a missing addr means the key's <addr> part:
// everything after "<service>/", slashes included.
// Unknown fields are ignored. Service names may not contain "/". Anything can
// write these keys, for example etcdctl; Register is the usual way.
//
// # Registering
//
// Register writes the key under a lease and keeps the lease alive from a
// goroutine of its own. If the lease is lost (etcd was unreachable for
// longer than the TTL, or the lease was revoked), it registers again under a
// new lease. Closing the Registration, or ending the context given to
// Register, revokes the lease, which deletes the key; a process that dies
// instead leaves the key until the lease expires, one TTL later:
//
//	reg, err := etcd.Register(ctx, client, "echo", registry.Node{Addr: addr, Weight: 1}, 10*time.Second)
//	if err != nil {
//		return err
//	}
//	defer reg.Close()
//
// # Watching
//
// A Watcher lists the service's keys, reports that snapshot, and then
// watches from the revision after the list, so that no change is missed. It
// reports the full node set, sorted by address and with each address once,
// every time it changes. A service with no keys is an empty set and a nil
// error.
//
// When the watch fails (or the client loses every etcd endpoint, which the
// Watcher learns from the gRPC connection state, since an etcd watch retries
// silently), Next returns an error with a nil set, ErrUnreachable when no
// endpoint is reachable, and the client keeps the last good set. The Watcher
// lists and watches again, with backoff (see WithBackoff) and at once when
// the connection comes back, and then reports the current set even if it did
// not change. A watch that falls behind a compaction lists again without
// reporting an error. Silent network partitions are noticed only as fast as
// the client's gRPC keepalive (clientv3.Config.DialKeepAliveTime) notices
// them.
//
// A key whose value is not valid (not a JSON object, null included, or a
// negative weight) is skipped: the snapshot holds the good nodes, and the
// Next after it returns a *BadValueError that names the key, with a nil set. The registry contract
// lets an error come only with a nil set, so the snapshot comes first and the
// client, which keeps the last good set on an error, keeps that one. Each bad
// value is reported once; several found together are joined with
// errors.Join.
//
// # Clients and concurrency
//
// New, Register and Watch do not take ownership of the *clientv3.Client:
// close it after stopping the Watchers and closing the Registrations that use
// it. A Watcher whose client is closed reports that once and then waits for
// Stop. Watchers and Registrations may be used from several goroutines; Next
// follows the registry.Watcher rules.
package etcd
