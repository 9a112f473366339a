package dns

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lbrpc/lbrpc/registry"
)

// ErrNotFound matches (errors.Is) a LookupError for a name that has no
// usable records: NXDOMAIN, or a name without records of the wanted type.
// A name whose SRV records all have invalid targets fails with the
// resolver's error instead, which ErrNotFound does not match.
var ErrNotFound = errors.New("lbrpc/registry/dns: no records")

// LookupError is what Watcher.Next returns when a resolution fails. The
// client keeps the last good set meanwhile.
type LookupError struct {
	// Name is the name that was looked up.
	Name string
	// Err is the cause, usually a *net.DNSError.
	Err error
}

func (e *LookupError) Error() string {
	return "lbrpc/registry/dns: lookup " + e.Name + ": " + e.Err.Error()
}

func (e *LookupError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrNotFound) hold for missing names, so callers
// need not dig for net.DNSError.IsNotFound.
func (e *LookupError) Is(target error) bool {
	var de *net.DNSError
	return target == ErrNotFound && errors.As(e.Err, &de) && de.IsNotFound
}

const (
	// minInterval keeps a misconfigured client from flooding its DNS server.
	minInterval        = time.Second
	defaultInterval    = 30 * time.Second
	defaultMinInterval = 5 * time.Second
	defaultTimeout     = 5 * time.Second
)

type config struct {
	resolver    *net.Resolver
	interval    time.Duration
	minInterval time.Duration
	timeout     time.Duration
	clock       clock
}

func defaultConfig() config {
	return config{
		resolver:    net.DefaultResolver,
		interval:    defaultInterval,
		minInterval: defaultMinInterval,
		timeout:     defaultTimeout,
		clock:       realClock{},
	}
}

func (c config) validate() error {
	if c.interval < minInterval {
		return fmt.Errorf("lbrpc/registry/dns: interval %v is below the %v minimum", c.interval, minInterval)
	}
	if c.minInterval < minInterval {
		return fmt.Errorf("lbrpc/registry/dns: min interval %v is below the %v minimum", c.minInterval, minInterval)
	}
	if c.timeout <= 0 {
		return fmt.Errorf("lbrpc/registry/dns: timeout %v is not positive", c.timeout)
	}
	return nil
}

// Option configures Host and SRV.
type Option func(*config)

// WithResolver sets the resolver, for a particular DNS server or a custom
// Dial. Nil means net.DefaultResolver.
func WithResolver(r *net.Resolver) Option {
	return func(c *config) {
		if r == nil {
			r = net.DefaultResolver
		}
		c.resolver = r
	}
}

// WithInterval sets how often the name is resolved again, since DNS does
// not push changes. The default is 30 s; less than 1 s is an error, to
// spare the DNS server.
func WithInterval(d time.Duration) Option {
	return func(c *config) { c.interval = d }
}

// WithMinInterval sets the least time between the start of one resolution
// and an early one asked for through ReportFailure, so that a burst of
// failed calls costs one lookup. The default is 5 s; less than 1 s is an
// error.
func WithMinInterval(d time.Duration) Option {
	return func(c *config) { c.minInterval = d }
}

// WithTimeout bounds each resolution, so that a hung DNS server shows up as
// an error. The default is 5 s; it must be positive.
func WithTimeout(d time.Duration) Option {
	return func(c *config) { c.timeout = d }
}

// withClock lets tests run the re-resolution schedule in virtual time.
func withClock(c clock) Option {
	return func(cfg *config) { cfg.clock = c }
}

// Registry resolves one DNS name into nodes. Make one with Host or SRV.
//
// A Registry is immutable and safe for concurrent use. Each Watch starts one
// goroutine that resolves the name until the Watcher is stopped.
type Registry struct {
	name string
	port uint16 // 0 for SRV
	cfg  config
}

// Host returns a registry of the addresses that target's host name resolves
// to (A and AAAA records), each on target's port with weight 1. target is
// "host:port" with a numeric port, for example
// "my-svc.my-ns.svc.cluster.local:8080". Host does no I/O.
func Host(target string, opts ...Option) (*Registry, error) {
	host, port, err := net.SplitHostPort(target)
	if err != nil {
		return nil, fmt.Errorf("lbrpc/registry/dns: target %q: want host:port: %w", target, err)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return nil, fmt.Errorf("lbrpc/registry/dns: target %q: port must be a number from 1 to 65535", target)
	}
	if _, err := netip.ParseAddr(host); err != nil && !validName(host) {
		return nil, fmt.Errorf("lbrpc/registry/dns: target %q: %q is not a host name", target, host)
	}
	return newRegistry(host, uint16(p), opts)
}

