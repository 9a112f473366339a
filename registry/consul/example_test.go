package consul_test

import (
	"context"
	"fmt"
	"log"

	"github.com/hashicorp/consul/api"

	"github.com/lbrpc/lbrpc/registry/consul"
	"github.com/lbrpc/lbrpc/registry/consul/internal/fakeconsul"
)

// A server registers itself; a client watches the passing instances.
func Example() {
	// A stand-in for the local Consul agent, so that the example runs
	// anywhere. In production: client, err := api.NewClient(api.DefaultConfig())
	agent := fakeconsul.New()
	defer agent.Close()
	client := agent.Client()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// Server side: announce this instance until Close (or ctx ends).
	reg, err := consul.Register(ctx, client, &api.AgentServiceRegistration{
		Name:    "arith",
		Address: "10.0.0.7",
		Port:    4000,
		Tags:    []string{"v2"},
		Meta:    map[string]string{"zone": "eu-1"},
	})
	if err != nil {
		log.Fatal(err)
	}

	// Client side: the registry lbrpc's client would be given.
	r, err := consul.New(client, "arith", consul.WithTag("v2"))
	if err != nil {
		log.Fatal(err)
	}
	w, err := r.Watch(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer w.Stop()

	nodes, err := w.Next()
	fmt.Println(nodes, err)

	if err := reg.Close(); err != nil { // deregisters
		log.Fatal(err)
	}
	nodes, err = w.Next()
	fmt.Println(nodes, err)

	// Output:
	// [{10.0.0.7:4000 1 map[consul.tags:v2 zone:eu-1]}] <nil>
	// [] <nil>
}
