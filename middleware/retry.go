package middleware

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/rpc"
	"slices"
	"syscall"
	"time"

	"github.com/lbrpc/lbrpc/picker"
)

// RetryPolicy configures Retry. Zero fields take the documented defaults.
type RetryPolicy struct {
	// Max is the number of retries after the first attempt.
	Max int
	// BaseBackoff and MaxBackoff bound the sleep before retry n, drawn at
	// random from [0, min(MaxBackoff, BaseBackoff*2^n)) ("full jitter").
	// Defaults 10ms and 1s. A sleep that would pass the ctx deadline is not
	// taken: the call ends with the last error instead.
	BaseBackoff, MaxBackoff time.Duration
	// NonIdempotent lists "Service.Method"s that must not run twice: they
	// are retried only when the request surely never left the client.
	NonIdempotent []string
	// RetryIf, if set, replaces the default choice of which errors to retry
	// (see Retryable). Retry still never retries once ctx has ended, never
	// re-sends a NonIdempotent method that may have reached a server, and
	// never exceeds Max or the budget.
	RetryIf func(call *Call, err error) bool
	// Budget caps retries across calls; nil means NewRetryBudget(0.2, 10).
	// Share one budget between retry middleware to cap them together.
	// Retry looks at the budget before the backoff sleep and takes a retry
	// from it only once the sleep is over and the retry is made, so a call
	// whose ctx ends during the sleep costs the budget nothing.
	Budget *RetryBudget
}

// Retry returns middleware that retries failed attempts on other nodes.
//
// By default an error is retried when Retryable says so: the request never
// left the client (dial failure, node down or removed, an open per-node
// breaker), or the connection broke while the call was in flight. In the
// second case the server may have run the method, so methods listed in
// NonIdempotent are not retried then. An rpc.ServerError (the method ran and
// failed) is never retried by default. Each retry goes through the picker
// again, which prefers a node the call has not tried.
//
// When retries run out, Retry returns the errors of the attempts joined
// (errors.Join), or the one error of a call that had no retry. If ctx ends
// or the client closes (Call.Closing) during a backoff, the call ends at
// once and the error joins ctx's error or ErrClosed to the attempts'.
func Retry(p RetryPolicy) Middleware {
	if p.BaseBackoff <= 0 {
		p.BaseBackoff = 10 * time.Millisecond
	}
	if p.MaxBackoff <= 0 {
		p.MaxBackoff = time.Second
	}
	p.MaxBackoff = max(p.MaxBackoff, p.BaseBackoff)
	if p.Budget == nil {
		p.Budget = NewRetryBudget(0.2, 10)
	}
	p.NonIdempotent = slices.Clone(p.NonIdempotent)
	return func(next Invoker) Invoker {
		return func(ctx context.Context, call *Call) error {
			p.Budget.deposit()
			err := next(ctx, call)
			if err == nil || p.Max <= 0 {
				return err
			}
			var errs []error
			var cut error // why a backoff was cut short: the ctx's error, or ErrClosed
			// This link counts its own retries: call.Attempt numbers the
			// attempts of the whole call, which another Retry around this
			// one, or a Call made by hand, may have moved already.
			for n := 0; n < p.Max && p.retryable(ctx, call, err); n++ {
				d := p.backoff(n)
				if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= d {
					break // no time for another attempt
				}
				// Withdraw only after the sleep, when the retry is surely
				// made; the check before it spares a sleep with no retry
				// after it.
				if !p.Budget.allows(time.Now()) {
					break // err is the last error: joined once, below
				}
				if cut = sleep(ctx, call.Closing, d); cut != nil || !p.Budget.withdraw(time.Now()) {
					break
				}
				errs = append(errs, err)
				if call.Addr != "" {
					call.Tried = append(call.Tried, call.Addr)
				}
				call.Attempt++
				call.Addr = ""
				if err = next(ctx, call); err == nil {
					return nil
				}
			}
			if cut != nil {
				// The call ends for that reason, not for the last attempt's
				// error, which is kept beside it.
				return errors.Join(append(errs, err, cut)...)
			}
			if errs == nil {
				return err
			}
			return errors.Join(append(errs, err)...)
		}
	}
}

