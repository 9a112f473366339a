package middleware

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/time/rate"
)

// ErrRateLimited is returned when the client-wide rate limit refuses a call:
// at once in FailFast mode; in Wait mode when the token would come only
// after the ctx deadline, or never (a limiter whose burst is 0).
var ErrRateLimited = errors.New("lbrpc: rate limited")

// RateLimitMode says what a call does when no token is free.
type RateLimitMode int

const (
	// Wait blocks until a token is free, ctx ends, or the client closes
	// (the call then fails with ErrClosed). A wait that would outlast the
	// ctx deadline is not begun: the call fails at once with
	// ErrRateLimited.
	Wait RateLimitMode = iota
	// FailFast fails the call at once with ErrRateLimited.
	FailFast
)

// wait takes a token of l, waiting for it until ctx ends or closing
// fires, as rate.Limiter.Wait does with ctx alone.
func wait(ctx context.Context, l *rate.Limiter, closing <-chan struct{}) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("lbrpc: waiting for rate limit: %w", err)
	}
	now := time.Now()
	r := l.ReserveN(now, 1)
	if !r.OK() {
		return fmt.Errorf("%w: burst of %d exceeded", ErrRateLimited, l.Burst())
	}
	d := r.DelayFrom(now)
	if d == 0 {
		return nil
	}
	if dl, ok := ctx.Deadline(); ok && dl.Sub(now) < d {
		r.Cancel()
		return fmt.Errorf("%w: the token would come after the deadline", ErrRateLimited)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		r.Cancel()
		return fmt.Errorf("lbrpc: waiting for rate limit: %w", ctx.Err())
	case <-closing:
		r.Cancel()
		return ErrClosed
	}
}

// RateLimit returns middleware that takes one token of l per call (not per
// attempt: retries are bounded by the retry budget instead).
func RateLimit(l *rate.Limiter, mode RateLimitMode) Middleware {
	return func(next Invoker) Invoker {
		return func(ctx context.Context, call *Call) error {
			if mode == FailFast {
				if err := ctx.Err(); err != nil {
					return fmt.Errorf("lbrpc: waiting for rate limit: %w", err)
				}
				if !l.Allow() {
					return ErrRateLimited
				}
				return next(ctx, call)
			}
			if err := wait(ctx, l, call.Closing); err != nil {
				return err
			}
			return next(ctx, call)
		}
	}
}
