package consul_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lbrpc/lbrpc/registry"
	"github.com/lbrpc/lbrpc/registry/consul"
	"github.com/lbrpc/lbrpc/registry/consul/internal/fakeconsul"
)

func register(t *testing.T, ctx context.Context, c *api.Client, svc *api.AgentServiceRegistration, opts ...consul.RegisterOption) *consul.Registration {
	t.Helper()
	reg, err := consul.Register(ctx, c, svc, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	return reg
}

func TestRegisterValidates(t *testing.T) {
	_, c := newAgent(t)
	ok := func() *api.AgentServiceRegistration {
		return &api.AgentServiceRegistration{Name: "web", Address: "10.0.0.1", Port: 80}
	}
	with := func(f func(*api.AgentServiceRegistration)) *api.AgentServiceRegistration {
		s := ok()
		f(s)
		return s
	}
	tests := []struct {
		name   string
		client *api.Client
		svc    *api.AgentServiceRegistration
		opts   []consul.RegisterOption
	}{
		{"nil client", nil, ok(), nil},
		{"nil registration", c, nil, nil},
		{"no name", c, with(func(s *api.AgentServiceRegistration) { s.Name = "" }), nil},
		{"port 0", c, with(func(s *api.AgentServiceRegistration) { s.Port = 0 }), nil},
		{"port 70000", c, with(func(s *api.AgentServiceRegistration) { s.Port = 70000 }), nil},
		{"slash in ID", c, with(func(s *api.AgentServiceRegistration) { s.ID = "a/b" }), nil},
		{"zero TTL", c, ok(), []consul.RegisterOption{consul.WithTTL(0)}},
		{"TTL and TCP", c, ok(), []consul.RegisterOption{consul.WithTTL(time.Second), consul.WithTCPCheck(time.Second, 0)}},
		{"zero TCP interval", c, ok(), []consul.RegisterOption{consul.WithTCPCheck(0, 0)}},
		{"negative TCP timeout", c, ok(), []consul.RegisterOption{consul.WithTCPCheck(time.Second, -1)}},
		{"TCP without address", c, with(func(s *api.AgentServiceRegistration) { s.Address = "" }), []consul.RegisterOption{consul.WithTCPCheck(time.Second, 0)}},
		{"negative deregister-after", c, ok(), []consul.RegisterOption{consul.WithDeregisterCriticalAfter(-time.Minute)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if reg, err := consul.Register(context.Background(), tt.client, tt.svc, tt.opts...); err == nil {
				reg.Close()
				t.Error("Register succeeded, want an error")
			}
		})
	}
}

// TestRegisterAppearsAndCloseRemoves follows one instance from Register to
// Close through a watcher.
func TestRegisterAppearsAndCloseRemoves(t *testing.T) {
	a, c := newAgent(t)
	w := watch(t, c, "web")
	svc := &api.AgentServiceRegistration{
		Name: "web", Address: "10.0.0.1", Port: 4000,
		Tags: []string{"v2"}, Meta: map[string]string{"zone": "eu-1"},
		Weights: &api.AgentWeights{Passing: 3, Warning: 1},
	}
	reg := register(t, context.Background(), c, svc, consul.WithTTL(time.Minute), consul.WithDeregisterCriticalAfter(time.Minute))
	if reg.ID() != "web-10.0.0.1:4000" {
		t.Errorf("ID = %q, want the default web-10.0.0.1:4000", reg.ID())
	}
	if svc.ID != "" || svc.Checks != nil {
		t.Errorf("Register modified its argument: %+v", svc)
	}
	await(t, w, []registry.Node{node("10.0.0.1:4000", 3, map[string]string{"zone": "eu-1", consul.TagsMetaKey: "v2"})})

	sent, ok := a.Registration(reg.ID())
	if !ok {
		t.Fatal("agent has no registration")
	}
	if len(sent.Checks) != 1 {
		t.Fatalf("registered checks = %+v, want one", sent.Checks)
	}
	chk := sent.Checks[0]
	if chk.CheckID != "lbrpc:"+reg.ID() || chk.TTL != "1m0s" || chk.Status != api.HealthPassing || chk.DeregisterCriticalServiceAfter != "1m0s" {
		t.Errorf("check = %+v", chk)
	}
	if !hasQuery(a.Requests(), "/v1/agent/service/register", "replace-existing-checks") {
		t.Error("registration sent without replace-existing-checks")
	}

	if err := reg.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := a.Registration(reg.ID()); ok {
		t.Error("instance still registered after Close")
	}
	await(t, w, []registry.Node{})
	if err := reg.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestRegisterContextEndDeregisters(t *testing.T) {
	a, c := newAgent(t)
	w := watch(t, c, "web")
	ctx, cancel := context.WithCancel(context.Background())
	reg := register(t, ctx, c, &api.AgentServiceRegistration{Name: "web", Address: "10.0.0.1", Port: 4000})
	await(t, w, []registry.Node{node("10.0.0.1:4000", 1, nil)})
	cancel()
	await(t, w, []registry.Node{})
	if _, ok := a.Registration(reg.ID()); ok {
		t.Error("instance still registered after its context ended")
	}
	if err := reg.Close(); err != nil {
		t.Errorf("Close after the context ended: %v", err)
	}
}

// TestRegisterHeartbeat checks that the TTL check is kept passing across
// several TTLs.
func TestRegisterHeartbeat(t *testing.T) {
	a, c := newAgent(t)
	const ttl = 300 * time.Millisecond
	reg := register(t, context.Background(), c, &api.AgentServiceRegistration{Name: "web", Address: "10.0.0.1", Port: 4000}, consul.WithTTL(ttl))
	checkID := "lbrpc:" + reg.ID()
	// Four updates span more than a TTL, since they come every TTL/3.
	poll(t, "four TTL updates with the check passing", func() bool {
		status, _ := a.CheckStatus(checkID)
		return a.TTLUpdates(checkID) >= 4 && status == api.HealthPassing
	})
}

// TestDeadProcessLeaves registers an instance the way a process that then
// died would leave it: a TTL check nobody updates. Consul marks it critical
// after the TTL and watchers drop it.
func TestDeadProcessLeaves(t *testing.T) {
	a, c := newAgent(t)
	w := watch(t, c, "web")
	err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: "web-1", Name: "web", Address: "10.0.0.1", Port: 4000,
		Check: &api.AgentServiceCheck{CheckID: "web-1-ttl", TTL: "200ms", Status: api.HealthPassing},
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := next(t, w)
	if err != nil {
		t.Fatal(err)
	}
	// It may already have expired on a slow machine; the point is that it
	// leaves.
	if len(got) > 1 {
		t.Fatalf("Next = %v", got)
	}
	await(t, w, []registry.Node{})
	if s, _ := a.CheckStatus("web-1-ttl"); s != api.HealthCritical {
		t.Errorf("check status = %q, want critical", s)
	}
}

// TestRegisterRecoversForgottenInstance checks that when the agent forgets
// the instance (as after an agent restart without state), the failed TTL
// update leads to a new registration.
func TestRegisterRecoversForgottenInstance(t *testing.T) {
	a, c := newAgent(t)
	var (
		mu   sync.Mutex
		errs []error
	)
	reported := func() []error {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(errs)
	}
	onError := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		errs = append(errs, err)
	}
	reg := register(t, context.Background(), c, &api.AgentServiceRegistration{Name: "web", Address: "10.0.0.1", Port: 4000},
		consul.WithTTL(150*time.Millisecond), consul.WithErrorHandler(onError))

	if err := c.Agent().ServiceDeregister(reg.ID()); err != nil {
		t.Fatal(err)
	}
	poll(t, "registered again after a failed update", func() bool {
		_, ok := a.Registration(reg.ID())
		return ok && len(reported()) > 0
	})
	var se api.StatusError
	if errs := reported(); !errors.As(errs[0], &se) || se.Code != 404 {
		t.Errorf("errors reported = %v, want first a 404 from the TTL update", errs)
	}
	// A new watcher's first Next shows the current set.
	await(t, watch(t, c, "web"), []registry.Node{node("10.0.0.1:4000", 1, nil)})
}

// A TTL update that runs out of its time (the agent hangs) is reported
// through WithErrorHandler, as a failed update is; the registration ending
// is not.
func TestRegisterReportsTimedOutUpdate(t *testing.T) {
	a, c := newAgent(t)
	reported := make(chan error, 100)
	reg := register(t, context.Background(), c, &api.AgentServiceRegistration{Name: "web", Address: "10.0.0.1", Port: 4000},
		consul.WithTTL(150*time.Millisecond), consul.WithErrorHandler(func(err error) { reported <- err }))
	a.SetStalled(true)
	select {
	case err := <-reported:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("reported %v, want the TTL update's deadline", err)
		}
	case <-time.After(patience):
		t.Fatal("a TTL update the agent never answered was not reported")
	}
	a.SetStalled(false)
	if err := reg.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for len(reported) > 0 {
		if err := <-reported; errors.Is(err, context.Canceled) {
			t.Errorf("the registration's end was reported: %v", err)
		}
	}
}

