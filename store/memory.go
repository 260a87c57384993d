package store

import "github.com/dgraph-io/badger/v4/skl"

// Badger's memory (store.memory_limit). Badger's defaults are a database server's: 64 MB memtables, five
// of them, a 256 MB block cache. dd's store is mostly an event queue, written once, read back soon and
// deleted, so it needs little of that; what it keeps is sized from a budget, and the disk's sizes
// (disk.go) stay where they are smaller.
//
// Values of 128 bytes and more live in the value log (valuelog.go), so the tree, and everything below,
// holds keys, pointers and small values: the model stays the worst case of a tree of large values, which
// is what dd wrote before, and is far above what it holds now (TestTableBuildersStayWithinTheModel).
//
// What cost most under a firehose whose backlog grows, with events in the tree, was not the memtables but
// Badger's table builders (measured with ddload -heapprofile: 112 to 176 MiB of dd's 200 MiB live heap
// with 3.75 MB memtables and 2 MB tables). A builder holds its table's raw blocks and their compressed copies, in
// buffers that double as they grow and that Badger's allocator pool keeps at the largest size they
// reached, for up to 8 builders, while more are in flight as their files are written. A table is filled
// to its size *compressed*, so its raw size is the table size times how well the events compress
// (about 7 for the simulator's firehose, 3 to 5 for Discord's JSON); a flush builds a whole memtable.
// And every compaction of level 0 rewrites the overlapping tables of the base level, which with
// events of all shards in every level 0 table is all of it: a small base level is rewritten cheaply.
const (
	// DefaultMemoryLimit is store.memory_limit's default: memtables of 2.25 MB, tables of 576 KB, a base
	// level of 4.5 MB, a 10 MB block cache (and Go's soft memory limit of 128 MiB, main.go).
	DefaultMemoryLimit = 160 << 20
	// numCompactors is how many compactions run at once: 2 cores (Badger's minimum).
	numCompactors = 2
	// memTableStep is the granularity of memtable sizes chosen for a budget.
	memTableStep = 128 << 10
	// tablesPerMemtable is a memtable's size over a table's. Smaller tables would cost less memory per
	// builder but more builders in flight and more CPU: with 1.25 MB memtables and 160 KB tables Badger
	// no longer kept up with ddload's 20,000 events/s (13,400 taken in).
	tablesPerMemtable = 4
	// assumedCompression is how well the model assumes events compress in Badger's blocks: Discord's
	// JSON 3 to 5 times, the simulator's firehose about 7.
	assumedCompression = 6
	// numBuilders is how many table builders' buffers the model counts: Badger's allocator pool keeps 8,
	// and more are in flight while their files are written (up to 15 seen, most with smaller buffers;
	// TestTableBuildersStayWithinTheModel measured up to 108 MiB with 2 MB memtables on a loaded machine).
	numBuilders = 9
	// builderOverhead is a builder's buffers over its raw data: the raw blocks and Snappy's bound for
	// their compressed copies (1.17 times), in buffers that double.
	builderOverhead = 4.4
)

// arena is the memory one memtable takes, whatever it holds: its skiplist arena is allocated whole
// (Badger's arenaSize: the table plus room for the largest transaction's data and nodes).
func (z sizing) arena() int64 {
	batch := 15 * z.memTable / 100
	return z.memTable + batch + batch/int64(skl.MaxNodeSize)*int64(skl.MaxNodeSize)
}

// builders is what the table builders may hold at once: numBuilders of the largest raw table, a flush's
// (a memtable) or a compaction's (a table of events that compress assumedCompression times).
func (z sizing) builders() int64 {
	raw := max(z.memTable, assumedCompression*z.baseTable)
	return int64(numBuilders * builderOverhead * float64(raw))
}

// memory is what Badger may keep in memory with these sizes, at worst (a firehose whose flushes fall
// behind): the mutable memtable, numMemtables waiting to be flushed and the one being flushed; the
// table builders; and the block cache. The index cache is not used: Badger uses it only for encrypted
// stores, and table indexes and bloom filters are read from the memory-mapped tables (page cache the
// kernel can take back).
func (z sizing) memory() int64 {
	return int64(z.numMemtables+2)*z.arena() + z.builders() + z.blockCache
}

// limitMemory keeps the disk's sizes when they fit in limit, a sixteenth of which goes to the block
// cache (Badger needs one because its tables are compressed; the queue's consumers mostly read what is
// in memory or what they have not read before). Otherwise it shrinks the memtables, the tables (a
// quarter of a memtable) and the base level (two memtables) until memory() fits.
func (z sizing) limitMemory(limit int64) sizing {
	if limit <= 0 {
		limit = DefaultMemoryLimit
	}
	z.blockCache = max(limit/16, 1<<20)
	if z.memory() <= limit {
		return z // a small disk's sizes: its reserve (disk.go) was worked out for them
	}
	disk := z
	for {
		z.baseTable = min(disk.baseTable, max(z.memTable/tablesPerMemtable, 64<<10))
		z.baseLevel = min(disk.baseLevel, max(2*z.memTable, 2*z.baseTable))
		if z.memory() <= limit || z.memTable <= memTableStep*2 {
			return z
		}
		z.memTable = (z.memTable - 1) / memTableStep * memTableStep
	}
}
