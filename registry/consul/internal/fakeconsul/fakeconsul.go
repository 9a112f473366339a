// Package fakeconsul is an in-process stand-in for a Consul agent, for tests.
//
// It serves, over HTTP on 127.0.0.1, the few documented endpoints that the
// lbrpc Consul registry calls through github.com/hashicorp/consul/api, with
// the JSON shapes of that package's types:
//
//	GET /v1/health/service/<name>         api.ServiceEntry list; passing, tag, index, wait
//	PUT /v1/agent/service/register        api.AgentServiceRegistration body
//	PUT /v1/agent/service/deregister/<id>
//	PUT /v1/agent/check/update/<checkID>  {"Status", "Output"} body, for TTL checks
//
// Health answers carry X-Consul-Index and block as Consul's blocking queries
// do: a request whose index is at least the current one waits until the index
// passes it or the wait elapses (5 minutes by default, at most 10). TTL checks
// turn critical when their TTL runs out without an update, so the instance
// leaves passing-only answers.
//
// It is a fake, not Consul: one node ("fake-node" at 127.0.0.1), one index for
// all data, no ACLs, datacenters or anti-entropy. Registration always replaces
// the instance's checks (as ?replace-existing-checks does), script, HTTP and TCP
// checks are never run (their status stays as registered until SetCheckStatus),
// and DeregisterCriticalServiceAfter is stored but not acted on. Tag matching
// is case-insensitive, as in Consul.
//
// An Agent is safe for concurrent use.
package fakeconsul

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
)

// NodeName and NodeAddress describe the one node the fake agent runs on.
const (
	NodeName    = "fake-node"
	NodeAddress = "127.0.0.1"
)

const (
	defaultWait = 5 * time.Minute
	maxWait     = 10 * time.Minute
	firstIndex  = 100
)

// Request is one HTTP request the agent received.
type Request struct {
	Method string
	Path   string
	Query  url.Values
	At     time.Time
}

// Agent is a running fake agent. Create it with New and Close it when done.
type Agent struct {
	srv    *httptest.Server
	closed chan struct{}
	once   sync.Once

	mu          sync.Mutex
	index       uint64
	changed     chan struct{} // closed and replaced on every index change
	services    map[string]*service
	checks      map[string]*check
	down        bool
	stalled     bool
	errStatus   int
	brokenIndex *uint64
	requests    []Request
	ttlUpdates  map[string]int
	transports  []*http.Transport
}

type service struct {
	reg      api.AgentServiceRegistration // as received
	svc      api.AgentService
	checkIDs []string
	index    uint64 // CreateIndex
}

type check struct {
	hc       api.HealthCheck
	ttl      time.Duration
	deadline time.Time
	timer    *time.Timer
}

// New starts a fake agent on a loopback port.
func New() *Agent {
	a := &Agent{
		closed:     make(chan struct{}),
		index:      firstIndex,
		changed:    make(chan struct{}),
		services:   make(map[string]*service),
		checks:     make(map[string]*check),
		ttlUpdates: make(map[string]int),
	}
	a.srv = httptest.NewServer(http.HandlerFunc(a.serve))
	return a
}

// Addr returns the agent's "host:port", for api.Config.Address.
func (a *Agent) Addr() string { return a.srv.Listener.Addr().String() }

// Client returns an api.Client for the agent with a transport of its own,
// whose idle connections Close closes. It panics if api.NewClient fails,
// which happens only when CONSUL_* environment variables name unreadable
// TLS or token files.
func (a *Agent) Client() *api.Client {
	tr := &http.Transport{}
	c, err := api.NewClient(&api.Config{Address: a.Addr(), Scheme: "http", Transport: tr})
	if err != nil {
		panic("fakeconsul: " + err.Error())
	}
	a.mu.Lock()
	a.transports = append(a.transports, tr)
	a.mu.Unlock()
	return c
}

