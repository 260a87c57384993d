package cache

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ddhq/dd/store"
)

// BenchmarkApplyGuildCreate applies GUILD_CREATEs of large guilds (10,000 members each, Discord-shaped as
// the simulator sends them) with the default fields, and reports members applied per second and the
// bytes each member takes: in the values written (member and user) and on disk once the store is flushed
// (SSTables and value log).
//
//	go test -run '^$' -bench ApplyGuildCreate -benchtime 20x ./cache/
func BenchmarkApplyGuildCreate(b *testing.B) {
	const members = 10000
	dir := b.TempDir()
	st := openStore(b, dir)
	c, err := Open(st, Options{})
	if err != nil {
		b.Fatal(err)
	}
	payloads := make([][]byte, b.N)
	for i := range payloads {
		// Guild ids far apart: no user is in two guilds.
		payloads[i] = payload("GUILD_CREATE", i, guildCreate(g1+uint64(i)<<32, members, nil))
	}
	b.SetBytes(int64(len(payloads[0])))
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		if err := c.Apply(payloads[i]); err != nil {
			b.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	total := float64(b.N * members)
	b.ReportMetric(total/elapsed.Seconds(), "members/s")

	var valueBytes int
	_ = st.Scan([]byte(guildPrefix), nil, func(k, v []byte) error {
		if len(k) == subKeyLen && k[guildKeyLen] == kindMember {
			valueBytes += len(k) + len(v)
		}
		return nil
	})
	_ = st.Scan([]byte(userPrefix), nil, func(k, v []byte) error { valueBytes += len(k) + len(v); return nil })
	b.ReportMetric(float64(valueBytes)/total, "kv-bytes/member")
	if err := st.Close(); err != nil { // flushes the memtables into SSTables
		b.Fatal(err)
	}
	b.ReportMetric(float64(dirBytes(b, dir, ".sst", ".vlog"))/total, "disk-bytes/member")
	st = openStore(b, dir) // for the cleanup's Close
	b.Cleanup(func() { st.Close() })
}

func dirBytes(t testing.TB, dir string, exts ...string) int64 {
	var n int64
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		for _, e := range exts {
			if strings.HasSuffix(p, e) {
				n += fi.Size()
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// BenchmarkCacheMember reads one member (its user joined in) from a cache of 50,000 members.
func BenchmarkCacheMember(b *testing.B) {
	c, _ := newCache(b, Options{})
	for i := range 5 {
		apply(b, c, "GUILD_CREATE", guildCreate(g1+uint64(i)<<32, 10000, nil))
	}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := uint64(0)
		for pb.Next() {
			i++
			if _, err := c.Member(g1, g1+(i%10000)*4096+1); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkApplyNotKept applies events the cache does not keep with the default options (MESSAGE_CREATE,
// TYPING_START, MESSAGE_REACTION_ADD: 80 % of the simulator's firehose), one Apply each as the in-process
// consumer does at one event per read. t-first is Discord's order, where the scan stops at t; d-first
// puts d before t, so the whole payload is scanned, as every payload was before the scan stopped at t.
func BenchmarkApplyNotKept(b *testing.B) {
	c, _ := newCache(b, Options{})
	d := `{"type":0,"tts":false,"timestamp":"2026-11-24T03:00:00.000000+00:00","pinned":false,"nonce":"evt-1","mentions":[],"mention_roles":[],"mention_everyone":false,"member":{"roles":[],"premium_since":null,"pending":false,"nick":null,"mute":false,"joined_at":"2026-01-01T00:00:00.000000+00:00","flags":0,"deaf":false,"communication_disabled_until":null,"avatar":null},"id":"1574627755297865729","flags":0,"embeds":[],"edited_timestamp":null,"content":"hello there, this is a message of typical length for a bot","components":[],"channel_id":"754679441002594320","author":{"username":"someone","public_flags":0,"id":"80351110224678912","global_name":"Someone","discriminator":"0","avatar":"a_d5efa99b3eeaa7dd43acca82f5692432"},"attachments":[],"guild_id":"754679441002594304"}`
	for _, order := range []struct{ name, payload string }{
		{"d-first", `{"d":` + d + `,"op":0,"s":1234,"t":"MESSAGE_CREATE"}`},
		{"t-first", `{"t":"MESSAGE_CREATE","s":1234,"op":0,"d":` + d + `}`},
	} {
		b.Run(order.name, func(b *testing.B) {
			p := []byte(order.payload)
			b.ReportAllocs()
			for range b.N {
				if err := c.Apply(p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// countingStore counts the reads of one key (Get) its transactions make.
type countingStore struct {
	*store.Store
	gets atomic.Int64
}

func (s *countingStore) Begin() store.Txn { return countingTxn{s.Store.Begin(), &s.gets} }

type countingTxn struct {
	store.Txn
	gets *atomic.Int64
}

func (t countingTxn) Get(k []byte) ([]byte, error) {
	t.gets.Add(1)
	return t.Txn.Get(k)
}

// BenchmarkApplyMemberAdd applies GUILD_MEMBER_ADDs (5 % of the simulator's firehose) in Discord's order,
// one Apply each, to a guild of 1,000 members, and reports the store reads each takes.
func BenchmarkApplyMemberAdd(b *testing.B) {
	st := &countingStore{Store: openStore(b, b.TempDir())}
	b.Cleanup(func() { st.Close() })
	c, err := Open(st, Options{})
	if err != nil {
		b.Fatal(err)
	}
	apply(b, c, "GUILD_CREATE", guildCreate(g1, 1000, nil))
	payloads := make([][]byte, 4096)
	for i := range payloads {
		m := member(g1 + uint64(2000+i)*4096 + 1)
		m["guild_id"] = id(g1)
		d, err := json.Marshal(m)
		if err != nil {
			b.Fatal(err)
		}
		payloads[i] = []byte(`{"t":"GUILD_MEMBER_ADD","s":1,"op":0,"d":` + string(d) + `}`)
	}
	b.ReportAllocs()
	gets0 := st.gets.Load()
	b.ResetTimer()
	for i := range b.N {
		if err := c.Apply(payloads[i%len(payloads)]); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(st.gets.Load()-gets0)/float64(b.N), "gets/op")
}
