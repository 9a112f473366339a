// Package picker chooses the node for each attempt of a call.
//
// A Picker is told the nodes fit to serve with Update and asked for one with
// Pick. The client calls Update whenever the node set or node health changes,
// on the same Picker value, so a picker that learns (latency, load) keeps what
// it learned for the nodes that stay. Pick runs on every attempt: it must be
// safe for concurrent use, must not block, and should not allocate.
//
// A Result may carry a Done function; the client calls it once when the
// attempt ends, with the error and latency, so load-aware pickers learn the
// outcome of each call they picked for.
//
// Pickers honour Info.Tried: a retry prefers a node not yet tried by the same
// call, and falls back to a tried one only when every node was tried.
package picker
