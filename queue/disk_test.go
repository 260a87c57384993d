package queue

import (
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ddhq/dd/internal/tmpfstest"
	"github.com/ddhq/dd/store"
)

// On a real 20 MB filesystem, Append waits while the disk is full, fails with store.ErrDiskFull after
// DiskFullWait (nothing committed), completes by itself once space is freed, and every event appended
// without error is read back once, in order, also after a restart.
func TestAppendWaitsForDiskSpaceAndLosesNothing(t *testing.T) {
	mnt := tmpfstest.Mount(t, 20<<20)
	dir := filepath.Join(mnt, "data")
	filler := filepath.Join(mnt, "filler")
	tmpfstest.Fill(t, filler, 5<<20)
	st, err := store.Open(store.Options{Path: dir})
	if err != nil {
		t.Fatal(err)
	}
	const wait = 2500 * time.Millisecond
	q, err := Open(st, Options{DiskFullWait: wait})
	if err != nil {
		t.Fatal(err)
	}
	con, err := q.Consumer("bot")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := q.Consumer("later"); err != nil { // reads everything after the restart
		t.Fatal(err)
	}
	rnd := rand.New(rand.NewPCG(7, 7))
	batch := func(n, from int) []Record {
		recs := make([]Record, n)
		for i := range recs {
			p := make([]byte, 1200)
			for j := range p {
				p[j] = byte(rnd.Uint32())
			}
			binary.BigEndian.PutUint32(p, uint32(from+i))
			recs[i] = Record{Shard: (from + i) % 2, Payload: p}
		}
		return recs
	}
	ctx := context.Background()
	appended, refusedAtOnce := 0, 0
	for {
		start := time.Now()
		err := q.Append(ctx, batch(20, appended))
		if errors.Is(err, store.ErrDiskFull) {
			// The commit that crossed into the reserve fails at once; later Appends wait first.
			if time.Since(start) >= wait {
				break
			}
			refusedAtOnce++
			if refusedAtOnce > 1 {
				t.Fatalf("Append failed after %v while the disk was known full, want it to wait %v first", time.Since(start), wait)
			}
			continue
		}
		if err != nil {
			t.Fatalf("append after %d events: %v", appended, err)
		}
		appended += 20
	}
	t.Logf("%d events appended before the disk was full", appended)
	if appended < 2000 {
		t.Errorf("only %d events fit", appended)
	}
	// An Append waiting for space completes once someone frees it.
	done := make(chan error, 1)
	go func() { done <- q.Append(ctx, batch(20, appended)) }()
	time.Sleep(100 * time.Millisecond)
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the waiting Append after space was freed: %v", err)
		}
		appended += 20
	case <-time.After(3 * time.Second):
		t.Fatal("5 MB freed: the waiting Append did not complete within 3 s")
	}

	check := func(con *Consumer, from int) int {
		t.Helper()
		next := map[int]int{0: from, 1: from + 1}
		seen := 0
		for shard := range 2 {
			for {
				ctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
				recs, err := con.Next(ctx, shard, 100)
				cancel()
				if err != nil || len(recs) == 0 {
					break
				}
				for _, r := range recs {
					if got := int(binary.BigEndian.Uint32(r.Payload)); got != next[shard] {
						t.Fatalf("shard %d: event %d, want %d", shard, got, next[shard])
					}
					next[shard] += 2
					seen++
				}
				con.Ack(shard, recs[len(recs)-1].Seq)
			}
		}
		return seen
	}
	if seen := check(con, 0); seen != appended {
		t.Fatalf("read %d events, want the %d appended", seen, appended)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if st, err = store.Open(store.Options{Path: dir}); err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if q, err = Open(st, Options{}); err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	con, _ = q.Consumer("later")
	if seen := check(con, 0); seen != appended {
		t.Fatalf("after a restart: read %d events, want the %d appended", seen, appended)
	}
}