// Close releases blocked queries, stops TTL timers, shuts the server down,
// waiting for its handlers, and closes the idle connections of the clients
// made by Client. Close is idempotent.
func (a *Agent) Close() {
	a.once.Do(func() {
		a.mu.Lock()
		for _, c := range a.checks {
			if c.timer != nil {
				c.timer.Stop()
			}
		}
		a.mu.Unlock()
		close(a.closed)
		a.srv.Close()
		a.mu.Lock()
		defer a.mu.Unlock()
		for _, tr := range a.transports {
			tr.CloseIdleConnections()
		}
	})
}

// SetDown makes the agent unreachable (true) or reachable again (false).
// While down, every request, blocked ones included, has its connection
// closed without an answer.
func (a *Agent) SetDown(down bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.down = down
	a.wakeLocked()
}

// SetStalled makes the agent hang (true): every new request is read and
// then held without an answer until its client gives up or the agent is
// closed, as a wedged agent does. False answers new requests again.
func (a *Agent) SetStalled(stalled bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.stalled = stalled
}

// SetErrorStatus makes every request, blocked ones included, fail with the
// given HTTP status; 0 restores normal answers.
func (a *Agent) SetErrorStatus(code int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.errStatus = code
	a.wakeLocked()
}

// SetIndex sets the agent's index, which may go backwards as it does when
// Consul restores an older snapshot. As in Consul, a query blocks while the
// index is at most its index parameter, so after a step back queries that
// carry the old index answer only when their wait elapses, with the lower
// index, which clients must take as a reset.
func (a *Agent) SetIndex(index uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.index = index
	a.wakeLocked()
}

// Index returns the agent's current index.
func (a *Agent) Index() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.index
}

// BreakBlocking makes health queries answer at once with X-Consul-Index
// index, whatever their index parameter: the Consul bug the blocking-query
// documentation tells clients to guard against. FixBlocking undoes it.
func (a *Agent) BreakBlocking(index uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.brokenIndex = &index
	a.wakeLocked()
}

// FixBlocking restores normal blocking queries after BreakBlocking.
func (a *Agent) FixBlocking() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.brokenIndex = nil
}

// Requests returns the requests received so far, oldest first.
func (a *Agent) Requests() []Request {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.requests)
}

// TTLUpdates returns how many accepted updates the check has received.
func (a *Agent) TTLUpdates(checkID string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.ttlUpdates[checkID]
}

// Registration returns the body of the last registration of service id.
func (a *Agent) Registration(id string) (api.AgentServiceRegistration, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, ok := a.services[id]
	if !ok {
		return api.AgentServiceRegistration{}, false
	}
	return s.reg, true
}

// CheckStatus returns a check's status ("passing", "warning", "critical").
func (a *Agent) CheckStatus(checkID string) (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c, ok := a.checks[checkID]
	if !ok {
		return "", false
	}
	return c.hc.Status, true
}

// SetCheckStatus sets a check's status, standing in for the agent running
// the check (or an operator failing it).
func (a *Agent) SetCheckStatus(checkID, status string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	c, ok := a.checks[checkID]
	if !ok {
		return fmt.Errorf("fakeconsul: unknown check %q", checkID)
	}
	if !validStatus(status) {
		return fmt.Errorf("fakeconsul: bad status %q", status)
	}
	if c.hc.Status != status {
		c.hc.Status = status
		a.bumpLocked(&c.hc.ModifyIndex)
	}
	return nil
}

// Register registers a service instance as PUT /v1/agent/service/register
// does.
func (a *Agent) Register(reg api.AgentServiceRegistration) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.registerLocked(reg); err != nil {
		return err
	}
	a.wakeLocked()
	return nil
}

// Replace makes regs the only instances of service, in one index step, so
// that no watcher sees a half-done change. Every reg's Name must be service.
func (a *Agent) Replace(service string, regs []api.AgentServiceRegistration) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, r := range regs {
		if r.Name != service {
			return fmt.Errorf("fakeconsul: registration %q is not of service %q", r.Name, service)
		}
	}
	for id, s := range a.services {
		if s.svc.Service == service {
			a.deregisterLocked(id)
		}
	}
	for _, r := range regs {
		if err := a.registerLocked(r); err != nil {
			return err
		}
	}
	a.index++ // one step even when nothing was registered
	a.wakeLocked()
	return nil
}

