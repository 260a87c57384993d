package identify

import (
	"context"
	"time"
)

// Noop is a Limiter that grants every turn at once: for an embedder that paces identifies itself, or
// that runs against a simulator without limits. Against Discord, shards that identify faster than the
// bot's limits allow are closed with 4009 or spend the daily budget.
type Noop struct{}

var _ Limiter = Noop{}

// Acquire implements Limiter: the turn is granted now, and its Release does nothing.
func (Noop) Acquire(ctx context.Context, _ int) (Turn, error) {
	if err := ctx.Err(); err != nil {
		return Turn{}, err
	}
	return Turn{NotBefore: time.Now(), Release: func(bool) {}}, nil
}

// Sent implements Limiter; there is nothing to record.
func (Noop) Sent(int, time.Time) {}
