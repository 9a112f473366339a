// Package bench measures lbrpc side by side with raw net/rpc and the
// libraries users would pick instead (go-kit sd/lb, grpc-go), in one run on
// one machine. It is a nested module so that its dependencies (go-kit,
// grpc-go, HdrHistogram) stay out of lbrpc's own go.mod.
//
// The harness (Run) starts the servers in a separate process (Serve, reached
// by re-executing the calling binary), so that the client CPU and allocation
// figures are the client's alone. It drives each client with the same
// payload, concurrency levels and duration, in three scenarios (all healthy,
// one node ten times slower, one node killed and restarted mid-cell), and
// writes the tables and a throughput chart (WriteMarkdown, WriteSVG).
//
// The command is bench/cmd/compare:
//
//	go run ./bench/cmd/compare          # ~3 minutes, writes docs/benchmarks.md
//	go run ./bench/cmd/compare -quick   # ~20 seconds
//
// Nothing here is safe for concurrent use unless its doc says so; the
// harness runs one client at a time.
package bench