func TestRegisterTCPCheck(t *testing.T) {
	a, c := newAgent(t)
	w := watch(t, c, "web")
	reg := register(t, context.Background(), c, &api.AgentServiceRegistration{Name: "web", Address: "10.0.0.1", Port: 4000},
		consul.WithTCPCheck(2*time.Second, 500*time.Millisecond))
	checkID := "lbrpc:" + reg.ID()
	sent, _ := a.Registration(reg.ID())
	if len(sent.Checks) != 1 {
		t.Fatalf("registered checks = %+v, want one", sent.Checks)
	}
	if chk := sent.Checks[0]; chk.CheckID != checkID || chk.TCP != "10.0.0.1:4000" || chk.Interval != "2s" || chk.Timeout != "500ms" || chk.TTL != "" || chk.Status != "" {
		t.Errorf("check = %+v", chk)
	}
	// Critical until the agent's first probe passes.
	if got, err := next(t, w); err != nil || len(got) != 0 {
		t.Fatalf("Next before the first probe = %v, %v; want an empty set", got, err)
	}
	if err := a.SetCheckStatus(checkID, api.HealthPassing); err != nil {
		t.Fatal(err)
	}
	await(t, w, []registry.Node{node("10.0.0.1:4000", 1, nil)})
	if n := a.TTLUpdates(checkID); n != 0 {
		t.Errorf("%d TTL updates of a TCP check", n)
	}
	if err := reg.Close(); err != nil {
		t.Fatal(err)
	}
	await(t, w, []registry.Node{})
}

