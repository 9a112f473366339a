package consul_test

import (
	"context"
	"fmt"
	"maps"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lbrpc/lbrpc/registry"
	"github.com/lbrpc/lbrpc/registry/consul"
	"github.com/lbrpc/lbrpc/registry/registrytest"
)

func TestConformance(t *testing.T) {
	registrytest.Run(t, func(t *testing.T) registrytest.Source {
		a, c := newAgent(t)
		r, err := consul.New(c, "svc", consul.WithBackoff(50*time.Millisecond, 200*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		return registrytest.Source{
			Registry: r,
			Set: func(_ context.Context, nodes []registry.Node) error {
				regs, err := registrations("svc", nodes)
				if err != nil {
					return err
				}
				return a.Replace("svc", regs)
			},
			Fail:    func(context.Context) error { a.SetDown(true); return nil },
			Restore: func(context.Context) error { a.SetDown(false); return nil },
		}
	})
}

// registrations turns nodes into instances of service, the inverse of the
// registry's mapping: weight to Weights.Passing, Meta to Meta except
// TagsMetaKey, which becomes Tags. Repeated addresses become instances of
// their own, as in Consul.
func registrations(service string, nodes []registry.Node) ([]api.AgentServiceRegistration, error) {
	regs := make([]api.AgentServiceRegistration, 0, len(nodes))
	for i, n := range nodes {
		host, port, err := net.SplitHostPort(n.Addr)
		if err != nil {
			return nil, err
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("port of %q: %w", n.Addr, err)
		}
		reg := api.AgentServiceRegistration{
			ID: fmt.Sprintf("%s-%02d", service, i), Name: service, Address: host, Port: p,
			Meta: maps.Clone(n.Meta),
		}
		if tags, ok := reg.Meta[consul.TagsMetaKey]; ok {
			reg.Tags = strings.Split(tags, ",")
			delete(reg.Meta, consul.TagsMetaKey)
		}
		if n.Weight > 0 {
			reg.Weights = &api.AgentWeights{Passing: n.Weight, Warning: 1}
		}
		regs = append(regs, reg)
	}
	return regs, nil
}
