package cache

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/ddhq/dd/store"
)

// A batch stages the writes of a run of events in one store transaction, counting what it adds and
// removes. It commits on its own when the transaction grows large (a GUILD_CREATE of a big guild, a
// removed guild's range), so one event may span several commits: that is safe because applying an event
// again gives the same state (events are applied at least once), and each commit carries the counters of
// what it wrote.
type batch struct {
	c       *Cache
	txn     store.Txn
	entries int
	bytes   int
	delta   [nCounters]int64
}

// Badger refuses a transaction past about 4.8 MB or its entry limit; commit well before either.
const (
	maxBatchEntries = 20000
	maxBatchBytes   = 2 << 20
)

func (b *batch) tx() store.Txn {
	if b.txn == nil {
		b.txn = b.c.st.Begin()
	}
	return b.txn
}

// commit stores what is staged, with the counters, and makes the counts visible.
func (b *batch) commit() error {
	if b.txn == nil {
		return nil
	}
	if b.delta != [nCounters]int64{} {
		var v []byte
		for i := range b.delta {
			v = binary.AppendVarint(v, b.c.counts[i].Load()+b.delta[i])
		}
		if err := b.txn.Set([]byte(countersKey), v); err != nil {
			b.discard()
			return err
		}
	}
	err := b.txn.Commit()
	b.txn = nil
	b.entries, b.bytes = 0, 0
	if err != nil {
		b.delta = [nCounters]int64{}
		return fmt.Errorf("cache: commit: %w", err)
	}
	for i, d := range b.delta {
		b.c.counts[i].Add(d)
	}
	b.delta = [nCounters]int64{}
	return nil
}

func (b *batch) discard() {
	if b.txn != nil {
		b.txn.Discard()
		b.txn = nil
	}
	b.entries, b.bytes = 0, 0
	b.delta = [nCounters]int64{}
}

// room commits first when the next write might not fit, in our bounds or in half of what the store's
// transactions take (Badger's shrink with its memtables: store.memory_limit, a small disk).
func (b *batch) room(n int) error {
	maxEntries, maxBytes := maxBatchEntries, maxBatchBytes
	if st, ok := b.c.st.(interface{ MaxTxn() (bytes, count int) }); ok {
		tb, tn := st.MaxTxn()
		maxEntries, maxBytes = min(maxEntries, tn/2), min(maxBytes, tb/2)
	}
	if b.entries+1 >= maxEntries || b.bytes+n >= maxBytes {
		return b.commit()
	}
	return nil
}

func (b *batch) set(k, v []byte) error {
	if err := b.room(len(k) + len(v)); err != nil {
		return err
	}
	b.entries++
	b.bytes += len(k) + len(v) + 32
	return b.tx().Set(k, v)
}

func (b *batch) del(k []byte) error {
	if err := b.room(len(k)); err != nil {
		return err
	}
	b.entries++
	b.bytes += len(k) + 32
	return b.tx().Delete(k)
}

// get returns the stored value, nil when absent.
func (b *batch) get(k []byte) ([]byte, error) {
	v, err := b.tx().Get(k)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	return v, err
}

func (b *batch) count(counter int, d int64) {
	if counter >= 0 {
		b.delta[counter] += d
	}
}

// put stores v at k unless it is already there, and counts a new object. It reports whether k is new.
func (b *batch) put(k, v []byte, counter int) (bool, error) {
	old, err := b.get(k)
	if err != nil {
		return false, err
	}
	if old != nil && bytes.Equal(old, v) {
		return false, nil
	}
	if old == nil {
		b.count(counter, 1)
	}
	return old == nil, b.set(k, v)
}

// remove deletes k if it is stored, and counts it.
func (b *batch) remove(k []byte, counter int) (bool, error) {
	has, err := b.tx().Has(k)
	if err != nil || !has {
		return false, err
	}
	b.count(counter, -1)
	return true, b.del(k)
}

// removeRange deletes every key with prefix (a guild and all under it, a channel's messages), counting
// what it removes and dropping the channel index entries of removed channels and threads.
func (b *batch) removeRange(prefix []byte) error {
	from := prefix
	for {
		var keys [][]byte
		var guildState byte
		err := b.tx().Scan(prefix, from, true, func(k, _ []byte) error {
			keys = append(keys, bytes.Clone(k))
			if len(keys) == 1000 {
				return store.ErrStopScan
			}
			return nil
		})
		if err != nil {
			return err
		}
		if len(keys) == 0 {
			return nil
		}
		for _, k := range keys {
			switch {
			case len(k) == guildKeyLen:
				v, err := b.get(k)
				if err != nil {
					return err
				}
				if len(v) > 0 {
					guildState = v[0]
				}
				b.count(cGuilds, -1)
				if guildState == stateUnavailable {
					b.count(cUnavailableGuilds, -1)
					g := keyGuild(k)
					delete(b.c.outages, g)
					if err := b.del(outageKey(g)); err != nil {
						return err
					}
				}
			case len(k) >= subKeyLen:
				kind := k[guildKeyLen]
				b.count(kindCounter(kind), -1)
				if kind == kindChannel || kind == kindThread {
					if err := b.del(channelKey(keyID(k))); err != nil {
						return err
					}
				}
			}
			if err := b.del(k); err != nil {
				return err
			}
		}
		// Continue after the last key: the deleted ones would be skipped anyway, at a cost.
		from = append(keys[len(keys)-1], 0)
	}
}

// scanKind calls fn with the id and value of each of a guild's objects of one kind.
func (b *batch) scanKind(g uint64, kind byte, keysOnly bool, fn func(id uint64, v []byte) error) error {
	p := kindPrefix(g, kind)
	return b.tx().Scan(p, nil, keysOnly, func(k, v []byte) error {
		if len(k) != subKeyLen {
			return nil
		}
		return fn(keyID(k), v)
	})
}