// SRV returns a registry of the targets of name's SRV records, for example
// "_rpc._tcp.my-svc.my-ns.svc.cluster.local". Each node's address is the
// record's target (a host name, resolved when dialled) and port, and its
// weight the record's weight. Only the records with the lowest priority
// number are used, the rest being backups while those exist. SRV does no
// I/O.
//
// Weight 0 becomes 1: RFC 2782 gives such records a small share of the
// calls, never none, whereas a registry.Node's zero weight means "drain".
// A lone record with target "." means the service is decidedly not
// available (RFC 2782) and is reported as an empty set without error.
func SRV(name string, opts ...Option) (*Registry, error) {
	if !validName(name) {
		return nil, fmt.Errorf("lbrpc/registry/dns: SRV name %q: want a DNS name such as _service._proto.example.com, without port", name)
	}
	return newRegistry(name, 0, opts)
}

func newRegistry(name string, port uint16, opts []Option) (*Registry, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Registry{name: name, port: port, cfg: cfg}, nil
}

// Watch starts resolving. It does no I/O itself: the first Next waits for
// the first resolution. ctx bounds only the setting up, so a cancelled ctx
// is an error, and a nil one is registry.ErrNilContext.
//
// The Watcher implements registry.FailureReporter. Stop waits for the
// resolving goroutine to end; a lookup in flight is cancelled.
func (r *Registry) Watch(ctx context.Context) (registry.Watcher, error) {
	if ctx == nil {
		return nil, registry.ErrNilContext
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return startWatcher(r), nil
}

// lookup resolves the name once. A nil error with no nodes is a deliberate
// empty set; a name without records is ErrNotFound.
func (r *Registry) lookup(ctx context.Context) ([]registry.Node, error) {
	var nodes []registry.Node
	var err error
	if r.port == 0 {
		nodes, err = r.lookupSRV(ctx)
	} else {
		nodes, err = r.lookupHost(ctx)
	}
	if err != nil {
		return nil, err
	}
	// Sorted so that snapshots compare as sets; the heaviest of repeated
	// addresses is kept.
	slices.SortFunc(nodes, func(a, b registry.Node) int {
		return cmp.Or(strings.Compare(a.Addr, b.Addr), cmp.Compare(b.Weight, a.Weight))
	})
	return registry.Dedup(nodes), nil
}

func (r *Registry) lookupHost(ctx context.Context) ([]registry.Node, error) {
	ips, err := r.cfg.resolver.LookupNetIP(ctx, "ip", r.name)
	if err != nil {
		return nil, err
	}
	if len(ips) == 0 {
		return nil, ErrNotFound
	}
	nodes := make([]registry.Node, 0, len(ips))
	for _, ip := range ips {
		nodes = append(nodes, registry.Node{Addr: netip.AddrPortFrom(ip.Unmap(), r.port).String(), Weight: 1})
	}
	return nodes, nil
}

func (r *Registry) lookupSRV(ctx context.Context) ([]registry.Node, error) {
	_, srvs, err := r.cfg.resolver.LookupSRV(ctx, "", "", r.name)
	if len(srvs) == 0 {
		// With some records, err only says that records with invalid
		// targets were dropped, as net.Resolver documents.
		return nil, cmp.Or(err, ErrNotFound)
	}
	var best *net.SRV
	for _, s := range srvs {
		if s.Target != "." && (best == nil || s.Priority < best.Priority) {
			best = s
		}
	}
	nodes := []registry.Node{}
	if best == nil {
		return nodes, nil // only ".": decidedly not available
	}
	for _, s := range srvs {
		if s.Target == "." || s.Priority != best.Priority {
			continue
		}
		addr := net.JoinHostPort(strings.TrimSuffix(s.Target, "."), strconv.Itoa(int(s.Port)))
		nodes = append(nodes, registry.Node{Addr: addr, Weight: max(int(s.Weight), 1)})
	}
	return nodes, nil
}

// validName reports whether s looks like a DNS name. It is only a guard
// against obvious mistakes such as a URL or a port; the resolver has the
// last word.
func validName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, c := range label {
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}
