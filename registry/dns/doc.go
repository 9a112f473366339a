// Package dns is a registry.Registry that finds nodes in DNS, using only the
// standard library's net.Resolver.
//
// Host resolves a "host:port" target's A and AAAA records; every address is a
// node with weight 1. SRV resolves an SRV name; every target of the
// lowest-priority-number records is a node weighted as its record.
//
// DNS does not push changes, so the Watcher resolves again every interval
// (WithInterval, 30 s by default) and reports a set only when it differs from
// the last one. The client's failures to reach a node (ReportFailure, see
// registry.FailureReporter) bring the next resolution forward, at most once
// per WithMinInterval (5 s by default).
//
// # Failures
//
// When a resolution fails the Watcher reports a *LookupError once, keeps the
// last good set (the client goes on using it) and tries again on schedule;
// the next success is reported even if the set is unchanged. A set resolved
// before the failure that Next has not returned yet is returned first, so
// the last good set is the newest one.
//
// A name without records (NXDOMAIN, or no records of the wanted type) is such
// a failure too, matching ErrNotFound, and not an empty set: a cache or
// server that briefly loses a zone would otherwise take every node away at
// once. To say deliberately that a service has no nodes, publish the SRV
// record with target "." that RFC 2782 defines for "decidedly not available";
// SRV reports it as an empty set.
//
// # Kubernetes
//
// A headless Service (clusterIP: None) publishes one A record per ready pod,
// so clients spread calls over the pods themselves rather than over a
// virtual IP:
//
//	reg, err := dns.Host("my-svc.my-ns.svc.cluster.local:8080")
//
// With a named port, the Service also publishes SRV records, which carry the
// port:
//
//	ports:
//	- name: rpc
//	  protocol: TCP
//	  port: 8080
//
//	reg, err := dns.SRV("_rpc._tcp.my-svc.my-ns.svc.cluster.local")
//
// The SRV targets are the pods' own DNS names, resolved when dialled. When a
// headless Service has no ready pods its name has no records, and the client
// keeps the last pods it knew, whose calls then fail until pods are ready.
// Pods come and go faster than the default interval in some deployments; a
// shorter WithInterval (a few seconds) suits them, and ReportFailure already
// catches pods that went away.
package dns
