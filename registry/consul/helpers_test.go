package consul_test

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"go.uber.org/goleak"

	"github.com/lbrpc/lbrpc/registry"
	"github.com/lbrpc/lbrpc/registry/consul"
	"github.com/lbrpc/lbrpc/registry/consul/internal/fakeconsul"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// patience bounds every wait in these tests; nothing waits on wall-clock
// speed below it.
const patience = 10 * time.Second

func newAgent(t *testing.T) (*fakeconsul.Agent, *api.Client) {
	t.Helper()
	a := fakeconsul.New()
	t.Cleanup(a.Close)
	return a, a.Client()
}

// watch starts a watcher with fast retries and stops it at cleanup.
func watch(t *testing.T, c *api.Client, service string, opts ...consul.Option) registry.Watcher {
	t.Helper()
	opts = append([]consul.Option{consul.WithBackoff(10*time.Millisecond, 50*time.Millisecond)}, opts...)
	r, err := consul.New(c, service, opts...)
	if err != nil {
		t.Fatal(err)
	}
	w, err := r.Watch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Stop() })
	return w
}

type result struct {
	nodes []registry.Node
	err   error
}

// next calls w.Next, failing the test if it does not return within
// patience (it then stops w, so that Next returns before the test ends).
func next(t *testing.T, w registry.Watcher) ([]registry.Node, error) {
	t.Helper()
	ch := nextAsync(w)
	select {
	case r := <-ch:
		return r.nodes, r.err
	case <-time.After(patience):
		w.Stop()
		<-ch
		t.Fatalf("Next did not return within %v", patience)
		return nil, nil
	}
}

func nextAsync(w registry.Watcher) <-chan result {
	ch := make(chan result, 1)
	go func() {
		nodes, err := w.Next()
		ch <- result{nodes, err}
	}()
	return ch
}

// await calls Next until it returns want, skipping errors and other sets,
// for at most patience.
func await(t *testing.T, w registry.Watcher, want []registry.Node) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for {
		got, err := next(t, w)
		if err == nil && equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Next = %v, %v; still not %v after %v", got, err, want, patience)
		}
	}
}

func equal(got, want []registry.Node) bool {
	if len(got) == 0 && len(want) == 0 {
		return got != nil
	}
	return reflect.DeepEqual(got, want)
}

// poll waits, for at most patience, until cond holds.
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, patience)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// healthRequests returns the agent's health queries for service.
func healthRequests(a *fakeconsul.Agent, service string) []fakeconsul.Request {
	var out []fakeconsul.Request
	for _, r := range a.Requests() {
		if r.Path == "/v1/health/service/"+service {
			out = append(out, r)
		}
	}
	return out
}

func node(addr string, weight int, meta map[string]string) registry.Node {
	return registry.Node{Addr: addr, Weight: weight, Meta: meta}
}

func instance(name string, i int) api.AgentServiceRegistration {
	return api.AgentServiceRegistration{
		ID: fmt.Sprintf("%s-%d", name, i), Name: name,
		Address: fmt.Sprintf("10.0.0.%d", i), Port: 4000,
	}
}
