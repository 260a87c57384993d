package store

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// valueLogBytes is what the store's value log files take on disk.
func valueLogBytes(t *testing.T, dir string) int64 {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".vlog") {
			info, err := e.Info()
			if err == nil {
				n += info.Size()
			}
		}
	}
	return n
}

// A queue's values go to the value log, and what the queue deleted is freed within seconds: under a
// stream of writes deleted soon after (a queue that keeps up), the value log stays a few files long
// instead of growing until Badger's memtables fill and compact, and once the stream stops and
// everything is deleted, it shrinks to the file being written without another write.
func TestValueLogOfDeletedValuesIsCollected(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 100 MB through Badger")
	}
	dir := t.TempDir()
	reg := prometheus.NewRegistry()
	s, err := Open(Options{Path: dir, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	file := s.size.valueLogFile
	const batch, lag = 100, 20 // values per write; a write deletes the values of the write lag before it
	val := func(i int) []byte { return append(firehoseEvent(i%4, i), make([]byte, 200)...) }
	var written, peak int64
	n := 0
	for written < 6*file {
		err := s.Update(func(w Writer) error {
			for j := n; j < n+batch; j++ {
				v := val(j)
				written += int64(len(v))
				if err := w.Set(seqKey(j), v); err != nil {
					return err
				}
				if j >= lag*batch {
					if err := w.Delete(seqKey(j - lag*batch)); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		n += batch
		if n%(50*batch) == 0 {
			peak = max(peak, valueLogBytes(t, dir))
			time.Sleep(gcInterval / 5) // as a queue's writes come spread out
		}
	}
	err = s.Reclaim(func(w Writer) error {
		for j := n - lag*batch; j < n; j++ {
			if err := w.Delete(seqKey(j)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d MB written in %d values, all deleted; value log files of %d MB; the log peaked at %d MB",
		written>>20, n, file>>20, peak>>20)
	if peak > 6*file {
		t.Errorf("the value log reached %d MB while the values were deleted soon after: want under %d MB", peak>>20, 6*file>>20)
	}
	const wait = 30 * time.Second // flushQuiet, a flush and the collection, on a loaded machine
	deadline := time.Now().Add(wait)
	for valueLogBytes(t, dir) > 2*file && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if got := valueLogBytes(t, dir); got > 2*file {
		t.Errorf("everything deleted: the value log still takes %d MB after %v", got>>20, wait)
	}
	metrics, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, m := range metrics {
		got[m.GetName()] = m.GetMetric()[0].GetCounter().GetValue()
	}
	if got["dd_store_value_log_files_collected_total"] == 0 || got["dd_store_tree_flushes_total"] == 0 {
		t.Errorf("metrics after the value log was collected: %v", got)
	}
}

// The store's flushes block Badger's writes while they run: writes through Update and through a Txn
// wait for them instead of failing.
func TestWritesWaitWhileTheStoreFlushes(t *testing.T) {
	s, err := Open(Options{Path: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	stop := make(chan struct{})
	flushed := make(chan int)
	go func() {
		n := 0
		defer func() { flushed <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := s.flushTree(); err != nil {
				t.Errorf("flush: %v", err)
				return
			}
			n++
		}
	}()
	for i := 0; i < 300; i++ {
		v := firehoseEvent(0, i)
		if i%2 == 0 {
			err = s.Update(func(w Writer) error { return w.Set(seqKey(i), v) })
		} else {
			txn := s.Begin()
			if err = txn.Set(seqKey(i), v); err == nil {
				err = txn.Commit()
			}
		}
		if err != nil {
			close(stop)
			t.Fatalf("write %d while the store flushes: %v", i, err)
		}
	}
	close(stop)
	t.Logf("300 writes during %d flushes", <-flushed)
}
