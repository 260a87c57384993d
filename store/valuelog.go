package store

import (
	"errors"
	"time"

	"github.com/dgraph-io/badger/v4"
	"go.uber.org/zap"
)

// Badger's value log. dd's store is mostly an event queue: each event is written once, read back
// within seconds and deleted. Kept in the LSM tree, an event's bytes would be written to the memtable's
// log, again compressed into a level-0 table, and again by every compaction until its deletion catches
// up with it; that was a third of dd's CPU under a firehose. Values of valueThreshold bytes and more go
// to the value log instead (Badger's WiscKey design): written once, in order, while the tree keeps only
// a pointer, so flushes and compactions move a few dozen bytes per value. Small values (positions, a
// shard's summary, counters) stay in the tree.
//
// A value log file is freed by Badger's garbage collection, which picks a file once compactions have
// dropped at least gcDiscardRatio of it, copies what is still live to the newest file and deletes it.
// Nothing runs it by itself: the store does, every gcInterval.
//
// Compactions come with the tree's writes: Badger flushes a memtable when it is full, and compacts
// level 0 when it holds enough tables. With the values elsewhere the tree grows slowly (the queue writes
// a shard's events of one commit under one key), so deleted values would wait minutes, gigabytes of
// value log, for a compaction to drop them; and on a full disk, where the only writes are deletions (a
// bot that is back empties the queue), they might never come, and the store would refuse new events with
// an empty queue. So the store flushes and compacts by itself (flushTree): after every flushAfter files'
// worth of value log written (or flushQuiet after fewer were written and some data deleted), and, while
// the disk is low and data was deleted, every reclaimInterval, then also compacting the tree into one
// level. The tree holds pointers, so that is quick and takes
// little of the disk's reserve.
const (
	valueThreshold = 128
	// maxValueLogFile caps the value log's files (disk.go scales them to the filesystem below it). Smaller
	// files are freed sooner and in smaller steps: a file's pages stay mapped, and counted in dd's
	// resident memory, until the file is deleted.
	maxValueLogFile = 16 << 20
	gcInterval      = 500 * time.Millisecond
	gcDiscardRatio  = 0.5
	// gcMaxRewrites bounds the files one tick rewrites, so that Close never waits long for it.
	gcMaxRewrites = 16
	// flushAfter is how many value log files' worth of values written make the store flush its tree.
	flushAfter = 2
	// flushQuiet is how long values written and deleted may wait for a flush when fewer than flushAfter
	// files' worth were written.
	flushQuiet = 5 * time.Second
	// reclaimInterval spaces the flushes of a full disk.
	reclaimInterval = 2 * time.Second
)

// flushKey is written before a forced flush, so that Badger's DropPrefix, its one way to flush the
// memtables on demand, has something to drop (and drops only that).
var flushKey = []byte("\x00dd-flush")

// collectGarbage flushes the tree when it is due and runs the value log's garbage collection, until
// done is closed.
func (s *Store) collectGarbage(done <-chan struct{}, log *zap.Logger) {
	defer close(s.gcDone)
	t := time.NewTicker(gcInterval)
	defer t.Stop()
	var lastReclaim, lastFlush time.Time
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		low := s.disk != nil && s.disk.IsLow()
		reclaim := low && s.deleted.Load() > 0 && time.Since(lastReclaim) >= reclaimInterval
		written := s.valuesWritten.Load()
		// Flushed when enough values were written, and also when some were and deleted since, but not
		// enough: a queue that went quiet would otherwise keep its last files until the next burst.
		due := written >= flushAfter*s.size.valueLogFile ||
			written > 0 && s.deleted.Load() > 0 && time.Since(lastFlush) >= flushQuiet
		if reclaim || due {
			lastFlush = time.Now()
			if reclaim {
				lastReclaim = lastFlush
			}
			if err := s.flushTree(); err != nil {
				log.Warn("flushing the store's tree failed; retrying", zap.Error(err))
			}
		}
		for range gcMaxRewrites {
			// Writes wait: Badger's collection reads the memtable's newest version without the lock its
			// writes take (DB.MaxVersion against memTable.Put, a data race in Badger 4.9.6). A file takes
			// tens of milliseconds, and the queue's group commit takes up what waited.
			s.writeMu.Lock()
			err := s.db.RunValueLogGC(gcDiscardRatio)
			s.writeMu.Unlock()
			if err == nil {
				s.gcRewrites.Add(1)
				continue
			}
			if !errors.Is(err, badger.ErrNoRewrite) && !errors.Is(err, badger.ErrRejected) {
				log.Warn("value log garbage collection failed; retrying", zap.Error(err))
			}
			break
		}
	}
}

// flushTree makes Badger drop what was deleted: it flushes the memtables and compacts level 0 into the
// level below, leaving the value log's files to the garbage collection. That is what Badger does on its
// own once level 0 is full, within the disk's reserve (disk.go); compacting the whole tree would not be.
// Writes wait meanwhile.
func (s *Store) flushTree() error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	deleted, written := s.deleted.Swap(0), s.valuesWritten.Swap(0)
	err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(flushKey, nil) })
	if err == nil {
		err = s.db.DropPrefix(flushKey)
	}
	if err != nil {
		s.deleted.Add(deleted)
		s.valuesWritten.Add(written)
	}
	s.flushes.Add(1)
	return err
}
