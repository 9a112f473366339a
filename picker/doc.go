// Package picker chooses the node for each attempt of a call.
//
// A Picker is told the nodes fit to serve with Update and asked for one with
// Pick. The client calls Update whenever the node set or node health changes,
// on the same Picker value, so a picker that learns (latency, load) keeps what
// it learned for the nodes that stay. Pick runs on every attempt: it must be
// safe for concurrent use, must not block, and should not allocate.
//
// A Result may carry a Done function; the client reports the end of the
// attempt once, with the error and latency, through Result.Finish (which
// calls Done), so load-aware pickers learn the outcome of each call they
// picked for.
//
// # Which picker
//
//   - LeastLoaded: the client's default, and the one to use unless calls
//     need a particular node. The
//     power of two choices over latency × calls in flight (Finagle's and
//     Linkerd's peak EWMA), with a penalty for failures, so it steers away
//     from slow, overloaded and failing nodes within a few calls, with no
//     weights to maintain.
//   - LeastRequest: the power of two choices over calls in flight only
//     (grpc-go's least_request). No clock, but a node that fails fast looks
//     idle to it and draws more calls.
//   - RoundRobin: the nodes in turn. Fine when nodes
//     and calls are alike; it keeps feeding a slow node its full share.
//   - Random: uniform; like RoundRobin without the lockstep of many
//     clients started together.
//   - WeightedRoundRobin: turns in proportion to Node.Weight, spread out
//     (nginx's smooth weighted round robin), for nodes of known, different
//     capacity.
//   - ConsistentHash: the calls of one key (WithKey) to one node, with
//     bounded load, for per-key caches and sessions.
//   - PickFirst: the first node of the set, failing over in order, for a
//     primary with standbys.
//
// # Rules every built-in picker keeps
//
// Weight 0 means drain: the node gets no new calls while another node has a
// positive weight, so that an operator can take a node out before a restart.
// A set whose nodes all have weight 0 is used whole rather than failing
// every call. Only WeightedRoundRobin uses other weights.
//
// Pickers honour Info.Tried: a retry prefers a node not yet tried by the same
// call, and falls back to a tried one only when every node was tried.
//
// Picks read an immutable snapshot of the set through an atomic pointer;
// Update builds the next one and swaps it in, never blocking a pick. Pick,
// Done and Finish neither allocate nor block. Load-aware pickers (LeastLoaded, LeastRequest,
// ConsistentHash) keep per-node state by address across updates and report
// it through LoadReporter.
package picker
