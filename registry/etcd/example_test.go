package etcd_test

import (
	"context"
	"fmt"
	"log"
	"net/url"
	"os"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/lbrpc/lbrpc/registry"
	"github.com/lbrpc/lbrpc/registry/etcd"
)

// Two servers register, a client watches them, and one server leaves.
func Example() {
	endpoint, stopEtcd := startEtcd() // or your etcd cluster
	defer stopEtcd()
	client, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, Logger: zap.NewNop()})
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	ctx := context.Background()

	// Each server registers itself; the key lives as long as the server.
	a, err := etcd.Register(ctx, client, "echo", registry.Node{Addr: "10.0.0.1:8080", Weight: 1}, 10*time.Second)
	if err != nil {
		log.Fatal(err)
	}
	b, err := etcd.Register(ctx, client, "echo", registry.Node{Addr: "10.0.0.2:8080", Weight: 1}, 10*time.Second)
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()

	// Clients watch the service.
	reg, err := etcd.New(client, "echo")
	if err != nil {
		log.Fatal(err)
	}
	w, err := reg.Watch(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer w.Stop()

	nodes, err := w.Next()
	fmt.Println(nodes, err)
	a.Close() // server a shuts down
	nodes, err = w.Next()
	fmt.Println(nodes, err)
	// Output:
	// [{10.0.0.1:8080 1 map[]} {10.0.0.2:8080 1 map[]}] <nil>
	// [{10.0.0.2:8080 1 map[]}] <nil>
}

// startEtcd runs a one-member etcd in this process on random local ports.
func startEtcd() (endpoint string, stop func()) {
	dir, err := os.MkdirTemp("", "etcd-example")
	if err != nil {
		log.Fatal(err)
	}
	cfg := embed.NewConfig()
	cfg.Dir = dir
	local := url.URL{Scheme: "http", Host: "127.0.0.1:0"}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{local}, []url.URL{local}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{local}, []url.URL{local}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		log.Fatal(err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(time.Minute):
		log.Fatal("etcd did not start")
	}
	return e.Clients[0].Addr().String(), func() {
		e.Close()
		os.RemoveAll(dir)
	}
}
