// Package store is the only package that knows Badger. The event queue, shard sessions and cache keep
// their data through the small API here (Get, atomic Update, ordered Scan), so another backend can plug in
// at this one seam. It does not know what the keys mean: each user owns a key prefix.
package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/dgraph-io/badger/v4"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/ddhq/dd/internal/diskspace"
)

// ErrNotFound is returned by Get for a key that is not stored.
var ErrNotFound = errors.New("store: key not found")

// ErrStopScan, returned by a Scan callback, ends the scan without error.
var ErrStopScan = errors.New("store: stop scan")

// ErrLocked means another process holds the store's directory.
var ErrLocked = errors.New("store: directory in use by another process")

// Options configure Open.
type Options struct {
	Path string
	// SyncWrites fsyncs every commit: power-loss durability at a cost in throughput. Without it a commit
	// survives a crash of dd (it is in the OS's page cache) but not of the machine.
	SyncWrites bool
	Logger     *zap.Logger
	// MinFree is the free space kept on Path's filesystem for Badger's own work (store.min_free): below
	// it new writes fail with ErrDiskFull. Zero computes it from Badger's file sizes, which are scaled
	// to the filesystem; a larger value wins over the computed one.
	MinFree int64
	// MemoryLimit bounds what Badger keeps in memory, in bytes (store.memory_limit; memory.go says what
	// counts). Zero is DefaultMemoryLimit.
	MemoryLimit int64
	// Registerer receives the disk-space metrics; nil registers nothing.
	Registerer prometheus.Registerer
}

// Store is an open Badger database.
type Store struct {
	db       *badger.DB
	path     string
	size     sizing
	memLimit int64              // store.memory_limit
	disk     *diskspace.Watcher // nil where free space cannot be measured

	gcStop, gcDone chan struct{} // the value log's garbage collection (valuelog.go)
	gcRewrites     atomic.Int64  // value log files it rewrote
	deleted        atomic.Int64  // deletions since the last flushTree
	valuesWritten  atomic.Int64  // bytes of values for the value log since the last flushTree
	flushes        atomic.Int64  // flushTree calls
	// writeMu is held shared by writes, and alone by flushTree: Badger refuses writes while it
	// flushes on demand, and they wait here instead.
	writeMu sync.RWMutex
}

// Open opens (creating if needed) the store at o.Path.
func Open(o Options) (*Store, error) {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if err := checkWritable(o.Path); err != nil {
		return nil, err
	}
	_, total, err := diskspace.Stat(o.Path)
	if err != nil {
		total = 1 << 40 // cannot tell: Badger's sizes for a large disk
	}
	z := sizeFor(total).limitMemory(o.MemoryLimit)
	if err := checkOpenSpace(o.Path, z); err != nil {
		return nil, err
	}
	opts := z.apply(badger.DefaultOptions(o.Path).
		WithSyncWrites(o.SyncWrites).
		WithLogger(badgerLogger{o.Logger.Named("badger").Sugar()}).
		// Memtable, table and value log sizes come from the disk (sizeFor) and store.memory_limit
		// (limitMemory), the compactors from dd's machines (2 cores).
		WithValueThreshold(valueThreshold))
	db, err := badger.Open(opts)
	if err != nil {
		if strings.Contains(err.Error(), "directory lock") {
			return nil, fmt.Errorf("%w: %s is locked, is another dd running with store.path = %q? (%v)",
				ErrLocked, o.Path, o.Path, err)
		}
		return nil, fmt.Errorf("store: open %s: %w", o.Path, err)
	}
	s := &Store{db: db, path: o.Path, size: z, memLimit: o.MemoryLimit}
	if s.memLimit <= 0 {
		s.memLimit = DefaultMemoryLimit
	}
	reserve := max(z.reserve(), o.MinFree)
	s.disk, err = diskspace.Start(diskspace.Options{Dir: o.Path, Key: "store.path", Reserve: reserve, Resume: z.resume(reserve),
		Refused: "new events and cache updates are refused (shards stop reading; Discord replays on resume)",
		Logger:  o.Logger.Named("store"), Registerer: o.Registerer})
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	if s.disk.IsLow() {
		o.Logger.Warn("store opened on a disk short of space: it takes no new events until space is freed",
			zap.Error(s.disk.Err()))
	}
	if o.Registerer != nil {
		for _, c := range []prometheus.Collector{
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "dd_store_value_log_files_collected_total",
				Help: "Value log files the store's garbage collection rewrote and deleted."},
				func() float64 { return float64(s.gcRewrites.Load()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "dd_store_tree_flushes_total",
				Help: "Flushes and level-0 compactions the store forced so that deleted values are collected."},
				func() float64 { return float64(s.flushes.Load()) }),
		} {
			if err := o.Registerer.Register(c); err != nil {
				if s.disk != nil {
					s.disk.Close()
				}
				_ = db.Close()
				return nil, fmt.Errorf("store: metrics: %w", err)
			}
		}
	}
	s.gcStop, s.gcDone = make(chan struct{}), make(chan struct{})
	go s.collectGarbage(s.gcStop, o.Logger.Named("store"))
	return s, nil
}