func (a *Agent) serve(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	a.requests = append(a.requests, Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(), At: time.Now()})
	a.mu.Unlock()
	if a.fault(w, r) {
		return
	}
	p := r.URL.Path
	switch {
	case r.Method == http.MethodGet && strings.HasPrefix(p, "/v1/health/service/"):
		a.healthService(w, r, strings.TrimPrefix(p, "/v1/health/service/"))
	case r.Method == http.MethodPut && p == "/v1/agent/service/register":
		a.serviceRegister(w, r)
	case r.Method == http.MethodPut && strings.HasPrefix(p, "/v1/agent/service/deregister/"):
		a.serviceDeregister(w, strings.TrimPrefix(p, "/v1/agent/service/deregister/"))
	case r.Method == http.MethodPut && strings.HasPrefix(p, "/v1/agent/check/update/"):
		a.checkUpdate(w, r, strings.TrimPrefix(p, "/v1/agent/check/update/"))
	default:
		http.Error(w, "fakeconsul: unsupported endpoint: "+r.Method+" "+p, http.StatusNotFound)
	}
}

// fault answers the request as the agent's failure mode says and reports
// whether it did.
func (a *Agent) fault(w http.ResponseWriter, r *http.Request) bool {
	a.mu.Lock()
	down, stalled, code := a.down, a.stalled, a.errStatus
	a.mu.Unlock()
	switch {
	case stalled:
		select {
		case <-r.Context().Done():
		case <-a.closed:
		}
		return true
	case down:
		hangUp(w)
		return true
	case code != 0:
		http.Error(w, "fakeconsul: injected failure", code)
		return true
	}
	return false
}

func hangUp(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "fakeconsul: down", http.StatusServiceUnavailable)
		return
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return
	}
	conn.Close()
}

func (a *Agent) healthService(w http.ResponseWriter, r *http.Request, name string) {
	q := r.URL.Query()
	var minIndex uint64
	if s := q.Get("index"); s != "" {
		var err error
		if minIndex, err = strconv.ParseUint(s, 10, 64); err != nil {
			http.Error(w, "bad index", http.StatusBadRequest)
			return
		}
	}
	wait := defaultWait
	if s := q.Get("wait"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			http.Error(w, "bad wait", http.StatusBadRequest)
			return
		}
		wait = min(d, maxWait)
	}
	passing := false
	if q.Has("passing") {
		v := q.Get("passing")
		passing = v == "" || v == "1" || strings.EqualFold(v, "true")
	}
	tags := q["tag"]

	timer := time.NewTimer(wait)
	defer timer.Stop()
	a.mu.Lock()
	if minIndex > 0 {
		// Block until the index passes minIndex, the agent fails, or wait
		// elapses.
	block:
		for a.index <= minIndex && !a.down && a.errStatus == 0 && a.brokenIndex == nil {
			ch := a.changed
			a.mu.Unlock()
			select {
			case <-ch:
			case <-timer.C:
				a.mu.Lock()
				break block
			case <-r.Context().Done():
				return
			case <-a.closed:
				http.Error(w, "fakeconsul: shutting down", http.StatusServiceUnavailable)
				return
			}
			a.mu.Lock()
		}
	}
	down, code := a.down, a.errStatus
	index := a.index
	if a.brokenIndex != nil {
		index = *a.brokenIndex
	}
	entries := a.entriesLocked(name, tags, passing)
	a.mu.Unlock()

	switch {
	case down:
		hangUp(w)
		return
	case code != 0:
		http.Error(w, "fakeconsul: injected failure", code)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Consul-Index", strconv.FormatUint(index, 10))
	h.Set("X-Consul-KnownLeader", "true")
	h.Set("X-Consul-LastContact", "0")
	json.NewEncoder(w).Encode(entries)
}

