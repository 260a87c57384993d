package queue

import (
	"bytes"
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// benchPayload is the size of a typical MESSAGE_CREATE dispatch.
var benchPayload = append([]byte(`{"op":0,"t":"MESSAGE_CREATE","s":1,"d":`), append(bytes.Repeat([]byte("x"), 600), '}')...)

// BenchmarkQueueAppend is one shard appending one event per call: every call waits for its own commit.
func BenchmarkQueueAppend(b *testing.B) {
	e := newEnv(b, Options{})
	ctx := context.Background()
	b.SetBytes(int64(len(benchPayload)))
	b.ResetTimer()
	for b.Loop() {
		if err := e.q.Append(ctx, []Record{{Shard: 0, Payload: benchPayload}}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkQueueAppendParallel is many shards appending at once, one event per call, with their
// session's sequence in also: group commit writes them together.
func BenchmarkQueueAppendParallel(b *testing.B) {
	e := newEnv(b, Options{})
	ctx := context.Background()
	var next atomic.Int64
	b.SetBytes(int64(len(benchPayload)))
	b.SetParallelism(128) // 256 shards on 2 cores
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		shard := int(next.Add(1))
		key := []byte("sessions/" + string(rune('a'+shard%26)))
		for pb.Next() {
			if err := e.q.Append(ctx, []Record{{Shard: shard, Payload: benchPayload}}, KV{Key: key, Value: []byte("1")}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkQueueReadAck reads and acknowledges a backlog in batches of 100 over 16 shards (ns/op is per
// event), deletions included.
func BenchmarkQueueReadAck(b *testing.B) {
	e := newEnv(b, Options{})
	c, _ := e.q.Consumer("bot")
	ctx := context.Background()
	const shards = 16
	batch := make([]Record, 0, 256)
	for i := range b.N {
		batch = append(batch, Record{Shard: i % shards, Payload: benchPayload})
		if len(batch) == cap(batch) || i == b.N-1 {
			if err := e.q.Append(ctx, batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	b.SetBytes(int64(len(benchPayload)))
	b.ResetTimer()
	read := 0
	for read < b.N {
		for s := range shards {
			recs, err := c.Read(s, 100)
			if err != nil {
				b.Fatal(err)
			}
			if len(recs) > 0 {
				c.Ack(s, recs[len(recs)-1].Seq)
				read += len(recs)
			}
		}
	}
	if err := e.q.Flush(ctx); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkQueueDeleteAcked deletes a backlog of 100,000 events the cache does not hold once a
// consumer has acknowledged it (ns/event; ns/op is per backlog). The backlog is fixed: per event
// deletion is cheap next to appending, and a backlog of b.N events made the untimed setup grow without
// end.
func BenchmarkQueueDeleteAcked(b *testing.B) {
	const shards, events = 4, 100_000
	ctx := context.Background()
	b.ReportAllocs()
	for range b.N {
		b.StopTimer()
		e := newEnv(b, Options{CacheBytes: 1 << 10})
		c, _ := e.q.Consumer("bot")
		batch := make([]Record, 0, 256)
		var last [shards]uint64
		for i := range events {
			batch = append(batch, Record{Shard: i % shards, Payload: benchPayload})
			if len(batch) == cap(batch) || i == events-1 {
				if err := e.q.Append(ctx, batch); err != nil {
					b.Fatal(err)
				}
				for _, r := range batch {
					last[r.Shard] = r.Seq
				}
				batch = batch[:0]
			}
		}
		for s := range shards {
			c.Ack(s, last[s])
		}
		b.StartTimer()
		if err := e.q.Flush(ctx); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if d := e.q.Depth(); d != 0 {
			b.Fatalf("%d events stored after every one was acknowledged, want 0", d)
		}
		e.close()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*events), "ns/event")
}

// BenchmarkQueueReadBacklogOne reads and acknowledges a backlog over 4 shards one event at a time, as
// delivery with events.batch_max 1 does once it is behind the cache (ns/op is per event).
func BenchmarkQueueReadBacklogOne(b *testing.B) {
	e := newEnv(b, Options{FlushInterval: time.Hour})
	c, _ := e.q.Consumer("bot")
	ctx := context.Background()
	const shards = 4
	batch := make([]Record, 0, 256)
	for i := range b.N {
		batch = append(batch, Record{Shard: i % shards, Payload: benchPayload})
		if len(batch) == cap(batch) || i == b.N-1 {
			if err := e.q.Append(ctx, batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for read := 0; read < b.N; {
		for s := range shards {
			recs, err := c.Read(s, 1)
			if err != nil {
				b.Fatal(err)
			}
			if len(recs) > 0 {
				c.Ack(s, recs[0].Seq)
				read++
			}
		}
	}
}
