package etcd

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/lbrpc/lbrpc/registry"
)

// DefaultPrefix is the key prefix under which services live unless
// WithPrefix says otherwise.
const DefaultPrefix = "/lbrpc/services"

// ErrUnreachable is the error Watcher.Next returns when the etcd client has no
// reachable endpoint. Next returns it with a nil set.
var ErrUnreachable = errors.New("lbrpc/registry/etcd: etcd unreachable")

// BadValueError reports a key under the service prefix whose value is not a
// valid node. The Watcher skips such keys and keeps the good nodes.
type BadValueError struct {
	// Key is the full etcd key.
	Key string
	// Err says what is wrong with the value.
	Err error
}

// Error names the key and says what is wrong with its value.
func (e *BadValueError) Error() string {
	return fmt.Sprintf("lbrpc/registry/etcd: bad value at key %q: %v", e.Key, e.Err)
}

// Unwrap returns e.Err.
func (e *BadValueError) Unwrap() error { return e.Err }

// Option configures New and Register.
type Option func(*config)

// WithPrefix sets the key prefix under which services live; the default is
// DefaultPrefix. A node's key is prefix + "/" + service + "/" + addr. Trailing
// slashes are ignored. A registry and the servers that register with it must
// use the same prefix. An empty prefix makes New and Register fail.
func WithPrefix(prefix string) Option {
	return func(c *config) { c.prefix = prefix }
}

// WithBackoff sets how long to wait between retries after a failure: the
// first wait is about base, each further one doubles up to max, each
// randomized by up to half. The defaults are 250ms and 30s. The Watcher
// retries at once when the connection to etcd comes back, whatever the wait.
// New and Register fail unless 0 < base <= max.
func WithBackoff(base, max time.Duration) Option {
	return func(c *config) { c.backoffBase, c.backoffMax = base, max }
}

type config struct {
	prefix      string
	backoffBase time.Duration
	backoffMax  time.Duration

	// listHook, if set, is called after each successful list with its
	// revision, before the watch starts. Tests use it.
	listHook func(rev int64)
}

func defaultConfig() config {
	return config{
		prefix:      DefaultPrefix,
		backoffBase: 250 * time.Millisecond,
		backoffMax:  30 * time.Second,
	}
}

func newConfig(opts []Option) (config, error) {
	c := defaultConfig()
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	if c.prefix == "" {
		return c, errors.New("lbrpc/registry/etcd: empty prefix")
	}
	c.prefix = strings.TrimRight(c.prefix, "/")
	if c.backoffBase <= 0 || c.backoffMax < c.backoffBase {
		return c, fmt.Errorf("lbrpc/registry/etcd: bad backoff %v..%v", c.backoffBase, c.backoffMax)
	}
	return c, nil
}

// servicePrefix returns the prefix of all keys of service, with its trailing
// slash, so that service "a" does not see service "ab".
func (c *config) servicePrefix(service string) string {
	return c.prefix + "/" + service + "/"
}

func checkService(service string) error {
	switch {
	case service == "":
		return errors.New("lbrpc/registry/etcd: empty service name")
	case strings.Contains(service, "/"):
		return fmt.Errorf("lbrpc/registry/etcd: service name %q contains '/'", service)
	}
	return nil
}

// value is the JSON form of a node in etcd.
type value struct {
	Addr   string            `json:"addr"`
	Weight *int              `json:"weight,omitempty"`
	Meta   map[string]string `json:"meta,omitempty"`
}

func encodeNode(n registry.Node) (string, error) {
	w := n.Weight
	b, err := json.Marshal(value{Addr: n.Addr, Weight: &w, Meta: n.Meta})
	return string(b), err
}

// decodeNode parses the value stored at a key, which must be a JSON object.
// keyAddr, the part of the key after the service prefix, is the address when
// the value has none.
func decodeNode(keyAddr string, data []byte) (registry.Node, error) {
	var v *value // stays nil for null, which Unmarshal takes for a struct
	if err := json.Unmarshal(data, &v); err != nil {
		return registry.Node{}, err
	}
	if v == nil {
		return registry.Node{}, errors.New("null, not a JSON object")
	}
	n := registry.Node{Addr: strings.TrimSpace(v.Addr), Weight: 1, Meta: v.Meta}
	if n.Addr == "" {
		n.Addr = keyAddr
	}
	if n.Addr == "" {
		return registry.Node{}, errors.New("no address")
	}
	if v.Weight != nil {
		if *v.Weight < 0 {
			return registry.Node{}, fmt.Errorf("negative weight %d", *v.Weight)
		}
		n.Weight = *v.Weight
	}
	return n, nil
}

// backoff computes retry waits. The zero value is unusable; use newBackoff.
type backoff struct {
	base, max, cur time.Duration
}

func newBackoff(c config) backoff { return backoff{base: c.backoffBase, max: c.backoffMax} }

func (b *backoff) reset() { b.cur = 0 }

// next returns the next wait, in [cur/2, cur].
func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.base
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	half := b.cur / 2
	return half + rand.N(b.cur-half+1)
}
