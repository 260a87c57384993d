package queue

import (
	"encoding/binary"
	"fmt"
	"sort"
	"time"

	"github.com/klauspost/compress/s2"

	"github.com/ddhq/dd/store"
)

// Blocks. A commit stores the records it appends to one shard together, in one value under one key: a
// block. Every key costs the store the same whatever its size (a memtable entry, a tree entry through
// every compaction, a tombstone, a liveness check by the value log's garbage collection), and a firehose
// commits dozens of a shard's events at once, so blocks cut that cost by as much. Events are still
// acknowledged one by one; a block is deleted once every consumer acknowledged its last event.
//
// Key: eventPrefix + shard (4 bytes) + last seq (8) + first seq (8) + count (4), so that a seek to
// eventKey(shard, seq) finds the block holding seq, or the first one after it, and keys alone say what a
// block holds. A store written by an older dd holds version 1 records, one per key (eventKey), which read
// as blocks of one.
const (
	blockKeyLen = eventKeyLen + 8 + 4
	// A block's value: its version, then per record the uvarint seq delta, time (8), uvarint length and
	// payload; recordV2S2 is that body compressed with S2 (Snappy's successor), when that saves at least
	// an eighth. The store keeps events uncompressed (its value log, store/valuelog.go), and JSON events
	// of one shard compress several times: a backlog takes that much less disk.
	recordV2   = 2
	recordV2S2 = 3
	// A block holds at most this many records or bytes: a consumer behind the cache decodes a whole block
	// to read its first event, and the records it keeps (what it read ahead) hold the block's buffer.
	blockMaxRecords = 256
	blockMaxBytes   = 64 << 10
)

// blockRef is what a block's key says.
type blockRef struct {
	key         []byte
	first, last uint64
	n           int
}

func blockKey(shard int, first, last uint64, n int) []byte {
	k := make([]byte, 0, blockKeyLen)
	k = append(k, eventPrefix...)
	k = binary.BigEndian.AppendUint32(k, uint32(shard))
	k = binary.BigEndian.AppendUint64(k, last)
	k = binary.BigEndian.AppendUint64(k, first)
	return binary.BigEndian.AppendUint32(k, uint32(n))
}

// parseBlockKey reads a block's key, or a version 1 record's (a block of one). The key is copied.
func parseBlockKey(k []byte) (blockRef, error) {
	switch len(k) {
	case eventKeyLen:
		seq := binary.BigEndian.Uint64(k[len(eventPrefix)+4:])
		return blockRef{key: append([]byte(nil), k...), first: seq, last: seq, n: 1}, nil
	case blockKeyLen:
		at := len(eventPrefix) + 4
		b := blockRef{
			key:   append([]byte(nil), k...),
			last:  binary.BigEndian.Uint64(k[at:]),
			first: binary.BigEndian.Uint64(k[at+8:]),
			n:     int(binary.BigEndian.Uint32(k[at+16:])),
		}
		if b.n < 1 || b.first > b.last {
			return blockRef{}, fmt.Errorf("queue: malformed block key %x", k)
		}
		return b, nil
	}
	return blockRef{}, fmt.Errorf("queue: malformed event key %x", k)
}

// encodeBlock encodes recs, one shard's records in sequence order. buf is scratch space it may reuse.
func encodeBlock(recs []*Record, buf []byte) (value, scratch []byte) {
	b := append(buf[:0], recordV2)
	var prev uint64
	for _, r := range recs {
		b = binary.AppendUvarint(b, r.Seq-prev)
		prev = r.Seq
		b = binary.BigEndian.AppendUint64(b, uint64(r.Time.UnixNano()))
		b = binary.AppendUvarint(b, uint64(len(r.Payload)))
		b = append(b, r.Payload...)
	}
	z := make([]byte, 1+s2.MaxEncodedLen(len(b)-1))
	z[0] = recordV2S2
	z = z[:1+len(s2.Encode(z[1:], b[1:]))]
	if len(z) <= len(b)-len(b)/8 {
		return z, b
	}
	return append([]byte(nil), b...), b
}

