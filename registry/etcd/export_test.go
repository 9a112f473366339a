package etcd

// WithListHook makes the Watcher call f after each successful list, with the
// list's revision, before it starts watching.
func WithListHook(f func(rev int64)) Option {
	return func(c *config) { c.listHook = f }
}
