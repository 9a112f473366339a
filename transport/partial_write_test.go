package transport_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/lbrpc/lbrpc/internal/rpctest"
	"github.com/lbrpc/lbrpc/transport"
)

// A lone request larger than what the socket takes in one non-blocking
// write(2) reaches the server once, byte for byte: the rest is queued, not
// written again.
func TestPartialInlineWrite(t *testing.T) {
	s := rpctest.Start(t, 1, rpctest.Gob)[0]
	p := newPool(t)
	big := strings.Repeat("x", 32<<20)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var reply string
	if err := p.Call(ctx, s.Addr, "Hello.Say", big, &reply); err != nil {
		t.Fatalf("big call: %v", err)
	}
	for i := 0; i < 3; i++ {
		if err := p.Call(ctx, s.Addr, "Hello.Say", "small", &reply); err != nil {
			t.Fatalf("small call %d after the big one: %v", i, err)
		}
	}
	if got := s.Accepts(); got != 1 {
		t.Fatalf("server accepted %d connections, want 1: it dropped the first after a corrupt stream (duplicated tail of the big request)", got)
	}
}

var _ = transport.ErrBadArgs
