package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/skl"

	"github.com/ddhq/dd/internal/diskspace"
)

// ErrDiskFull is returned by writes refused because the store's filesystem has less free space than
// the reserve Badger needs for its own work, and by Open when there is too little space to open the
// store without risk. Badger writes through memory-mapped files: on a full disk such a write kills the
// process (SIGBUS), so the store refuses new data well before. The error's text says what to free.
var ErrDiskFull = errors.New("store: disk full")

// sizing is Badger's file sizes for one filesystem, and what they make Badger need.
type sizing struct {
	memTable, valueLogFile, baseTable, baseLevel int64
	numMemtables, numL0                          int
	blockCache                                   int64 // memory.go
}

// sizeFor scales Badger's files to the filesystem: on 2 GB and more the sizes dd always used (32 MB
// memtables, 16 MB value log files); on a small volume smaller ones, so that the reserve they need
// leaves room for data (Badger's own defaults would need more than a 100 MB volume holds).
func sizeFor(total int64) sizing {
	const mb = 1 << 20
	z := sizing{numMemtables: 3, numL0: 5}
	z.memTable = min(max(total/64/mb*mb, mb/2), 32*mb)
	z.valueLogFile = min(max(total/16/mb*mb, mb), maxValueLogFile)
	z.baseTable = min(z.memTable, 2*mb)
	z.baseLevel = min(max(total/8/mb*mb, 2*mb), 10*mb)
	if total < 256*mb {
		z.numMemtables, z.numL0 = 2, 3
	}
	return z
}

// reserve is the free space Badger may take on its own once dd stops writing: the memtables flushed to
// level 0, a compaction of level 0 into level 1 (which rewrites level 0 and, at worst, twice the base
// level, before the inputs are deleted), a value log file, and a margin for the batch in flight.
func (z sizing) reserve() int64 {
	return int64(z.numMemtables+z.numL0+1)*z.memTable + 2*z.baseLevel + z.valueLogFile + 1<<20
}

// resume is the free space at which a low store takes writes again: the reserve plus what Badger frees
// and takes back as it flushes and compacts (the logs of the memtables, level 0), so that its breathing
// does not flip the store between refusing and taking events.
func (z sizing) resume(reserve int64) int64 {
	return reserve + int64(z.numMemtables+z.numL0)*z.memTable + 1<<20
}

func (z sizing) apply(o badger.Options) badger.Options {
	// Every level's tables are the base level's size (Badger doubles them per level by default): a
	// deeper level's compaction builds no larger tables, so a builder's memory stays what memory.go counts.
	o.TableSizeMultiplier = 1
	return o.WithMemTableSize(z.memTable).
		WithNumMemtables(z.numMemtables).
		WithValueLogFileSize(z.valueLogFile).
		WithBaseTableSize(z.baseTable).
		WithBaseLevelSize(z.baseLevel).
		WithNumLevelZeroTables(z.numL0).
		WithNumLevelZeroTablesStall(z.numL0 * 3).
		WithNumCompactors(numCompactors).
		WithBlockCacheSize(z.blockCache).
		WithIndexCacheSize(0)
}

// maxTxn is what Badger takes in one transaction with these sizes (its own formula).
func (z sizing) maxTxn() (bytes, count int) {
	b := 15 * z.memTable / 100
	return int(b), int(b / int64(skl.MaxNodeSize))
}

// openNeed is the free space opening the store may take: the write-ahead logs of memtables that were
// not flushed (dd was killed) are replayed and flushed to level 0, and new log files are started.
func openNeed(path string, z sizing) int64 {
	need := z.memTable + 1<<20
	entries, err := os.ReadDir(path)
	if err != nil {
		return need
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".mem") {
			need += diskspace.Allocated(filepath.Join(path, e.Name()))
		}
	}
	return need
}

// checkOpenSpace refuses to open a store whose filesystem cannot take what opening it writes.
func checkOpenSpace(path string, z sizing) error {
	free, _, err := diskspace.Stat(path)
	if err != nil {
		return nil // cannot tell: open and let the watcher say more
	}
	if need := openNeed(path, z); free < need {
		return fmt.Errorf("%w: store.path %s has %s free, and opening the store may write %s (Badger writes through "+
			"memory-mapped files, and a full disk would crash dd): free at least %s there, or grow the volume, then start dd again",
			ErrDiskFull, path, diskspace.MB(free), diskspace.MB(need), diskspace.MB(need-free))
	}
	return nil
}

// writable refuses a new write while the filesystem is low, and a reclaiming one (reclaim) only when
// free space is under half the reserve. It measures the free space (one statfs, about a microsecond) on
// every call: a commit is far slower, and a batch must not slip into the reserve between two ticks.
func (s *Store) writable(reclaim bool) error {
	if s == nil || s.disk == nil {
		return nil
	}
	free, err := s.disk.Check()
	if err != nil || free < 0 {
		return nil // cannot measure: the watcher logs it
	}
	if (!reclaim && s.disk.IsLow()) || free < s.disk.Reserve()/2 {
		return fmt.Errorf("%w: %v", ErrDiskFull, s.disk.Err())
	}
	return nil
}

// Reclaim is Update for writes that free space or stay tiny (deleting acknowledged events, saving
// consumers' positions): they go on while the disk is low, into the first half of the reserve, so that
// a bot that is back can empty the queue.
func (s *Store) Reclaim(fn func(w Writer) error) error {
	if err := s.writable(true); err != nil {
		return err
	}
	return s.update(fn)
}

// DiskFull reports whether the store refuses new writes for lack of disk space, and returns a channel
// closed when that changes.
func (s *Store) DiskFull() (full bool, changed <-chan struct{}) {
	if s.disk == nil {
		return false, nil
	}
	return s.disk.Low()
}

// DiskErr is nil while the store takes writes, and otherwise says how short of space it is and what to
// do (for /readyz).
func (s *Store) DiskErr() error {
	if s.disk == nil {
		return nil
	}
	return s.disk.Err()
}

// MaxTxn is what one transaction can hold (bytes of keys and values, and entries), for callers that
// batch. Larger transactions fail with ErrTooBig.
func (s *Store) MaxTxn() (bytes, count int) { return s.size.maxTxn() }
