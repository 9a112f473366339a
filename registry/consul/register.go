package consul

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lbrpc/lbrpc/registry"
)

// DefaultTTL is the TTL of the check Register adds when given neither
// WithTTL nor WithTCPCheck.
const DefaultTTL = 10 * time.Second

// deregisterTimeout bounds the deregistration request made by Close, when
// Register's context ends, or when Register's registration request fails.
const deregisterTimeout = 10 * time.Second

// RegisterOption configures Register.
type RegisterOption func(*regConfig)

type regConfig struct {
	ttl             time.Duration
	tcp             bool
	tcpInterval     time.Duration
	tcpTimeout      time.Duration
	ttlSet          bool
	deregisterAfter time.Duration
	onError         func(error)
}

// WithTTL sets the TTL of the check Register adds (DefaultTTL if not given);
// ttl must be positive. The Registration reports the check passing about
// every ttl/3, so Consul marks the instance critical, and watchers drop it,
// about ttl after the process stops reporting.
func WithTTL(ttl time.Duration) RegisterOption {
	return func(c *regConfig) { c.ttl, c.ttlSet = ttl, true }
}

// WithTCPCheck replaces the TTL check with a TCP check that the Consul agent
// runs against Address:Port every interval (positive), giving up on a probe
// after timeout (0 means Consul's default, 10s). The instance is critical,
// and absent from watchers, until the first probe succeeds. It needs a
// non-empty Address and cannot be combined with WithTTL.
func WithTCPCheck(interval, timeout time.Duration) RegisterOption {
	return func(c *regConfig) { c.tcp, c.tcpInterval, c.tcpTimeout = true, interval, timeout }
}

// WithDeregisterCriticalAfter asks Consul to remove the instance once its
// check has been critical for d, cleaning up after a process that died
// without closing its Registration. Consul raises values below one minute to
// one minute and reaps about every 30 seconds. By default critical instances stay
// registered (and out of passing results) until deregistered.
func WithDeregisterCriticalAfter(d time.Duration) RegisterOption {
	return func(c *regConfig) { c.deregisterAfter = d }
}

// WithErrorHandler sets a function to hear of failed TTL updates,
// re-registrations and deregistrations that happen in the background. It is
// called from the Registration's goroutine and must not block. By default
// such errors are dropped (Close still returns the deregistration error).
func WithErrorHandler(f func(error)) RegisterOption {
	return func(c *regConfig) { c.onError = f }
}

// Registration is a service instance registered with the local Consul agent
// by Register, which starts the goroutine that Close stops. Its methods are
// safe for concurrent use. The zero value is not usable.
type Registration struct {
	client  *api.Client
	reg     *api.AgentServiceRegistration // as sent, with our check
	checkID string
	ttl     time.Duration // 0 for a TCP check: nothing to refresh
	onError func(error)

	cancel context.CancelFunc
	done   chan struct{} // closed when run returns
	err    error         // deregistration result, written by run before done closes
}

