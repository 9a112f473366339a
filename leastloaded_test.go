package lbrpc_test

import (
	"context"
	"testing"
	"time"

	"github.com/lbrpc/lbrpc"
	"github.com/lbrpc/lbrpc/internal/rpctest"
	"github.com/lbrpc/lbrpc/picker"
)

// A hung node (it takes calls and never answers) is avoided by LeastLoaded
// after its first timeouts, by the picker alone: outlier detection is off.
func TestLeastLoadedAvoidsHungNode(t *testing.T) {
	servers := rpctest.Start(t, 3, rpctest.Gob)
	hung := servers[0]
	hung.SetLatency(time.Hour)
	c := newClient(t, servers,
		lbrpc.WithPicker(picker.LeastLoaded()),
		lbrpc.WithOutlierDetection(lbrpc.OutlierDetection{Disable: true}),
	)
	const calls = 300
	failed := 0
	for i := 0; i < calls; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		var reply string
		if err := c.Call(ctx, "Hello.Say", "x", &reply); err != nil {
			failed++
		}
		cancel()
	}
	// Each call to the hung node costs a timeout; after the first ones its
	// latency estimate keeps it out.
	if got := hung.Calls(); got > 3 {
		t.Fatalf("hung node got %d of %d calls, want at most 3", got, calls)
	}
	if int64(failed) != hung.Calls() {
		t.Fatalf("%d calls failed, want only the %d sent to the hung node", failed, hung.Calls())
	}
	if servers[1].Calls()+servers[2].Calls() != int64(calls-failed) {
		t.Fatalf("healthy nodes answered %d calls, want %d", servers[1].Calls()+servers[2].Calls(), calls-failed)
	}
}