// checkWritable creates the directory and proves a file can be written there, so that a read-only
// volume is reported as such instead of as a Badger internals error.
func checkWritable(path string) error {
	if strings.TrimSpace(path) == "" {
		return errors.New("store: no path given (store.path)")
	}
	if err := os.MkdirAll(path, 0o750); err != nil {
		return fmt.Errorf("store: cannot create %s (store.path): %w", path, err)
	}
	f, err := os.CreateTemp(path, ".dd-write-check-*")
	if err != nil {
		return fmt.Errorf("store: %s (store.path) is not writable: %w", path, err)
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}

// MemoryLimit is the memory budget the store was opened with (store.memory_limit): Badger is sized to
// fit it, and the queue takes its cache's share from it.
func (s *Store) MemoryLimit() int64 { return s.memLimit }

// Path is the directory the store lives in.
func (s *Store) Path() string { return s.path }

// Close flushes and closes the store.
func (s *Store) Close() error {
	close(s.gcStop)
	<-s.gcDone
	if s.disk != nil {
		s.disk.Close()
	}
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("store: close %s: %w", s.path, err)
	}
	return nil
}

// Get returns a copy of the value stored at key, or ErrNotFound.
func (s *Store) Get(key []byte) ([]byte, error) {
	var out []byte
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(key)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		out, err = item.ValueCopy(nil)
		return err
	})
	return out, err
}

// Writer stages writes inside Update.
type Writer interface {
	Set(key, value []byte) error
	Delete(key []byte) error
}

// Update applies fn's writes atomically: all of them are stored or none. Keys and values handed to the
// Writer must not be changed until Update returns. While the disk is short of space it writes nothing
// and returns ErrDiskFull.
func (s *Store) Update(fn func(w Writer) error) error {
	if err := s.writable(false); err != nil {
		return err
	}
	return s.update(fn)
}

func (s *Store) update(fn func(w Writer) error) error {
	s.writeMu.RLock()
	defer s.writeMu.RUnlock()
	w := txnWriter{}
	err := s.db.Update(func(txn *badger.Txn) error {
		w = txnWriter{txn: txn}
		return fn(&w)
	})
	if err == nil {
		s.deleted.Add(int64(w.deleted))
		s.valuesWritten.Add(int64(w.values))
	}
	return err
}

type txnWriter struct {
	txn     *badger.Txn
	deleted int
	values  int // bytes for the value log
}

func (w *txnWriter) Set(k, v []byte) error {
	if len(v) >= valueThreshold {
		w.values += len(v)
	}
	return w.txn.Set(k, v)
}
func (w *txnWriter) Delete(k []byte) error { w.deleted++; return w.txn.Delete(k) }

// ErrTooBig is returned by Update when one transaction holds more than the store can commit at once;
// callers that batch should split the batch.
var ErrTooBig = badger.ErrTxnTooBig

// Scan calls fn for each key with prefix, in key order, starting at from (or at the prefix when from is
// nil). Key and value are valid only during the call. Returning ErrStopScan ends the scan cleanly.
func (s *Store) Scan(prefix, from []byte, fn func(key, value []byte) error) error {
	return s.db.View(func(txn *badger.Txn) error { return scan(txn, prefix, from, false, fn) })
}

// ScanKeys is Scan without the values: fn gets a nil value, and no value is read or copied.
func (s *Store) ScanKeys(prefix, from []byte, fn func(key []byte) error) error {
	return s.db.View(func(txn *badger.Txn) error {
		return scan(txn, prefix, from, true, func(k, _ []byte) error { return fn(k) })
	})
}

// scan is Scan within txn. Values are read as fn is called, not prefetched: Badger's prefetch starts a
// goroutine and copies the value of each of the next 100 items, which a scan that stops after a few
// (a queue's read, a count up to a bound) pays for nothing, and one that reads them all pays twice.
func scan(txn *badger.Txn, prefix, from []byte, keysOnly bool, fn func(key, value []byte) error) error {
	opts := badger.DefaultIteratorOptions
	opts.Prefix = prefix
	opts.PrefetchValues = false
	it := txn.NewIterator(opts)
	defer it.Close()
	start := prefix
	if from != nil && bytes.Compare(from, prefix) > 0 {
		start = from
	}
	for it.Seek(start); it.ValidForPrefix(prefix); it.Next() {
		item := it.Item()
		var err error
		if keysOnly {
			err = fn(item.Key(), nil)
		} else {
			err = item.Value(func(v []byte) error { return fn(item.Key(), v) })
		}
		if errors.Is(err, ErrStopScan) {
			return nil
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Size reports the bytes the store takes on disk (LSM tree and value log).
func (s *Store) Size() (lsm, vlog int64) { return s.db.Size() }

// lockFile is where Badger keeps its directory lock (used by tests to explain failures).
func lockFile(path string) string { return filepath.Join(path, "LOCK") }

// badgerLogger sends Badger's logs to zap, one level down: Badger is chatty about routine work.
type badgerLogger struct{ l *zap.SugaredLogger }

func (b badgerLogger) Errorf(f string, a ...any)   { b.l.Errorf(strings.TrimSpace(f), a...) }
func (b badgerLogger) Warningf(f string, a ...any) { b.l.Warnf(strings.TrimSpace(f), a...) }
func (b badgerLogger) Infof(f string, a ...any)    { b.l.Debugf(strings.TrimSpace(f), a...) }
func (b badgerLogger) Debugf(f string, a ...any)   {}
