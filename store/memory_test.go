package store

import (
	"fmt"
	"testing"

	"github.com/ddhq/dd/config"
)

// store.memory_limit, read by the config package from the environment as dd reads it, sizes Badger's
// memtables, base tables and block cache so that what Badger may keep in memory fits in it; the disk's
// smaller sizes still win; a larger limit never gives smaller sizes; the index cache stays off (Badger
// uses it only for encrypted stores).
func TestMemoryLimitSizesBadger(t *testing.T) {
	const mb = 1 << 20
	open := func(env ...string) (*Store, int64) {
		t.Helper()
		cfg, err := config.Load(config.Source{Environ: env, Role: config.RoleCache})
		if err != nil {
			t.Fatal(err)
		}
		s, err := Open(Options{Path: t.TempDir(), MemoryLimit: cfg.Store.MemoryLimit})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s, cfg.Store.MemoryLimit
	}
	def, limit := open()
	if limit != DefaultMemoryLimit {
		t.Fatalf("store.memory_limit defaults to %d, store.DefaultMemoryLimit is %d", limit, DefaultMemoryLimit)
	}
	var prev *Store
	for _, v := range []int64{64 * mb, 160 * mb, 200 * mb, 1 << 30, 8 << 30} {
		s := def
		if v != DefaultMemoryLimit {
			s, _ = open(fmt.Sprintf("DD_STORE__MEMORY_LIMIT=%d", v))
		}
		o := s.db.Opts()
		z := s.size
		t.Logf("store.memory_limit %4d MiB: memtables %.2f MiB x %d, tables %.2f MiB, base level %.2f MiB, block cache %.1f MiB; model %.1f MiB",
			v/mb, float64(o.MemTableSize)/mb, o.NumMemtables, float64(o.BaseTableSize)/mb, float64(o.BaseLevelSize)/mb,
			float64(o.BlockCacheSize)/mb, float64(z.memory())/mb)
		if o.MemTableSize != z.memTable || o.BaseTableSize != z.baseTable || o.BlockCacheSize != z.blockCache ||
			o.BaseLevelSize != z.baseLevel || o.TableSizeMultiplier != 1 ||
			o.NumMemtables != z.numMemtables || o.IndexCacheSize != 0 || o.NumCompactors != numCompactors {
			t.Errorf("limit %d: Badger runs with %+v, not the sizing %+v", v, o, z)
		}
		if z.memory() > v && z.memTable > 2*memTableStep {
			t.Errorf("limit %d MiB: Badger may keep %d MiB in memory", v/mb, z.memory()/mb)
		}
		if o.BlockCacheSize != v/16 {
			t.Errorf("limit %d MiB: block cache %d, want a sixteenth of the limit", v/mb, o.BlockCacheSize)
		}
		if o.BaseTableSize > max(o.MemTableSize/tablesPerMemtable, 64<<10) || o.BaseLevelSize > max(2*o.MemTableSize, 2*o.BaseTableSize) {
			t.Errorf("limit %d MiB: tables %d and base level %d for memtables of %d: want at most a quarter and twice",
				v/mb, o.BaseTableSize, o.BaseLevelSize, o.MemTableSize)
		}
		if disk := sizeFor(1 << 40); o.MemTableSize > disk.memTable || o.BaseTableSize > disk.baseTable {
			t.Errorf("limit %d MiB: memtables %d or base tables %d larger than the disk's %d, %d",
				v/mb, o.MemTableSize, o.BaseTableSize, disk.memTable, disk.baseTable)
		}
		if prev != nil && (o.MemTableSize < prev.db.Opts().MemTableSize || o.BlockCacheSize < prev.db.Opts().BlockCacheSize) {
			t.Errorf("limit %d MiB gives smaller sizes than a smaller limit: %+v", v/mb, z)
		}
		prev = s
	}
	if o := prev.db.Opts(); o.MemTableSize != 32*mb {
		t.Errorf("with 8 GiB Badger's memtables are %d, want the disk's 32 MiB", o.MemTableSize)
	}

	// A small disk's sizes stay smaller than the memory's, and the reserve follows what runs.
	small := sizeFor(20 * mb).limitMemory(1 << 30)
	if disk := sizeFor(20 * mb); small.memTable != disk.memTable || small.baseTable > disk.baseTable ||
		small.baseLevel > disk.baseLevel || small.reserve() > disk.reserve() {
		t.Errorf("a 20 MB disk with 1 GiB of memory: %+v, want at most the disk's sizes %+v", small, disk)
	}
	if z := sizeFor(1 << 40).limitMemory(DefaultMemoryLimit); z.reserve() >= sizeFor(1<<40).reserve() {
		t.Errorf("smaller memtables kept the reserve at %d", z.reserve())
	}
}

// The largest transaction shrinks with the memtables, and a transaction of that size still commits.
func TestSmallestMemoryLimitStillCommitsItsLargestTransaction(t *testing.T) {
	s, err := Open(Options{Path: t.TempDir(), MemoryLimit: config.MinStoreMemory})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	maxBytes, maxCount := s.MaxTxn()
	t.Logf("store.memory_limit 64 MiB: transactions up to %d bytes, %d entries", maxBytes, maxCount)
	n := min(maxCount-2, maxBytes/(200+6+12)-2) // Badger counts 12 bytes more per entry
	err = s.Update(func(w Writer) error {
		for i := range n {
			if err := w.Set(seqKey(i), make([]byte, 200)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("a transaction of %d 200-byte events (MaxTxn %d bytes, %d entries): %v", n, maxBytes, maxCount, err)
	}
}
