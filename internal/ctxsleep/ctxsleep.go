// Package ctxsleep waits for a duration or for a context's end, whichever comes first: the one wait
// every retry loop and limiter of dd needs.
package ctxsleep

import (
	"context"
	"time"
)

// Sleep waits for d, or until ctx ends, and returns ctx's error in that case (nil after a full wait). A d
// of zero or less returns at once.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
