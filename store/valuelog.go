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
// a pointer, so flushes and compactions move a few dozen bytes per event. Small values (positions, a
// shard's summary, counters) stay in the tree.
//
// A value log file is freed by Badger's garbage collection, which picks a file once compactions have
// dropped at least gcDiscardRatio of it, copies what is still live to the newest file and deletes it.
// Nothing runs it by itself: the store does, every gcInterval.
//
// Compactions come with writes: Badger flushes a memtable when it is full, and compacts level 0 when it
// holds enough tables. On a full disk the only writes are deletions (a bot that is back empties the
// queue), small ones, and they may never fill a memtable: the deleted events' space would not come back,
// and the store would refuse new events with an empty queue. So while the disk is low and data was
// deleted, the store flushes and compacts by itself (reclaimSpace), at most every reclaimInterval. The
// tree holds pointers, so rewriting it whole takes little of the reserve.
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
	// reclaimInterval spaces the forced flushes and compactions of a full disk.
	reclaimInterval = 2 * time.Second
)

// reclaimKey is written before a forced flush, so that Badger's DropPrefix, the one way to flush its
// memtables on demand, has something to drop (and drops only that).
var reclaimKey = []byte("\x00dd-reclaim")

// collectGarbage runs the value log's garbage collection until done is closed.
func (s *Store) collectGarbage(done <-chan struct{}, log *zap.Logger) {
	defer close(s.gcDone)
	t := time.NewTicker(gcInterval)
	defer t.Stop()
	var lastReclaim time.Time
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		if s.disk != nil && s.disk.IsLow() && s.deleted.Load() > 0 && time.Since(lastReclaim) >= reclaimInterval {
			lastReclaim = time.Now()
			if err := s.reclaimSpace(); err != nil {
				log.Warn("freeing the space of deleted data failed; retrying", zap.Error(err))
			}
		}
		for range gcMaxRewrites {
			err := s.db.RunValueLogGC(gcDiscardRatio)
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

// reclaimSpace makes Badger drop what was deleted: it flushes the memtables, compacts the tree into
// one level and leaves the value log's files to the garbage collection. Writes wait meanwhile.
func (s *Store) reclaimSpace() error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	n := s.deleted.Swap(0)
	err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(reclaimKey, nil) })
	if err == nil {
		err = s.db.DropPrefix(reclaimKey)
	}
	if err == nil {
		err = s.db.Flatten(numCompactors)
	}
	if err != nil {
		s.deleted.Add(n)
	}
	return err
}