// Register registers a service instance with the local Consul agent
// (PUT /v1/agent/service/register) and keeps it registered until Close is
// called or ctx ends, then deregisters it
// (PUT /v1/agent/service/deregister/<id>).
//
// ctx bounds the whole registration, not only the first request: pass a
// context that lives as long as the server, never a request's.
//
// svc describes the instance; Register does not modify it. Name is required,
// Port must be in 1..65535, and an empty ID defaults to
// "<Name>-<Address>:<Port>", unique per agent. IDs must not contain '/', '?',
// '#', '%', spaces or control characters. Checks in svc are kept; Register
// adds one more, with CheckID "lbrpc:<ID>":
//
//   - By default a TTL check (see WithTTL) that starts passing, which
//     assumes the server is already listening. A goroutine reports it
//     passing (PUT /v1/agent/check/update/<checkID>) every TTL/3. If an
//     update fails, for instance because the agent restarted and forgot the
//     instance, the goroutine registers the instance again (which also undoes
//     a deregistration made behind the Registration's back).
//   - With WithTCPCheck, a TCP check the agent runs itself.
//
// The registration is sent with replace-existing-checks, so checks left from
// an earlier registration under the same ID are removed. Register blocks for
// the one registration request.
//
// If that request fails, Register returns the error and no Registration,
// and leaves nothing registered: the agent may have applied a request whose
// answer was lost (ctx ended while it was in flight), so Register first
// deregisters the ID, best effort, even though ctx has ended, waiting for at
// most about 10 seconds. A nil ctx is registry.ErrNilContext, returned before
// anything is sent.
func Register(ctx context.Context, client *api.Client, svc *api.AgentServiceRegistration, opts ...RegisterOption) (*Registration, error) {
	if ctx == nil {
		return nil, registry.ErrNilContext
	}
	if client == nil {
		return nil, errors.New("lbrpc/registry/consul: nil api.Client")
	}
	if svc == nil {
		return nil, errors.New("lbrpc/registry/consul: nil registration")
	}
	if err := checkName("service name", svc.Name); err != nil {
		return nil, err
	}
	if svc.Port < 1 || svc.Port > 65535 {
		return nil, fmt.Errorf("lbrpc/registry/consul: port %d out of 1..65535", svc.Port)
	}
	cfg := regConfig{ttl: DefaultTTL}
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	switch {
	case cfg.tcp && cfg.ttlSet:
		return nil, errors.New("lbrpc/registry/consul: WithTTL and WithTCPCheck are exclusive")
	case !cfg.tcp && cfg.ttl <= 0:
		return nil, fmt.Errorf("lbrpc/registry/consul: TTL %v is not positive", cfg.ttl)
	case cfg.tcp && cfg.tcpInterval <= 0:
		return nil, fmt.Errorf("lbrpc/registry/consul: TCP check interval %v is not positive", cfg.tcpInterval)
	case cfg.tcp && cfg.tcpTimeout < 0:
		return nil, fmt.Errorf("lbrpc/registry/consul: TCP check timeout %v is negative", cfg.tcpTimeout)
	case cfg.tcp && svc.Address == "":
		return nil, errors.New("lbrpc/registry/consul: WithTCPCheck needs the registration's Address")
	case cfg.deregisterAfter < 0:
		return nil, fmt.Errorf("lbrpc/registry/consul: deregister-critical-after %v is negative", cfg.deregisterAfter)
	}

	reg := copyRegistration(svc)
	if reg.ID == "" {
		reg.ID = reg.Name + "-" + net.JoinHostPort(reg.Address, strconv.Itoa(reg.Port))
	}
	if err := checkName("service ID", reg.ID); err != nil {
		return nil, err
	}
	check := &api.AgentServiceCheck{CheckID: "lbrpc:" + reg.ID}
	if cfg.deregisterAfter > 0 {
		check.DeregisterCriticalServiceAfter = cfg.deregisterAfter.String()
	}
	if cfg.tcp {
		check.Name = "lbrpc TCP"
		check.TCP = net.JoinHostPort(reg.Address, strconv.Itoa(reg.Port))
		check.Interval = cfg.tcpInterval.String()
		if cfg.tcpTimeout > 0 {
			check.Timeout = cfg.tcpTimeout.String()
		}
	} else {
		check.Name = "lbrpc TTL"
		check.TTL = cfg.ttl.String()
		check.Status = api.HealthPassing
	}
	reg.Checks = append(reg.Checks, check)

	r := &Registration{
		client:  client,
		reg:     &reg,
		checkID: check.CheckID,
		onError: cfg.onError,
		done:    make(chan struct{}),
	}
	if !cfg.tcp {
		r.ttl = cfg.ttl
	}
	if err := r.register(ctx); err != nil {
		// The agent may have registered the instance although its answer
		// was lost, and nothing else would ever deregister it. Best effort:
		// the register error is the one to return.
		_ = r.deregister(ctx)
		return nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	r.cancel = cancel
	go r.run(rctx)
	return r, nil
}

// copyRegistration copies svc deeply enough that the caller changing its
// own value cannot race with re-registrations.
func copyRegistration(svc *api.AgentServiceRegistration) api.AgentServiceRegistration {
	reg := *svc
	reg.Tags = slices.Clone(svc.Tags)
	reg.Meta = maps.Clone(svc.Meta)
	reg.TaggedAddresses = maps.Clone(svc.TaggedAddresses)
	if svc.Weights != nil {
		w := *svc.Weights
		reg.Weights = &w
	}
	if svc.Check != nil {
		c := *svc.Check
		reg.Check = &c
	}
	reg.Checks = make(api.AgentServiceChecks, 0, len(svc.Checks)+1)
	for _, c := range svc.Checks {
		if c != nil {
			c := *c
			reg.Checks = append(reg.Checks, &c)
		}
	}
	return reg
}

// ID returns the instance's service ID.
func (r *Registration) ID() string { return r.reg.ID }

// Close stops the background goroutine, deregisters the instance and waits
// for both, for at most about 10 seconds. If ctx had already ended, the
// instance was deregistered then. Close is idempotent: every call returns
// the deregistration's error.
func (r *Registration) Close() error {
	r.cancel()
	<-r.done
	return r.err
}

func (r *Registration) run(ctx context.Context) {
	defer close(r.done)
	var tick <-chan time.Time
	if r.ttl > 0 {
		t := time.NewTicker(max(r.ttl/3, time.Millisecond))
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			r.err = r.deregister(ctx)
			if r.err != nil {
				r.report(r.err)
			}
			return
		case <-tick:
			r.heartbeat(ctx)
		}
	}
}

// heartbeat reports the TTL check passing, registering again if that fails.
func (r *Registration) heartbeat(ctx context.Context) {
	timeout := max(r.ttl/3, time.Millisecond)
	uctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := r.client.Agent().UpdateTTLOpts(r.checkID, "", api.HealthPassing, (&api.QueryOptions{}).WithContext(uctx))
	// An update that ran out of its own time failed, and is reported; one
	// cut short because the registration is ending is not.
	if err == nil || ctx.Err() != nil {
		return
	}
	r.report(fmt.Errorf("lbrpc/registry/consul: TTL update of %q: %w", r.checkID, err))
	rctx, rcancel := context.WithTimeout(ctx, timeout)
	defer rcancel()
	if err := r.register(rctx); err != nil && ctx.Err() == nil {
		r.report(err)
	}
}

func (r *Registration) register(ctx context.Context) error {
	opts := api.ServiceRegisterOpts{ReplaceExistingChecks: true}.WithContext(ctx)
	if err := r.client.Agent().ServiceRegisterOpts(r.reg, opts); err != nil {
		return fmt.Errorf("lbrpc/registry/consul: register %q: %w", r.reg.ID, err)
	}
	return nil
}

func (r *Registration) deregister(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), deregisterTimeout)
	defer cancel()
	if err := r.client.Agent().ServiceDeregisterOpts(r.reg.ID, (&api.QueryOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("lbrpc/registry/consul: deregister %q: %w", r.reg.ID, err)
	}
	return nil
}

func (r *Registration) report(err error) {
	if r.onError != nil {
		r.onError(err)
	}
}
