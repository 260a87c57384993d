package queue

import (
	"bytes"
	"context"
	"encoding/binary"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/ddhq/dd/store"
)

// A commit stores a shard's records in blocks of at most blockMaxRecords. Read from the store (no
// cache), a consumer gets every event once and in order across blocks' bounds, whatever it asks for
// at a time; Pending answers inside a block; a block is deleted once every consumer acknowledged its
// last event, not before; and the count of stored events follows whole blocks.
func TestBlocksAreReadAcknowledgedAndDeletedAcrossTheirBounds(t *testing.T) {
	e := newEnv(t, Options{CacheBytes: 1, FlushInterval: time.Hour})
	c := e.consumer("bot")
	recs := make([]Record, 600) // blocks of 256, 256 and 88
	for i := range recs {
		recs[i] = rec(0, i)
	}
	all := append(recs, rec(1, 0))
	e.append(all)
	recs = all[:600]
	seqs := e.storedSeqs()
	if len(seqs) != 601 {
		t.Fatalf("stored %d events, want 601", len(seqs))
	}
	if p, err := c.Pending(0, recs[300].Seq); err != nil || !p {
		t.Fatalf("Pending inside the second block: %v, %v; want true", p, err)
	}
	var got []Record
	for len(got) < 300 {
		rs, err := c.Read(0, 7)
		if err != nil || len(rs) == 0 {
			t.Fatalf("Read after %d: %d records, %v", len(got), len(rs), err)
		}
		rs = rs[:min(len(rs), 300-len(got))]
		got = append(got, rs...)
		c.Ack(0, rs[len(rs)-1].Seq)
	}
	for i, r := range got {
		if r.Seq != recs[i].Seq || !bytes.Equal(r.Payload, recs[i].Payload) || r.Shard != 0 || r.Time.IsZero() {
			t.Fatalf("record %d: seq %d shard %d %q, want seq %d %q", i, r.Seq, r.Shard, r.Payload, recs[i].Seq, recs[i].Payload)
		}
	}
	if p, err := c.Pending(0, recs[299].Seq); err != nil || p {
		t.Fatalf("Pending up to the last acknowledged: %v, %v; want false", p, err)
	}
	if p, err := c.Pending(0, recs[300].Seq); err != nil || !p {
		t.Fatalf("Pending up to the next one, inside a block: %v, %v; want true", p, err)
	}
	if d := c.ShardDepths()[0]; d != 300 {
		t.Fatalf("consumer's depth of shard 0 = %d, want 300", d)
	}
	e.flush()
	// The first block (256) is gone; the second holds acknowledged events 257..300 and stays.
	if n := len(e.storedSeqs()); n != 601-256 {
		t.Fatalf("after acknowledging 300 of shard 0, %d events stored, want %d (whole blocks)", n, 601-256)
	}
	if d := e.q.Depth(); d != 601-256 {
		t.Fatalf("Depth = %d, want %d", d, 601-256)
	}
	e.reopen()
	c = e.consumer("bot")
	rest := readAll(t, c, 0)
	if len(rest) != 300 || rest[0].Seq != recs[300].Seq || rest[299].Seq != recs[599].Seq {
		t.Fatalf("after reopening, read %d events from %d; want the 300 not acknowledged, from %d", len(rest), rest[0].Seq, recs[300].Seq)
	}
	readAll(t, c, 1)
	e.flush()
	if s := e.storedSeqs(); len(s) != 0 || e.q.Depth() != 0 {
		t.Fatalf("after everything was acknowledged, %d stored, Depth %d", len(s), e.q.Depth())
	}
}