// decodeBlock calls fn for each record of the block stored at key with value v, in order, until fn
// returns false. Payloads are copied (the store's buffer is valid only during a scan's callback), all
// of a block's into one allocation, made only once fn wants a record.
func decodeBlock(shard int, key, v []byte, fn func(r Record) bool) error {
	if len(key) == eventKeyLen {
		r, err := decodeRecord(key, v)
		if err != nil {
			return err
		}
		fn(r)
		return nil
	}
	var own []byte // v's copy (or its decompressed body), made for the first record fn takes
	switch {
	case len(v) >= 1 && v[0] == recordV2:
	case len(v) >= 1 && v[0] == recordV2S2:
		n, err := s2.DecodedLen(v[1:])
		if err != nil {
			return fmt.Errorf("queue: block %x: %w", key, err)
		}
		own = make([]byte, 1+n)
		own[0] = recordV2
		if _, err := s2.Decode(own[1:], v[1:]); err != nil {
			return fmt.Errorf("queue: block %x: %w", key, err)
		}
		v = own
	default:
		return fmt.Errorf("queue: block %x: unknown encoding (%d bytes)", key, len(v))
	}
	var seq uint64
	for i := 1; i < len(v); {
		d, n := binary.Uvarint(v[i:])
		if n <= 0 || i+n+8 > len(v) {
			return fmt.Errorf("queue: block %x: truncated", key)
		}
		i += n
		seq += d
		t := int64(binary.BigEndian.Uint64(v[i:]))
		i += 8
		l, n := binary.Uvarint(v[i:])
		if n <= 0 || uint64(len(v)-i-n) < l {
			return fmt.Errorf("queue: block %x: truncated", key)
		}
		i += n
		if own == nil {
			own = append([]byte(nil), v...)
		}
		if !fn(Record{Shard: shard, Seq: seq, Time: time.Unix(0, t), Payload: own[i : i+int(l) : i+int(l)]}) {
			return nil
		}
		i += int(l)
	}
	return nil
}

// forgetBlocksThrough drops the deleted blocks, those whose last event is at most last, from the
// committer's record. Committer only.
func forgetBlocksThrough(s *shardLog, last uint64) {
	i := 0
	for i < len(s.blocks) && s.blocks[i].last <= last {
		i++
	}
	clear(s.blocks[:i])
	s.blocks = s.blocks[i:]
}

// blockSeqs returns the sequences a stored block holds.
func (q *Queue) blockSeqs(shard int, b blockRef) ([]uint64, error) {
	if b.n == 1 {
		return []uint64{b.first}, nil
	}
	v, err := q.st.Get(b.key)
	if err != nil {
		return nil, fmt.Errorf("queue: reading block %x: %w", b.key, err)
	}
	seqs := make([]uint64, 0, b.n)
	err = decodeBlock(shard, b.key, v, func(r Record) bool { seqs = append(seqs, r.Seq); return true })
	return seqs, err
}

// blocksIn returns, in order, the shard's stored blocks from the one holding from (or the first after
// it) on whose last event is at most to, up to limit of them; next is the first sequence of the block
// after those (0 if none). It reads the committer's record of the blocks when that covers from, else
// the store's keys. Committer only.
func (q *Queue) blocksIn(s *shardLog, from, to uint64, limit int) (blocks []blockRef, next uint64, err error) {
	if from >= s.blocksFrom {
		i := sort.Search(len(s.blocks), func(i int) bool { return s.blocks[i].last >= from })
		for ; i < len(s.blocks); i++ {
			if b := s.blocks[i]; b.last > to || len(blocks) == limit {
				return blocks, b.first, nil
			}
			blocks = append(blocks, s.blocks[i])
		}
		return blocks, 0, nil
	}
	err = q.scanKeys(shardPrefix(s.id), eventKey(s.id, from), func(k []byte) error {
		b, err := parseBlockKey(k)
		if err != nil {
			return err
		}
		if b.last > to || len(blocks) == limit {
			next = b.first
			return store.ErrStopScan
		}
		blocks = append(blocks, b)
		return nil
	})
	return blocks, next, err
}
