// Package health is the server side of lbrpc's active health checks: a
// standard net/rpc service, "Health", that a server registers in one line
// and that clients probe (lbrpc.WithHealthCheck).
//
//	srv := rpc.NewServer()
//	hs, err := health.Register(srv) // serves Health.Check
//	...
//	hs.SetServing(false) // before a drain: clients stop sending new calls
//
// Health.Check takes a Request and fills a Response. Any net/rpc codec
// works (gob, JSON-RPC, HTTP): the types are plain structs. A server may
// also serve its own service under another name with the same method
// shape; the client's probe only needs the reply's Status.
//
// The package imports only the standard library.
package health
