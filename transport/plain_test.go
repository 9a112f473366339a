package transport_test

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/lbrpc/lbrpc/internal/rpctest"
	"github.com/lbrpc/lbrpc/transport"
)

// Without coalescing, calls whose short deadlines expire while they wait to
// write, or just after, do not close the shared, healthy connection: the
// call in flight on it is answered. Here the peer reads promptly.
func TestPlainShortDeadlinesKeepConnection(t *testing.T) {
	s := rpctest.Start(t, 1, rpctest.Gob)[0]
	p := newPool(t, transport.WithWriteCoalescing(false), transport.WithMaxTimeouts(1<<30))
	var reply string
	if err := p.Call(context.Background(), s.Addr, "Hello.Say", "x", &reply); err != nil {
		t.Fatal(err)
	}
	s.SetLatency(300 * time.Millisecond)
	long := goCall(context.Background(), p, s.Addr, "long") // in flight throughout
	time.Sleep(20 * time.Millisecond)
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rand.IntN(100))*time.Microsecond)
				var r string
				p.Call(ctx, s.Addr, "Hello.Say", "short", &r)
				cancel()
			}
		}()
	}
	wg.Wait()
	if err := <-long; err != nil {
		t.Fatalf("a call with no deadline failed on a healthy connection: %v (dials %d)", err, state(p, s.Addr).Dials)
	}
}
