package cluster

import (
	"context"
	"testing"
	"time"
)

// connect opens a Conn as one dd process would, closed when the test ends.
func connect(t *testing.T, url, instance string, replicas int) *Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Connect(ctx, Options{URL: url, Instance: instance, Replicas: replicas, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("connect %s to %s: %v", instance, url, err)
	}
	t.Cleanup(c.Close)
	return c
}

func leaser(t *testing.T, c *Conn, ttl time.Duration) *Leaser {
	t.Helper()
	l, err := NewLeaser(c, BucketLeases, LeaseConfig{TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// waitDone waits for a lease to end and returns when it noticed (safe in a goroutine).
func waitDone(t *testing.T, le *Lease, within time.Duration) time.Time {
	t.Helper()
	select {
	case <-le.Done():
		return time.Now()
	case <-time.After(within):
		t.Errorf("lease %s still held after %s; expected it to end", le.Key(), within)
		return time.Time{}
	}
}