func (a *Agent) entriesLocked(name string, tags []string, passing bool) []*api.ServiceEntry {
	node := &api.Node{
		ID:          "00000000-0000-0000-0000-000000000001",
		Node:        NodeName,
		Address:     NodeAddress,
		Datacenter:  "dc1",
		CreateIndex: 1,
		ModifyIndex: 1,
	}
	entries := []*api.ServiceEntry{}
	for _, id := range slices.Sorted(maps.Keys(a.services)) {
		s := a.services[id]
		if s.svc.Service != name || !hasTags(s.svc.Tags, tags) {
			continue
		}
		checks := api.HealthChecks{{
			Node: NodeName, CheckID: "serfHealth", Name: "Serf Health Status",
			Status: api.HealthPassing, Output: "Agent alive and reachable",
			CreateIndex: 1, ModifyIndex: 1,
		}}
		ok := true
		for _, cid := range s.checkIDs {
			hc := a.checks[cid].hc
			checks = append(checks, &hc)
			ok = ok && hc.Status == api.HealthPassing
		}
		if passing && !ok {
			continue
		}
		svc := s.svc
		svc.Tags = slices.Clone(svc.Tags)
		svc.Meta = maps.Clone(svc.Meta)
		entries = append(entries, &api.ServiceEntry{Node: node, Service: &svc, Checks: checks})
	}
	return entries
}

func hasTags(have, want []string) bool {
	for _, w := range want {
		if !slices.ContainsFunc(have, func(h string) bool { return strings.EqualFold(h, w) }) {
			return false
		}
	}
	return true
}

func (a *Agent) serviceRegister(w http.ResponseWriter, r *http.Request) {
	var reg api.AgentServiceRegistration
	if err := json.NewDecoder(r.Body).Decode(&reg); err != nil {
		http.Error(w, "Request decode failed: "+err.Error(), http.StatusBadRequest)
		return
	}
	if err := a.Register(reg); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
	}
}

func (a *Agent) registerLocked(reg api.AgentServiceRegistration) error {
	if reg.Name == "" {
		return errors.New("Missing service name")
	}
	if reg.Port < 0 || reg.Port > 65535 {
		return fmt.Errorf("Invalid port %d", reg.Port)
	}
	id := reg.ID
	if id == "" {
		id = reg.Name
	}
	weights := api.AgentWeights{Passing: 1, Warning: 1}
	if reg.Weights != nil {
		if reg.Weights.Passing < 1 {
			return errors.New("Passing must be greater than 0")
		}
		weights = *reg.Weights
	}
	var defs api.AgentServiceChecks
	if reg.Check != nil {
		defs = append(defs, reg.Check)
	}
	defs = append(defs, reg.Checks...)
	var newChecks []*check
	for i, d := range defs {
		cid := d.CheckID
		if cid == "" {
			cid = "service:" + id
			if len(defs) > 1 {
				cid += ":" + strconv.Itoa(i+1)
			}
		}
		c := &check{hc: api.HealthCheck{
			Node: NodeName, CheckID: cid, Name: d.Name, Notes: d.Notes,
			ServiceID: id, ServiceName: reg.Name, ServiceTags: slices.Clone(reg.Tags),
			Status: api.HealthCritical,
		}}
		if c.hc.Name == "" {
			c.hc.Name = "Service '" + reg.Name + "' check"
		}
		if d.Status != "" {
			if !validStatus(d.Status) {
				return fmt.Errorf("Invalid initial status %q", d.Status)
			}
			c.hc.Status = d.Status
		}
		switch {
		case d.TTL != "":
			ttl, err := time.ParseDuration(d.TTL)
			if err != nil || ttl <= 0 {
				return fmt.Errorf("Invalid TTL %q", d.TTL)
			}
			c.ttl = ttl
			c.hc.Type = "ttl"
		case d.TCP != "":
			if _, err := time.ParseDuration(d.Interval); err != nil {
				return fmt.Errorf("Invalid interval %q", d.Interval)
			}
			c.hc.Type = "tcp"
			c.hc.Definition.TCP = d.TCP
		default:
			c.hc.Type = "other"
		}
		newChecks = append(newChecks, c)
	}

	if old, ok := a.services[id]; ok {
		for _, cid := range old.checkIDs {
			a.dropCheckLocked(cid)
		}
	}
	a.index++
	s := &service{reg: reg, index: a.index}
	s.svc = api.AgentService{
		ID: id, Service: reg.Name, Tags: slices.Clone(reg.Tags), Meta: maps.Clone(reg.Meta),
		Port: reg.Port, Address: reg.Address, Weights: weights,
		EnableTagOverride: reg.EnableTagOverride,
		CreateIndex:       a.index, ModifyIndex: a.index, Datacenter: "dc1",
	}
	if s.svc.Meta == nil {
		s.svc.Meta = map[string]string{}
	}
	if s.svc.Tags == nil {
		s.svc.Tags = []string{}
	}
	for _, c := range newChecks {
		c.hc.CreateIndex, c.hc.ModifyIndex = a.index, a.index
		a.dropCheckLocked(c.hc.CheckID)
		a.checks[c.hc.CheckID] = c
		s.checkIDs = append(s.checkIDs, c.hc.CheckID)
		if c.ttl > 0 {
			a.armLocked(c)
		}
	}
	a.services[id] = s
	return nil
}