// A store written by an older dd holds one record per key (version 1). The queue reads them in order,
// before and together with the blocks appended after, and deletes them once acknowledged.
func TestRecordsOfAnOlderVersionAreReadAndDeleted(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(store.Options{Path: dir})
	if err != nil {
		t.Fatal(err)
	}
	old := make([]Record, 5)
	err = st.Update(func(w store.Writer) error {
		for i := range old {
			old[i] = Record{Shard: 0, Seq: uint64(i + 1), Time: time.Unix(1700000000, 0), Payload: payload(0, i)}
			if err := w.Set(eventKey(0, old[i].Seq), encodeRecord(&old[i])); err != nil {
				return err
			}
		}
		if err := w.Set(shardMetaKey(0), shardMeta{head: 1, tail: 5, count: 5}.encode()); err != nil {
			return err
		}
		return w.Set([]byte(seqKey), encodeUint64(5))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, dir: dir, o: Options{CacheBytes: 1, FlushInterval: time.Hour}}
	e.open()
	t.Cleanup(e.close)
	c := e.consumer("bot")
	first, err := c.Read(0, 2)
	if err != nil || len(first) != 2 || first[0].Seq != 1 || !first[0].Time.Equal(old[0].Time) || !bytes.Equal(first[1].Payload, old[1].Payload) {
		t.Fatalf("first read of the old records: %v, %v", first, err)
	}
	c.Ack(0, first[1].Seq)
	newer := []Record{rec(0, 5), rec(0, 6)}
	if err := e.q.Append(context.Background(), newer); err != nil {
		t.Fatal(err)
	}
	e.flush()
	if n := len(e.storedSeqs()); n != 5 {
		t.Fatalf("%d events stored, want the 3 old ones not acknowledged and 2 new", n)
	}
	got := readAll(t, c, 0)
	if len(got) != 5 || got[0].Seq != 3 || got[2].Seq != 5 || got[3].Seq != newer[0].Seq || got[4].Seq != newer[1].Seq {
		t.Fatalf("read %d events after the old ones acknowledged: %v", len(got), got)
	}
	e.flush()
	if s := e.storedSeqs(); len(s) != 0 {
		t.Fatalf("after everything was acknowledged, stored %v", s)
	}
}

// Blocks are stored compressed when that saves space (JSON events of one shard), raw otherwise, and
// read back the same either way.
func TestBlocksAreCompressedWhenThatSavesSpace(t *testing.T) {
	e := newEnv(t, Options{CacheBytes: 1})
	c := e.consumer("bot")
	rnd := rand.New(rand.NewPCG(1, 2))
	noise := func() []byte {
		b := make([]byte, 300)
		for i := range b {
			b[i] = byte(rnd.Uint32())
		}
		return b
	}
	json, random := make([]Record, 50), make([]Record, 50)
	for i := range json {
		json[i] = rec(0, i)
		random[i] = Record{Shard: 1, Payload: noise()}
	}
	e.append(json)
	e.append(random)
	versions := map[int]byte{}
	err := e.st.Scan([]byte(eventPrefix), nil, func(k, v []byte) error {
		versions[int(binary.BigEndian.Uint32(k[len(eventPrefix):]))] = v[0]
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if versions[0] != recordV2S2 || versions[1] != recordV2 {
		t.Fatalf("stored versions %v: want JSON events compressed (%d), random bytes raw (%d)", versions, recordV2S2, recordV2)
	}
	for shard, want := range [][]Record{json, random} {
		got := readAll(t, c, shard)
		if len(got) != len(want) {
			t.Fatalf("shard %d: read %d events, want %d", shard, len(got), len(want))
		}
		for i := range got {
			if got[i].Seq != want[i].Seq || !bytes.Equal(got[i].Payload, want[i].Payload) {
				t.Fatalf("shard %d event %d: %d %q, want %d %q", shard, i, got[i].Seq, got[i].Payload, want[i].Seq, want[i].Payload)
			}
		}
	}
}

// Random appends of one to 300 records (so blocks of every size, several per commit), two consumers
// reading random amounts and acknowledging random prefixes of what they read, flushes and reopens, with
// and without the in-memory cache: every Read, Pending and depth agrees with a model of the log, and
// once both consumers acknowledged everything nothing is stored.
func TestBlocksAgreeWithAModelUnderRandomOperations(t *testing.T) {
	for _, cache := range []int{1, 0} {
		for seed := uint64(1); seed <= 3; seed++ {
			rnd := rand.New(rand.NewPCG(seed, uint64(cache)))
			e := newEnv(t, Options{CacheBytes: cache, FlushInterval: time.Hour})
			const shards = 3
			names := []string{"bot", "cache"}
			log := map[int][]uint64{} // the model: each shard's sequences
			pos := map[string]map[int]uint64{"bot": {}, "cache": {}}
			after := func(name string, shard int) []uint64 {
				var out []uint64
				for _, s := range log[shard] {
					if s > pos[name][shard] {
						out = append(out, s)
					}
				}
				return out
			}
			cons := map[string]*Consumer{}
			register := func() {
				for _, n := range names {
					cons[n] = e.consumer(n)
				}
			}
			register()
			for step := 0; step < 300; step++ {
				switch op := rnd.IntN(10); {
				case op < 4:
					recs := make([]Record, 1+rnd.IntN(300))
					for i := range recs {
						recs[i] = rec(rnd.IntN(shards), step*1000+i)
					}
					e.append(recs)
					for _, r := range recs {
						log[r.Shard] = append(log[r.Shard], r.Seq)
					}
				case op < 8:
					name, shard, max := names[rnd.IntN(2)], rnd.IntN(shards), 1+rnd.IntN(100)
					got, err := cons[name].Read(shard, max)
					if err != nil {
						t.Fatal(err)
					}
					want := after(name, shard)
					want = want[:min(len(want), max)]
					if len(got) != len(want) {
						t.Fatalf("seed %d cache %d step %d: %s read %d of shard %d, want %d", seed, cache, step, name, len(got), shard, len(want))
					}
					for i := range got {
						if got[i].Seq != want[i] {
							t.Fatalf("seed %d step %d: %s read seq %d at %d, want %d", seed, step, name, got[i].Seq, i, want[i])
						}
					}
					if len(got) > 0 {
						k := rnd.IntN(len(got))
						cons[name].Ack(shard, got[k].Seq)
						pos[name][shard] = got[k].Seq
					}
				case op < 9:
					name, shard := names[rnd.IntN(2)], rnd.IntN(shards)
					rest := after(name, shard)
					if len(rest) > 0 {
						probe := rest[rnd.IntN(len(rest))]
						if p, err := cons[name].Pending(shard, probe); err != nil || !p {
							t.Fatalf("seed %d step %d: Pending(%d, %d) = %v, %v; want true", seed, step, shard, probe, p, err)
						}
						if p, _ := cons[name].Pending(shard, rest[0]-1); p {
							t.Fatalf("seed %d step %d: Pending before the next event = true", seed, step)
						}
					}
				default:
					if rnd.IntN(2) == 0 {
						e.flush()
					} else {
						e.reopen()
						register()
					}
				}
				for _, name := range names {
					for shard, d := range cons[name].ShardDepths() {
						if want := len(after(name, shard)); d != want {
							t.Fatalf("seed %d cache %d step %d: %s's depth of shard %d = %d, want %d", seed, cache, step, name, shard, d, want)
						}
					}
				}
			}
			for _, name := range names {
				for shard := range shards {
					readAll(t, cons[name], shard)
				}
			}
			e.flush()
			if s := e.storedSeqs(); len(s) != 0 || e.q.Depth() != 0 {
				t.Fatalf("seed %d cache %d: everything acknowledged, %d stored, Depth %d", seed, cache, len(s), e.q.Depth())
			}
			for shard := range shards {
				if s := e.q.shard(shard); s != nil && len(s.blocks) != 0 {
					t.Fatalf("seed %d cache %d: shard %d remembers %d deleted blocks", seed, cache, shard, len(s.blocks))
				}
			}
			e.close()
		}
	}
}

// Past the bound the oldest blocks go whole: a consumer inside one skips the rest of it, its depth
// follows, and only what no consumer had acknowledged counts as dropped.
func TestBoundDropsWholeBlocksAroundAConsumersPosition(t *testing.T) {
	e := newEnv(t, Options{MaxEvents: 12, CacheBytes: 1, FlushInterval: time.Hour})
	c := e.consumer("bot")
	block := make([]Record, 10)
	for i := range block {
		block[i] = rec(0, i)
	}
	e.append(block)
	got, _ := c.Read(0, 3)
	c.Ack(0, got[2].Seq) // inside the block: 7 of its events not acknowledged
	var later []Record
	for i := range 5 {
		r := []Record{rec(i%2, 100+i)}
		e.append(r)
		later = append(later, r[0])
	}
	e.flush()
	// 15 stored, bound 12: the block (10) goes whole, 7 of it unacknowledged.
	if got := e.metric("dd_queue_dropped_events_total"); got != 7 {
		t.Fatalf("dd_queue_dropped_events_total = %v, want 7", got)
	}
	if d := e.q.Depth(); d != 5 {
		t.Fatalf("Depth = %d, want the 5 later events", d)
	}
	if d := c.ShardDepths(); d[0] != 3 || d[1] != 2 {
		t.Fatalf("consumer's depths %v, want shard 0: 3, shard 1: 2", d)
	}
	rest := readAll(t, c, 0)
	if len(rest) != 3 || rest[0].Seq != later[0].Seq {
		t.Fatalf("after the drop shard 0 read %d events from %d, want the 3 later ones from %d", len(rest), rest[0].Seq, later[0].Seq)
	}
}