// retryable reports whether err may be retried, budget aside.
func (p *RetryPolicy) retryable(ctx context.Context, call *Call, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	var ok bool
	if p.RetryIf != nil {
		ok = p.RetryIf(call, err)
	} else {
		ok = Retryable(err)
	}
	return ok && (Unsent(err) || !slices.Contains(p.NonIdempotent, call.ServiceMethod))
}

// backoff draws the sleep before retry n+1: full jitter over window(n).
func (p *RetryPolicy) backoff(n int) time.Duration {
	return rand.N(p.window(n))
}

// window returns min(MaxBackoff, BaseBackoff*2^n), saturating instead of
// overflowing. Retry has made both positive, so the window is too.
func (p *RetryPolicy) window(n int) time.Duration {
	d := p.BaseBackoff
	for i := 0; i < n && d < p.MaxBackoff; i++ {
		if d > p.MaxBackoff-d {
			return p.MaxBackoff
		}
		d *= 2
	}
	return min(d, p.MaxBackoff)
}

// sleep waits d. It returns ctx's error if ctx ends first, ErrClosed if
// closing fires first, nil once d has passed.
func sleep(ctx context.Context, closing <-chan struct{}, d time.Duration) error {
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		case <-closing:
			return ErrClosed
		}
	}
	// Either may have happened just as the timer fired, or during no wait.
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case <-closing:
		return ErrClosed
	default:
		return nil
	}
}

// Retryable is the default retry rule. It reports true when the request
// surely never reached a server (see Unsent), or when the connection broke
// under it (rpc.ErrShutdown, EOF, a network error). It reports false for an
// answer from the server (rpc.ServerError), an ended context, a codec error
// (a bad argument or reply type fails on every node alike), and failures of
// the whole client (ErrNoNodes, ErrClosed, ErrCircuitOpen, ErrRateLimited).
func Retryable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	if _, ok := errors.AsType[rpc.ServerError](err); ok {
		return false
	}
	if Unsent(err) {
		return true
	}
	// Before the network errors: the client wraps ErrNoNodes with the
	// registry's error, often a net.Error, which says nothing of a node.
	if errors.Is(err, picker.ErrNoNodes) || errors.Is(err, ErrClosed) || errors.Is(err, ErrCircuitOpen) || errors.Is(err, ErrRateLimited) {
		return false
	}
	if errors.Is(err, rpc.ErrShutdown) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return true
	}
	_, netErr := errors.AsType[net.Error](err)
	return netErr
}

// Unsent reports whether err says that the request surely never reached a
// server. An error answers with a method Unsent() bool (transport.Error has
// one): true if the request surely never left the client, false if it may
// have reached a server. In a chain of wrapped errors the outermost one
// with such a method decides. A join of errors (errors.Join, as Retry
// returns) is unsent only if at least one of its parts says unsent and none
// says the request may have been sent; parts that say neither are ignored.
// So the join of a dial error and a broken connection is not unsent, in
// either order: one of its attempts may have run on the server.
func Unsent(err error) bool {
	unsent, ok := unsentOpinion(err)
	return ok && unsent
}

// unsentOpinion walks err's tree as Unsent describes. ok is false when no
// error in it says either way.
func unsentOpinion(err error) (unsent, ok bool) {
	for err != nil {
		switch e := err.(type) {
		case unsentError:
			return e.Unsent(), true
		case interface{ Unwrap() []error }:
			for _, part := range e.Unwrap() {
				u, has := unsentOpinion(part)
				if has && !u {
					return false, true // this part may have been sent
				}
				ok = ok || has
			}
			return ok, ok
		case interface{ Unwrap() error }:
			err = e.Unwrap()
		default:
			return false, false
		}
	}
	return false, false
}

// unsentError is the shape of transport failures: they know whether the
// request left the client.
type unsentError interface {
	error
	Unsent() bool
}