func (a *Agent) serviceDeregister(w http.ResponseWriter, id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.services[id]; !ok {
		http.Error(w, fmt.Sprintf("Unknown service ID %q. Ensure that the service ID is passed, not the service name.", id), http.StatusNotFound)
		return
	}
	a.deregisterLocked(id)
	a.index++
	a.wakeLocked()
}

func (a *Agent) deregisterLocked(id string) {
	s := a.services[id]
	for _, cid := range s.checkIDs {
		a.dropCheckLocked(cid)
	}
	delete(a.services, id)
}

func (a *Agent) dropCheckLocked(cid string) {
	if c, ok := a.checks[cid]; ok {
		if c.timer != nil {
			c.timer.Stop()
		}
		delete(a.checks, cid)
	}
}

func (a *Agent) checkUpdate(w http.ResponseWriter, r *http.Request, cid string) {
	var body struct{ Status, Output string }
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		http.Error(w, "Request decode failed: "+err.Error(), http.StatusBadRequest)
		return
	}
	if !validStatus(body.Status) {
		http.Error(w, fmt.Sprintf("Invalid check status: %q", body.Status), http.StatusBadRequest)
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	c, ok := a.checks[cid]
	if !ok {
		http.Error(w, fmt.Sprintf("Unknown check ID %q", cid), http.StatusNotFound)
		return
	}
	if c.ttl == 0 {
		http.Error(w, fmt.Sprintf("CheckID %q does not have associated TTL", cid), http.StatusInternalServerError)
		return
	}
	a.ttlUpdates[cid]++
	a.armLocked(c)
	if c.hc.Status != body.Status || c.hc.Output != body.Output {
		c.hc.Status, c.hc.Output = body.Status, body.Output
		a.bumpLocked(&c.hc.ModifyIndex)
	}
}

// armLocked (re)starts a TTL check's expiry timer.
func (a *Agent) armLocked(c *check) {
	c.deadline = time.Now().Add(c.ttl)
	if c.timer != nil {
		c.timer.Reset(c.ttl)
		return
	}
	c.timer = time.AfterFunc(c.ttl, func() { a.expire(c) })
}

func (a *Agent) expire(c *check) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.checks[c.hc.CheckID] != c || time.Now().Before(c.deadline) {
		return // dropped, or refreshed since the timer fired
	}
	if c.hc.Status != api.HealthCritical {
		c.hc.Status = api.HealthCritical
		c.hc.Output = "TTL expired"
		a.bumpLocked(&c.hc.ModifyIndex)
	}
}

func (a *Agent) bumpLocked(modify *uint64) {
	a.index++
	*modify = a.index
	a.wakeLocked()
}

func (a *Agent) wakeLocked() {
	close(a.changed)
	a.changed = make(chan struct{})
}

func validStatus(s string) bool {
	return s == api.HealthPassing || s == api.HealthWarning || s == api.HealthCritical
}
