// Package rpctest starts real net/rpc servers on loopback for lbrpc's tests,
// with behaviour each test controls: latency, errors, hanging, and kill and
// restart on the same port.
package rpctest
