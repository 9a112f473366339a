package dns_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"strings"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/lbrpc/lbrpc/registry/dns"
)

func Example() {
	resolver, stop := fakeDNS(
		"api.example.test. 60 IN A 192.0.2.2",
		"api.example.test. 60 IN A 192.0.2.1",
	)
	defer stop()

	reg, err := dns.Host("api.example.test.:8080", dns.WithResolver(resolver))
	if err != nil {
		log.Fatal(err)
	}
	w, err := reg.Watch(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	defer w.Stop()
	nodes, err := w.Next()
	if err != nil {
		log.Fatal(err)
	}
	for _, n := range nodes {
		fmt.Println(n.Addr, n.Weight)
	}
	// Output:
	// 192.0.2.1:8080 1
	// 192.0.2.2:8080 1
}

func ExampleSRV() {
	resolver, stop := fakeDNS(
		"_rpc._tcp.api.example.test. 60 IN SRV 10 60 8080 a.api.example.test.",
		"_rpc._tcp.api.example.test. 60 IN SRV 10 20 8080 b.api.example.test.",
		"_rpc._tcp.api.example.test. 60 IN SRV 20 10 8080 backup.api.example.test.",
	)
	defer stop()

	reg, err := dns.SRV("_rpc._tcp.api.example.test.", dns.WithResolver(resolver))
	if err != nil {
		log.Fatal(err)
	}
	w, err := reg.Watch(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	defer w.Stop()
	nodes, err := w.Next()
	if err != nil {
		log.Fatal(err)
	}
	// The backup, with a higher priority number, is left out while the
	// others are there.
	for _, n := range nodes {
		fmt.Println(n.Addr, n.Weight)
	}
	// Output:
	// a.api.example.test:8080 60
	// b.api.example.test:8080 20
}

// In Kubernetes, point a registry at a headless Service.
func Example_kubernetes() {
	// One node per ready pod, from the Service's A records.
	pods, err := dns.Host("my-svc.my-ns.svc.cluster.local:8080")
	if err != nil {
		log.Fatal(err)
	}
	// Or from the SRV records of the Service's port named "rpc", resolved
	// more often than the default for a fast-changing deployment.
	named, err := dns.SRV("_rpc._tcp.my-svc.my-ns.svc.cluster.local", dns.WithInterval(5*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	_, _ = pods, named // hand either to the client with its registry option
}

// fakeDNS stands in for a DNS server: it serves records on loopback and
// returns a resolver that asks it and nothing else.
func fakeDNS(records ...string) (*net.Resolver, func()) {
	var rrs []mdns.RR
	for _, r := range records {
		rr, err := mdns.NewRR(r)
		if err != nil {
			log.Fatal(err)
		}
		rrs = append(rrs, rr)
	}
	answer := func(w mdns.ResponseWriter, req *mdns.Msg) {
		m := new(mdns.Msg).SetReply(req)
		m.Authoritative = true
		q := req.Question[0]
		for _, rr := range rrs {
			if strings.EqualFold(rr.Header().Name, q.Name) && rr.Header().Rrtype == q.Qtype {
				m.Answer = append(m.Answer, rr)
			}
		}
		_ = w.WriteMsg(m)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	started, done := make(chan struct{}), make(chan struct{})
	srv := &mdns.Server{PacketConn: pc, Handler: mdns.HandlerFunc(answer), NotifyStartedFunc: func() { close(started) }}
	go func() {
		defer close(done)
		_ = srv.ActivateAndServe()
	}()
	<-started
	resolver := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", pc.LocalAddr().String())
	}}
	return resolver, func() {
		_ = srv.Shutdown()
		<-done
	}
}
