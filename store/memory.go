package store

import "github.com/dgraph-io/badger/v4/skl"

// Badger's memory (store.memory_limit). Badger's defaults are a database server's: 64 MB memtables, five
// of them, a 256 MB block cache. dd's store is mostly an event queue, written once, read back soon and
// deleted, so it needs little of that; what it keeps is sized from a budget, and the disk's sizes
// (disk.go) stay where they are smaller.
const (
	// DefaultMemoryLimit is store.memory_limit's default: memtables of 3.75 MB, an 8 MB block cache.
	DefaultMemoryLimit = 64 << 20
	// numCompactors is how many compactions run at once: 2 cores, and each holds a table builder.
	numCompactors = 2
	// memTableStep is the granularity of memtable sizes chosen for a budget.
	memTableStep = 256 << 10
)

// arena is the memory one memtable takes, whatever it holds: its skiplist arena is allocated whole
// (Badger's arenaSize: the table plus room for the largest transaction's data and nodes).
func (z sizing) arena() int64 {
	batch := 15 * z.memTable / 100
	return z.memTable + batch + batch/int64(skl.MaxNodeSize)*int64(skl.MaxNodeSize)
}

// memory is what Badger may keep in memory with these sizes, at worst (a firehose whose flushes fall
// behind): the mutable memtable, numMemtables waiting to be flushed and the one being flushed; the
// table builder of that flush, which holds the whole memtable's blocks, raw and compressed, in buffers
// that double as they grow (up to 4 memtables); each compaction's builder (up to 4 base tables); and the
// block cache. The index cache is not used: Badger uses it only for encrypted stores, and table indexes
// and bloom filters are read from the memory-mapped tables (page cache the kernel can take back).
func (z sizing) memory() int64 {
	return int64(z.numMemtables+2)*z.arena() + 4*z.memTable + numCompactors*4*z.baseTable + z.blockCache
}

// limitMemory shrinks the memtables (and the base tables with them) until memory() fits in limit, an
// eighth of which goes to the block cache (Badger needs one because its tables are compressed).
func (z sizing) limitMemory(limit int64) sizing {
	if limit <= 0 {
		limit = DefaultMemoryLimit
	}
	z.blockCache = max(limit/8, 1<<20)
	for z.memory() > limit && z.memTable > memTableStep*2 {
		z.memTable = (z.memTable - 1) / memTableStep * memTableStep
		z.baseTable = min(z.baseTable, z.memTable)
	}
	return z
}
