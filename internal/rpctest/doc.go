// Package rpctest starts real net/rpc servers on loopback for lbrpc's tests,
// with behaviour each test controls: latency, errors, hanging, kill and
// restart on the same port, and what their health service (package health)
// answers.
package rpctest