func TestRegisterKeepsUserChecks(t *testing.T) {
	a, c := newAgent(t)
	reg := register(t, context.Background(), c, &api.AgentServiceRegistration{
		ID: "web-1", Name: "web", Address: "10.0.0.1", Port: 4000,
		Checks: api.AgentServiceChecks{{CheckID: "mine", TTL: "1h", Status: api.HealthPassing}},
	})
	sent, _ := a.Registration(reg.ID())
	if len(sent.Checks) != 2 || sent.Checks[0].CheckID != "mine" || sent.Checks[1].CheckID != "lbrpc:web-1" {
		t.Errorf("registered checks = %+v, want the caller's then lbrpc's", sent.Checks)
	}
}

// TestRegisterNilContext proves that Register answers a nil ctx with
// registry.ErrNilContext, instead of panicking, before it sends anything to
// the agent.
func TestRegisterNilContext(t *testing.T) {
	a, c := newAgent(t)
	var ctx context.Context
	reg, err := consul.Register(ctx, c, &api.AgentServiceRegistration{Name: "web", Address: "10.0.0.1", Port: 80})
	if !errors.Is(err, registry.ErrNilContext) {
		if reg != nil {
			reg.Close()
		}
		t.Fatalf("Register(nil, ...) = %v, %v; want registry.ErrNilContext", reg, err)
	}
	if reqs := a.Requests(); len(reqs) != 0 {
		t.Errorf("Register(nil, ...) sent %d requests to the agent, the first %s %s; want none", len(reqs), reqs[0].Method, reqs[0].Path)
	}
}

// TestRegisterLostAnswerLeavesNothing proves that a Register that fails
// leaves no instance behind, even when the agent applied the registration
// and only its answer was lost because ctx ended while the request was in
// flight: nothing else could ever deregister that instance.
func TestRegisterLostAnswerLeavesNothing(t *testing.T) {
	a, _ := newAgent(t)
	// A proxy in front of the agent passes the registration on but holds
	// the agent's answer back until the client gives up.
	target, err := url.Parse("http://" + a.Addr())
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	applied := make(chan struct{})
	var once sync.Once
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/agent/service/register" {
			rp.ServeHTTP(httptest.NewRecorder(), r.Clone(context.WithoutCancel(r.Context())))
			once.Do(func() { close(applied) })
			<-r.Context().Done()
			return
		}
		rp.ServeHTTP(w, r)
	}))
	tr := &http.Transport{}
	t.Cleanup(func() { tr.CloseIdleConnections(); front.Close() })
	c, err := api.NewClient(&api.Config{Address: front.Listener.Addr().String(), Scheme: "http", Transport: tr})
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-applied: // the agent has the instance; its answer is held
		case <-time.After(patience):
		}
		cancel()
	}()
	reg, err := consul.Register(ctx, c, &api.AgentServiceRegistration{Name: "web", Address: "10.0.0.1", Port: 80})
	if !errors.Is(err, context.Canceled) {
		if reg != nil {
			reg.Close()
		}
		t.Fatalf("Register = %v, %v; want the ctx error", reg, err)
	}
	select {
	case <-applied:
	default:
		t.Fatal("the registration never reached the agent; the test proves nothing")
	}
	if _, ok := a.Registration("web-10.0.0.1:80"); ok {
		t.Fatalf("Register returned %v, but the instance is still registered with the agent", err)
	}
}

func TestRegisterAgentDown(t *testing.T) {
	a, c := newAgent(t)
	a.SetDown(true)
	if reg, err := consul.Register(context.Background(), c, &api.AgentServiceRegistration{Name: "web", Port: 1}); err == nil {
		reg.Close()
		t.Fatal("Register against a down agent succeeded")
	}
	a.SetDown(false)
	reg := register(t, context.Background(), c, &api.AgentServiceRegistration{Name: "web", Port: 1})
	a.SetDown(true)
	if err := reg.Close(); err == nil {
		t.Error("Close against a down agent reported no error")
	}
	if err := reg.Close(); err == nil {
		t.Error("second Close forgot the deregistration error")
	}
}

func hasQuery(reqs []fakeconsul.Request, path, param string) bool {
	for _, r := range reqs {
		if r.Path == path && r.Query.Has(param) {
			return true
		}
	}
	return false
}
