// Package sim runs a picker against simulated nodes in virtual time, so
// that tests can judge how well it balances without sleeping and without
// depending on the machine: the same scenario and seed give the same
// numbers on every run.
//
// Each node serves a fixed number of calls at once and queues the rest in
// order, so a node sent more than it can serve builds a queue and its
// latency grows, as a real server's does. Calls arrive at a fixed mean rate
// (a Poisson process) whatever the latency, as from many independent
// clients. The picker is told each outcome through Result.Finish, with the
// latency the client would have measured: queueing plus service.
package sim
