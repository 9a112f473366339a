package middleware

import (
	"context"
	"errors"
	"fmt"
	"net/rpc"

	"github.com/sony/gobreaker/v2"

	"github.com/lbrpc/lbrpc/transport"
)

// ErrCircuitOpen is returned while the circuit breaker rejects calls (open,
// or half-open with its probes already in flight). It wraps gobreaker's
// ErrOpenState or ErrTooManyRequests.
var ErrCircuitOpen = errors.New("lbrpc: circuit breaker open")

// Made once: refusals come in floods, exactly when the client is overloaded.
var (
	errOpen    = fmt.Errorf("%w: %w", ErrCircuitOpen, gobreaker.ErrOpenState)
	errProbing = fmt.Errorf("%w: %w", ErrCircuitOpen, gobreaker.ErrTooManyRequests)
)

// CircuitBreaker returns middleware that runs calls through a gobreaker
// circuit breaker made from st. Nil fields of st take gobreaker's defaults
// (open after more than 5 consecutive failures, 60s open, one half-open
// probe), except:
//   - IsSuccessful nil: an answer from the server, even an rpc.ServerError,
//     is a success; only failures to reach a node or to get an answer in
//     time count as failures. See BreakerFailure.
//   - IsExcluded nil: calls cancelled by the caller (context.Canceled),
//     calls rejected by a rate limiter, calls whose args could not be
//     encoded (transport.ErrBadArgs, the caller's error) and calls ended by
//     the client's Close count neither way.
//
// Use ConsecutiveFailures or FailureRatio for st.ReadyToTrip, and
// st.OnStateChange to observe transitions.
func CircuitBreaker(st gobreaker.Settings) Middleware {
	if st.Name == "" {
		st.Name = "lbrpc"
	}
	if st.IsSuccessful == nil {
		st.IsSuccessful = func(err error) bool { return !BreakerFailure(err) }
	}
	if st.IsExcluded == nil {
		st.IsExcluded = func(err error) bool {
			return errors.Is(err, context.Canceled) || errors.Is(err, ErrRateLimited) ||
				errors.Is(err, transport.ErrBadArgs) || errors.Is(err, ErrClosed)
		}
	}
	cb := gobreaker.NewCircuitBreaker[struct{}](st)
	return func(next Invoker) Invoker {
		return func(ctx context.Context, call *Call) error {
			_, err := cb.Execute(func() (struct{}, error) {
				return struct{}{}, next(ctx, call)
			})
			switch err {
			case gobreaker.ErrOpenState:
				return errOpen
			case gobreaker.ErrTooManyRequests:
				return errProbing
			}
			return err
		}
	}
}

// BreakerFailure is the default failure rule of CircuitBreaker: true for
// transport failures and timeouts, false for success and for answers from
// the server (rpc.ServerError, and transport.ErrReplyMismatch: an answer
// the caller's reply could not hold).
func BreakerFailure(err error) bool {
	if err == nil {
		return false
	}
	_, answered := errors.AsType[rpc.ServerError](err)
	return !answered && !errors.Is(err, transport.ErrReplyMismatch)
}

// ConsecutiveFailures returns a ReadyToTrip that opens the breaker after n
// failures in a row.
func ConsecutiveFailures(n uint32) func(gobreaker.Counts) bool {
	return func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= n }
}

// FailureRatio returns a ReadyToTrip that opens the breaker when at least
// minRequests calls have ended and the share of failures among them reaches
// ratio. Excluded calls (see CircuitBreaker) and calls still in flight
// (which gobreaker counts in Counts.Requests) are not counted.
func FailureRatio(ratio float64, minRequests uint32) func(gobreaker.Counts) bool {
	return func(c gobreaker.Counts) bool {
		n := uint64(c.TotalSuccesses) + uint64(c.TotalFailures)
		return n >= uint64(minRequests) && float64(c.TotalFailures) >= ratio*float64(n)
	}
}
