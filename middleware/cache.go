package middleware

import (
	"sync"
	"sync/atomic"
)

// maxCached bounds each cache: past it, as nodes or methods come and go
// over a long life, values are made per use instead, so that a cache cannot
// grow without bound.
const maxCached = 4096

// cache holds what the telemetry middleware would otherwise make per call
// (attribute sets, options, names), which allocates; the keys are few
// (methods × nodes × error types). It is safe for concurrent use.
type cache[K comparable, V any] struct {
	m sync.Map // K -> V
	n atomic.Int64
}

func (c *cache[K, V]) load(k K) (V, bool) {
	v, ok := c.m.Load(k)
	if !ok {
		var zero V
		return zero, false
	}
	return v.(V), true
}

// store keeps v for k unless the cache is full, and returns the value to
// use: the one another goroutine stored first, if any.
func (c *cache[K, V]) store(k K, v V) V {
	if c.n.Load() >= maxCached {
		return v
	}
	if old, loaded := c.m.LoadOrStore(k, v); loaded {
		return old.(V)
	}
	c.n.Add(1)
	return v
}
