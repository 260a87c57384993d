package cluster

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// targetKey is the key of the target bucket that holds the deployment's shard count.
const targetKey = "shards"

// AgreeShardCount returns the deployment's shard count: the one in the target bucket when a process
// wrote it already, else want, written there for the others (the first writer wins a race). Processes
// that start on different answers of Discord's /gateway/bot (its recommendation moved between them) so
// run the same count.
func AgreeShardCount(ctx context.Context, c *Conn, want int) (int, error) {
	if want < 1 {
		return 0, fmt.Errorf("cluster: shard count %d: at least 1", want)
	}
	kv := c.KV(BucketTarget)
	for attempt := 0; attempt < 5; attempt++ {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		e, err := kv.Get(rctx, targetKey)
		if err == nil {
			cancel()
			n, perr := strconv.Atoi(string(e.Value()))
			if perr != nil || n < 1 {
				return 0, fmt.Errorf("cluster: %s holds %q as the shard count", c.BucketName(BucketTarget), e.Value())
			}
			return n, nil
		}
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			cancel()
			return 0, fmt.Errorf("cluster: reading the shard count: %w", err)
		}
		_, err = kv.Create(rctx, targetKey, []byte(strconv.Itoa(want)))
		cancel()
		if err == nil {
			return want, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return 0, fmt.Errorf("cluster: writing the shard count: %w", err)
		}
	}
	return 0, errors.New("cluster: the shard count kept changing while it was read")
}
