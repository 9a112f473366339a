// Package registry defines how lbrpc learns which nodes serve a service.
//
// A Registry hands out Watchers; a Watcher reports full snapshots of the node
// set, first the current one and then one each time it changes. The client
// runs one Watcher for its lifetime and applies each snapshot without failing
// calls in flight.
//
// Static is the built-in registry for a fixed list. Registries backed by DNS
// live in registry/dns; etcd and Consul registries are nested modules so that
// their dependencies stay out of the core module.
//
// Writing a registry takes a Watch that returns a Watcher, and a Watcher
// whose Next blocks until there is news and whose Stop unblocks Next. See
// lbrpc's Example_customRegistry, and package registrytest to check one.
package registry
