package cluster

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/ddhq/dd/shard"
)

// SessionStore keeps shard sessions in the sessions bucket, key "<num_shards>.<shard>", value the JSON of
// shard.Session (session_id, resume_gateway_url, seq, ...) and the instance that wrote it. Any process
// that takes a shard over loads it from there and resumes.
//
// Writes are fenced: each is a compare-and-set on the revision this process last wrote or read, so a
// write that NATS delivers late (buffered while its process was cut off, by then no longer the owner)
// cannot replace a newer owner's session. The holder of the shard's lease writes over such a stale one.
type SessionStore struct {
	kv *rawKV
	c  *Conn

	mu   sync.Mutex
	revs map[string]uint64 // key -> the revision this process last wrote or read
}

var _ shard.SessionLoader = (*SessionStore)(nil)

// NewSessionStore keeps sessions in c's sessions bucket.
func NewSessionStore(c *Conn) *SessionStore {
	return &SessionStore{kv: newRawKV(c, BucketSessions), c: c, revs: map[string]uint64{}}
}

// SessionKey is the key of the session of shard id of num shards: "<num>.<id>".
func SessionKey(id, num int) string { return strconv.Itoa(num) + "." + strconv.Itoa(id) }

type storedSession struct {
	shard.Session
	Writer string `json:"writer,omitempty"`
}

// LoadSession implements shard.SessionLoader: the stored session, and whether it can be resumed. It
// reads from the bucket's leader, so it sees the last write of the previous owner.
func (ss *SessionStore) LoadSession(id, num int) (shard.Session, bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return ss.Load(ctx, id, num)
}

// Load is LoadSession with a context.
func (ss *SessionStore) Load(ctx context.Context, id, num int) (shard.Session, bool, error) {
	key := SessionKey(id, num)
	e, err := ss.kv.last(ctx, key)
	if err != nil {
		return shard.Session{}, false, fmt.Errorf("cluster: loading the session of shard %d/%d: %w", id, num, err)
	}
	ss.mu.Lock()
	ss.revs[key] = e.Revision
	ss.mu.Unlock()
	if e.Revision == 0 || e.Deleted {
		return shard.Session{}, false, nil
	}
	var v storedSession
	if err := json.Unmarshal(e.Value, &v); err != nil {
		return shard.Session{}, false, fmt.Errorf("cluster: the stored session of shard %d/%d is corrupt: %w", id, num, err)
	}
	if v.ShardID != id || v.NumShards != num {
		return shard.Session{}, false, nil
	}
	return v.Session, v.Resumable(), nil
}

// ErrSessionMoved is returned by Save when another process wrote the session since this one last did.
var ErrSessionMoved = errors.New("cluster: the session was written by another process")

// Save writes a session over the revision this process last wrote or read; ErrSessionMoved when
// another process wrote it meanwhile.
func (ss *SessionStore) Save(ctx context.Context, s shard.Session) error {
	return ss.save(ctx, s, func() bool { return false })
}

// save writes s; on a revision conflict it writes over the other writer's value when overwrite says so
// (this process holds the shard's lease).
func (ss *SessionStore) save(ctx context.Context, s shard.Session, overwrite func() bool) error {
	key := SessionKey(s.ShardID, s.NumShards)
	value, _ := json.Marshal(storedSession{Session: s, Writer: ss.c.instance})
	ss.mu.Lock()
	rev, known := ss.revs[key]
	ss.mu.Unlock()
	if !known {
		e, err := ss.kv.last(ctx, key)
		if err != nil {
			return fmt.Errorf("cluster: saving the session of shard %d/%d: %w", s.ShardID, s.NumShards, err)
		}
		rev = e.Revision
	}
	for attempt := 0; ; attempt++ {
		newRev, err := ss.kv.put(ctx, key, value, rev, 0)
		if err == nil {
			ss.mu.Lock()
			ss.revs[key] = newRev
			ss.mu.Unlock()
			return nil
		}
		if !errors.Is(err, errCASConflict) {
			return fmt.Errorf("cluster: saving the session of shard %d/%d: %w", s.ShardID, s.NumShards, err)
		}
		// Another revision: a write of ours whose answer was lost, or another process's.
		e, rerr := ss.kv.last(ctx, key)
		if rerr != nil {
			return fmt.Errorf("cluster: saving the session of shard %d/%d: %w", s.ShardID, s.NumShards, rerr)
		}
		var cur storedSession
		_ = json.Unmarshal(e.Value, &cur)
		if attempt > 2 || (cur.Writer != ss.c.instance && !overwrite()) {
			return fmt.Errorf("shard %d/%d: %w (%q)", s.ShardID, s.NumShards, ErrSessionMoved, cur.Writer)
		}
		rev = e.Revision
	}
}

// Delete removes a stored session (a shard count no longer used).
func (ss *SessionStore) Delete(ctx context.Context, id, num int) error {
	key := SessionKey(id, num)
	e, err := ss.kv.last(ctx, key)
	if err != nil || e.Revision == 0 || e.Deleted {
		return err
	}
	return ss.kv.del(ctx, key, e.Revision)
}

// ShardGuilds knows each shard's guild ids: the gateway's event filter, which learns them from READY and
// GUILD_CREATE. A shard that resumes in another process gets neither, so its ids are kept in the KV
// beside its session and restored there.
type ShardGuilds interface {
	// GuildsChanged returns shard's guild ids when they changed since version (0, or a value it
	// returned before), and the current version.
	GuildsChanged(shard int, version uint64) (ids []uint64, now uint64, changed bool)
	// Restore gives shard the ids it held before it moved here, unless it learnt some already.
	Restore(shard int, ids []uint64)
}

// GuildsKey is the key of the guild ids of shard id of num shards, beside its session: "<num>.<id>.guilds".
func GuildsKey(id, num int) string { return SessionKey(id, num) + ".guilds" }

// SaveGuilds writes the guild ids of shard id of num shards: 8 bytes each, big-endian, as one machine
// stores them beside its sessions. Only the shard's holder writes them (EventSink, fenced by the lease).
func (ss *SessionStore) SaveGuilds(ctx context.Context, id, num int, ids []uint64) error {
	v := make([]byte, 0, 8*len(ids))
	for _, g := range ids {
		v = binary.BigEndian.AppendUint64(v, g)
	}
	if _, err := ss.c.KV(BucketSessions).Put(ctx, GuildsKey(id, num), v); err != nil {
		return fmt.Errorf("cluster: saving the guilds of shard %d/%d: %w", id, num, err)
	}
	return nil
}

// LoadGuilds reads the guild ids stored for shard id of num shards (none: nil), from the bucket's
// leader, so that it sees the previous holder's last write.
func (ss *SessionStore) LoadGuilds(ctx context.Context, id, num int) ([]uint64, error) {
	e, err := ss.kv.last(ctx, GuildsKey(id, num))
	if err != nil {
		return nil, fmt.Errorf("cluster: loading the guilds of shard %d/%d: %w", id, num, err)
	}
	if e.Revision == 0 || e.Deleted || len(e.Value) == 0 {
		return nil, nil
	}
	ids := make([]uint64, 0, len(e.Value)/8)
	for i := 0; i+8 <= len(e.Value); i += 8 {
		ids = append(ids, binary.BigEndian.Uint64(e.Value[i:]))
	}
	return ids, nil
}
