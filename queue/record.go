package queue

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"time"
)

// Record is one gateway dispatch event in the queue.
type Record struct {
	Shard int
	// Payload is the gateway payload exactly as received ({"op":0,"t":..,"s":..,"d":..}). The queue keeps
	// the slice it is given (no copy) and hands the same bytes to every consumer: neither side may change
	// it afterwards.
	Payload []byte
	// Time is when dd received the event; Append sets it to now when zero.
	Time time.Time
	// Seq is the event's global sequence, set by Append. It increases across all shards and restarts.
	Seq uint64
	// ID is the event's stable, unique id (the X-DD-Event-Id header), set by Read and Next.
	ID string
}

// KV is a key/value written atomically with the records of an Append (a shard's session and last
// sequence, say). A nil Value deletes the key.
type KV struct {
	Key, Value []byte
}

// Key layout. Everything the queue stores lives under "q/", so the store can be shared with sessions and
// the cache.
const (
	keyPrefix       = "q/"
	eventPrefix     = "q/e/" // + shard (4 bytes BE) + last seq, first seq (8 bytes BE each), count (4) -> block (block.go)
	shardMetaPrefix = "q/s/" // + shard (4 bytes BE) -> head, tail, count
	consumerPrefix  = "q/c/" // + len(name) (1 byte) + name + shard (4 bytes BE) -> acked seq
	seqKey          = "q/m/seq"
	instanceKey     = "q/m/instance"
)

// eventKeyLen is a version 1 key's length: one record under eventPrefix + shard + seq. eventKey is also
// where a seek starts to find the block holding seq.
const eventKeyLen = len(eventPrefix) + 4 + 8

func shardPrefix(shard int) []byte {
	k := make([]byte, len(eventPrefix)+4)
	copy(k, eventPrefix)
	binary.BigEndian.PutUint32(k[len(eventPrefix):], uint32(shard))
	return k
}

func eventKey(shard int, seq uint64) []byte {
	k := make([]byte, eventKeyLen)
	copy(k, eventPrefix)
	binary.BigEndian.PutUint32(k[len(eventPrefix):], uint32(shard))
	binary.BigEndian.PutUint64(k[len(eventPrefix)+4:], seq)
	return k
}

// seqOfKey reads the sequence from an event key (0 for a malformed key).
func seqOfKey(k []byte) uint64 {
	if len(k) != eventKeyLen {
		return 0
	}
	return binary.BigEndian.Uint64(k[len(eventPrefix)+4:])
}

func shardMetaKey(shard int) []byte {
	k := make([]byte, len(shardMetaPrefix)+4)
	copy(k, shardMetaPrefix)
	binary.BigEndian.PutUint32(k[len(shardMetaPrefix):], uint32(shard))
	return k
}

func consumerKey(name string, shard int) []byte {
	k := make([]byte, 0, len(consumerPrefix)+1+len(name)+4)
	k = append(k, consumerPrefix...)
	k = append(k, byte(len(name)))
	k = append(k, name...)
	return binary.BigEndian.AppendUint32(k, uint32(shard))
}

// parseConsumerKey is consumerKey's inverse.
func parseConsumerKey(k []byte) (name string, shard int, ok bool) {
	rest := k[len(consumerPrefix):]
	if len(rest) < 1 {
		return "", 0, false
	}
	n := int(rest[0])
	if len(rest) != 1+n+4 {
		return "", 0, false
	}
	return string(rest[1 : 1+n]), int(binary.BigEndian.Uint32(rest[1+n:])), true
}

func encodeUint64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func decodeUint64(b []byte) (uint64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("queue: want 8 bytes, got %d", len(b))
	}
	return binary.BigEndian.Uint64(b), nil
}

// shardMeta is what the queue remembers of a shard's log across restarts, written in the same transaction
// as every change to the log, so that Open need not scan the events.
type shardMeta struct {
	head  uint64 // lowest stored seq (meaningful when count > 0)
	tail  uint64 // highest seq ever stored
	count int
}

func (m shardMeta) encode() []byte {
	b := make([]byte, 0, 24)
	b = binary.BigEndian.AppendUint64(b, m.head)
	b = binary.BigEndian.AppendUint64(b, m.tail)
	return binary.BigEndian.AppendUint64(b, uint64(m.count))
}

func decodeShardMeta(b []byte) (shardMeta, error) {
	if len(b) != 24 {
		return shardMeta{}, fmt.Errorf("queue: shard meta: want 24 bytes, got %d", len(b))
	}
	return shardMeta{
		head:  binary.BigEndian.Uint64(b),
		tail:  binary.BigEndian.Uint64(b[8:]),
		count: int(binary.BigEndian.Uint64(b[16:])),
	}, nil
}

// Record encoding, version 1 (one record per key, as older dd wrote; block.go has version 2): a 13-byte
// header (version, shard, unix nanoseconds) then the raw payload. The payload is never re-encoded:
// delivery sends the bytes the gateway sent.
const (
	recordV1     = 1
	recordHeader = 1 + 4 + 8
)

// encodeRecord writes version 1, which dd no longer writes (tests build older stores with it).
func encodeRecord(r *Record) []byte {
	b := make([]byte, recordHeader, recordHeader+len(r.Payload))
	b[0] = recordV1
	binary.BigEndian.PutUint32(b[1:], uint32(r.Shard))
	binary.BigEndian.PutUint64(b[5:], uint64(r.Time.UnixNano()))
	return append(b, r.Payload...)
}

// decodeRecord copies v (the store's buffer is only valid during a scan callback).
func decodeRecord(key, v []byte) (Record, error) {
	if len(v) < recordHeader || v[0] != recordV1 {
		return Record{}, fmt.Errorf("queue: record %x: unknown encoding (%d bytes)", key, len(v))
	}
	return Record{
		Shard:   int(binary.BigEndian.Uint32(v[1:])),
		Time:    time.Unix(0, int64(binary.BigEndian.Uint64(v[5:]))),
		Seq:     seqOfKey(key),
		Payload: append([]byte(nil), v[recordHeader:]...),
	}, nil
}

// eventID is "<instance>-<seq>": the instance id is random per store, so ids never repeat even when the
// store is wiped and sequences start again.
func eventID(instance string, seq uint64) string {
	b := make([]byte, 0, len(instance)+1+20)
	b = append(b, instance...)
	b = append(b, '-')
	return string(strconv.AppendUint(b, seq, 10))
}
