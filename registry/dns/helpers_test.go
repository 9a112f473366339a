package dns

import (
	"context"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// wait bounds every wait in these tests; polls end as soon as their
// condition holds.
const wait = 10 * time.Second

// server is an authoritative DNS server on loopback whose records, and
// whether it answers at all, tests change as they go.
type server struct {
	t *testing.T

	mu      sync.Mutex
	addr    string
	records []mdns.RR
	rcode   int            // answered instead of records unless RcodeSuccess
	mute    bool           // read queries but never answer, like a hung server
	queries map[uint16]int // by type, to count resolutions

	srv  *mdns.Server // nil while down
	done chan struct{}
}

// startServer serves records given in zone file syntax, such as
// "svc.test. 0 IN A 192.0.2.1", on 127.0.0.1 until the test ends.
func startServer(t *testing.T, records ...string) *server {
	t.Helper()
	s := &server{t: t, addr: "127.0.0.1:0", queries: map[uint16]int{}}
	s.set(records...)
	s.up()
	t.Cleanup(s.down)
	return s
}

// up starts serving, on the same address as before if the server was down.
func (s *server) up() {
	s.t.Helper()
	pc, err := net.ListenPacket("udp", s.addr)
	if err != nil {
		s.t.Fatalf("listen: %v", err)
	}
	s.mu.Lock()
	s.addr = pc.LocalAddr().String()
	s.mu.Unlock()
	started := make(chan struct{})
	s.srv = &mdns.Server{PacketConn: pc, Handler: mdns.HandlerFunc(s.serve), NotifyStartedFunc: func() { close(started) }}
	s.done = make(chan struct{})
	go func(srv *mdns.Server, done chan struct{}) {
		defer close(done)
		_ = srv.ActivateAndServe()
	}(s.srv, s.done)
	select {
	case <-started:
	case <-time.After(wait):
		s.t.Fatal("DNS server did not start")
	}
}

// down stops serving: queries then meet a closed port.
func (s *server) down() {
	if s.srv == nil {
		return
	}
	_ = s.srv.Shutdown()
	<-s.done
	s.srv = nil
}

func (s *server) serve(w mdns.ResponseWriter, req *mdns.Msg) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := req.Question[0]
	s.queries[q.Qtype]++
	if s.mute {
		return
	}
	m := new(mdns.Msg)
	m.SetRcode(req, s.rcode)
	// Authoritative, or Go's resolver takes an empty answer for a lame
	// referral instead of "no records".
	m.Authoritative = true
	if s.rcode == mdns.RcodeSuccess {
		exists := false
		for _, rr := range s.records {
			if strings.EqualFold(rr.Header().Name, q.Name) {
				exists = true
				if rr.Header().Rrtype == q.Qtype {
					m.Answer = append(m.Answer, rr)
				}
			}
		}
		if !exists {
			m.Rcode = mdns.RcodeNameError
		}
	}
	_ = w.WriteMsg(m)
}

func (s *server) set(records ...string) {
	s.t.Helper()
	rrs := make([]mdns.RR, 0, len(records))
	for _, r := range records {
		rr, err := mdns.NewRR(r)
		if err != nil {
			s.t.Fatalf("record %q: %v", r, err)
		}
		rrs = append(rrs, rr)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records = rrs
}

func (s *server) setRcode(rcode int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rcode = rcode
}

func (s *server) setMute(mute bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mute = mute
}

func (s *server) count(qtype uint16) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[qtype]
}

// resolver sends every query to s, whatever the system's configuration.
func (s *server) resolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		s.mu.Lock()
		addr := s.addr
		s.mu.Unlock()
		c, err := d.DialContext(ctx, "udp", addr)
		if err != nil {
			return nil, err
		}
		// Go's resolver honours only deadlines while reading; closing on
		// cancellation ends a stopped lookup at once, so goleak sees no
		// resolver goroutine waiting out its timeout.
		context.AfterFunc(ctx, func() { c.Close() })
		return c, nil
	}}
}

// fakeClock is virtual time for the re-resolution schedule.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c  *fakeClock
	at time.Time
	ch chan time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer(d time.Duration) timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, at: c.now.Add(d), ch: make(chan time.Time, 1)}
	if d <= 0 {
		t.ch <- c.now
	} else {
		c.timers = append(c.timers, t)
	}
	return t
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	n := len(t.c.timers)
	t.c.timers = slices.DeleteFunc(t.c.timers, func(x *fakeTimer) bool { return x == t })
	return len(t.c.timers) < n
}

// advance moves time on and fires the timers that are due.
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.timers = slices.DeleteFunc(c.timers, func(t *fakeTimer) bool {
		if t.at.After(c.now) {
			return false
		}
		t.ch <- c.now
		return true
	})
}

// waitSleep waits until the watcher sleeps until at, which means that the
// resolution before has finished and its news, if any, is queued.
func (c *fakeClock) waitSleep(t *testing.T, at time.Time) {
	t.Helper()
	poll(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.timers) == 1 && c.timers[0].at.Equal(at)
	}, "the watcher to sleep until %v", at.Format(time.TimeOnly))
}

// poll waits until cond holds, checking often, for at most wait.
func poll(t *testing.T, cond func() bool, what string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for "+what, args...)
		}
		time.Sleep(time.Millisecond)
	}
}
