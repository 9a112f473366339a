// Package registrytest checks that a registry.Registry keeps the contract
// that lbrpc's client relies on, in the spirit of testing/slogtest.
//
// A registry's own tests call Run with a function that builds a fresh source
// for each subtest: the registry plus the controls the suite needs to change
// what it holds.
//
//	func TestConformance(t *testing.T) {
//		registrytest.Run(t, func(t *testing.T) registrytest.Source {
//			srv := startTestServer(t) // registers its own t.Cleanup
//			return registrytest.Source{
//				Registry: myregistry.New(srv.Addr()),
//				Set:      srv.SetNodes,
//				Fail:     srv.Stop,
//				Restore:  srv.Start,
//			}
//		})
//	}
//
// The suite checks, each in its own subtest:
//
//   - the first Next returns the set the source holds;
//   - nodes that join, leave or change weight or metadata are reported as full
//     snapshots, without repeated addresses;
//   - a source that holds no nodes is reported as an empty set with a nil
//     error (or, with Source.NoEmpty, never as an empty set);
//   - while the source fails, Next never reports an empty set with a nil
//     error, and after it recovers the set is reported again;
//   - Stop unblocks Next, Next then returns registry.ErrStopped, and Stop may
//     be called twice;
//   - Watch with a cancelled context either fails or returns a working
//     Watcher.
//
// Registries may report intermediate snapshots (a poll that lands between two
// changes), so the suite waits, up to ten seconds, for the snapshot it wants
// rather than asserting the very next one. Errors with a nil set are allowed
// in between; they are logged. A registry that polls should use a short
// interval under the suite.
//
// Nodes are compared by address, weight and, where the suite gave the node
// any, metadata. The suite only uses weights of 1 and more.
package registrytest
