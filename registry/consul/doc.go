// Package consul connects lbrpc to HashiCorp Consul, on both sides of a
// service.
//
// Clients find servers with New, a registry.Registry of the passing
// instances of one service. Its watchers follow Consul's health endpoint with
// blocking queries, so a change reaches the client as soon as Consul sees
// it, and report full, sorted snapshots of Nodes (see New for how instances
// map to Nodes, including tags under TagsMetaKey).
//
// Servers announce themselves with Register, which registers an instance
// with the local agent, keeps its TTL check passing (or lets the agent run a
// TCP check) and deregisters it on Close or when its context ends.
//
// Both take a *api.Client from github.com/hashicorp/consul/api, configured
// by the caller (address, TLS, token, datacenter); this package adds no
// settings of its own for those.
//
// # Endpoints and testing
//
// The package calls these documented Consul HTTP endpoints through the api
// client:
//
//	GET /v1/health/service/<name>?passing&tag=&index=&wait=   (Health().Service)
//	PUT /v1/agent/service/register?replace-existing-checks    (Agent().ServiceRegisterOpts)
//	PUT /v1/agent/service/deregister/<id>                     (Agent().ServiceDeregisterOpts)
//	PUT /v1/agent/check/update/<checkID>                      (Agent().UpdateTTLOpts)
//
// It was tested with the real api client against an in-process fake of
// exactly these endpoints (blocking queries with X-Consul-Index, passing and
// tag filters, TTL expiry), not against a live Consul agent, which could not
// run where it was developed. The fake follows Consul's documentation and the
// api package's JSON types; differences in a real agent's behaviour beyond
// them (per-query indexes, anti-entropy, ACLs, how fast TTL expiry is
// noticed) were not exercised.
//
// # Concurrency
//
// A Registry may be shared and watched many times. A Watcher follows the
// registry.Watcher rules: one Next at a time, Stop from any goroutine. A
// Registration's methods are safe for concurrent use.
package consul
