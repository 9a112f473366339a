package middleware

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/time/rate"
)

// ErrRateLimited is returned when the client-wide rate limit refuses a call:
// at once in FailFast mode, or in Wait mode when the token would come only
// after the ctx deadline.
var ErrRateLimited = errors.New("lbrpc: rate limited")

// RateLimitMode says what a call does when no token is free.
type RateLimitMode int

const (
	// Wait blocks until a token is free or ctx ends. A wait that would
	// outlast the ctx deadline is not begun: the call fails at once with
	// ErrRateLimited.
	Wait RateLimitMode = iota
	// FailFast fails the call at once with ErrRateLimited.
	FailFast
)

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
			if err := l.Wait(ctx); err != nil {
				if ctx.Err() != nil {
					return fmt.Errorf("lbrpc: waiting for rate limit: %w", ctx.Err())
				}
				// Would outlast the deadline, or burst exceeded.
				return fmt.Errorf("%w: %w", ErrRateLimited, err)
			}
			return next(ctx, call)
		}
	}
}
