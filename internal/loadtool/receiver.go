package loadtool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ddhq/dd/internal/httpapi"
	"github.com/ddhq/dd/internal/rawjson"
)

// Receiver is the bot's event endpoint for a load run: it checks Authorization and the envelope (README,
// "The gateway role", Delivery), counts every event by X-DD-Event-Id and by shard and sequence
// (duplicates, gaps, order), and answers 204 at once. It runs in the load tool's process, apart from dd
// and the simulator, and is built to cost little: a body, single or batched, is scanned
// (httpapi.DecodeEnvelopes, then rawjson for op, s and t), not decoded.
type Receiver struct {
	secret string
	srv    *http.Server
	ln     net.Listener

	events    atomic.Int64 // events received, duplicates included
	requests  atomic.Int64
	lastEvent atomic.Int64 // unix nanoseconds of the latest event

	mu           sync.Mutex
	shards       map[int]*shardSeqs
	ids          map[string]uint16
	dupIDs       int64
	badAuth      int64
	invalid      int64
	firstInvalid string
	types        map[string]int64
	guilds       map[string]struct{} // ids of guilds whose GUILD_CREATE arrived
}

type shardSeqs struct {
	seen       []uint64 // bitset of sequences
	high       int64
	count      int64
	dups       int64
	outOfOrder int64
}

func (s *shardSeqs) add(seq int64) {
	w := int(seq / 64)
	for w >= len(s.seen) {
		s.seen = append(s.seen, make([]uint64, len(s.seen)+16)...)
	}
	bit := uint64(1) << (seq % 64)
	s.count++
	if s.seen[w]&bit != 0 {
		s.dups++
		return
	}
	s.seen[w] |= bit
	if seq < s.high {
		s.outOfOrder++
	}
	s.high = max(s.high, seq)
}

func (s *shardSeqs) has(seq int64) bool {
	w := int(seq / 64)
	return w < len(s.seen) && s.seen[w]&(uint64(1)<<(seq%64)) != 0
}

// StartReceiver listens on 127.0.0.1 (a free port) and expects Authorization: secret.
func StartReceiver(secret string) (*Receiver, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &Receiver{secret: secret, ln: ln, shards: map[int]*shardSeqs{}, ids: map[string]uint16{},
		types: map[string]int64{}, guilds: map[string]struct{}{}}
	r.srv = &http.Server{Handler: http.HandlerFunc(r.serve), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = r.srv.Serve(ln) }()
	return r, nil
}

// URL is what dd's events.urls should hold.
func (r *Receiver) URL() string { return "http://" + r.ln.Addr().String() + "/" }

// Close stops the receiver.
func (r *Receiver) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := r.srv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return r.srv.Close()
}

// Events is how many events arrived, duplicates included (cheap; for polling).
func (r *Receiver) Events() int64 { return r.events.Load() }

// LastEventAt is when the latest event arrived.
func (r *Receiver) LastEventAt() time.Time {
	n := r.lastEvent.Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

var bodyPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func (r *Receiver) serve(w http.ResponseWriter, req *http.Request) {
	r.requests.Add(1)
	if req.Header.Get("Authorization") != r.secret {
		r.mu.Lock()
		r.badAuth++
		r.mu.Unlock()
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	buf := bodyPool.Get().(*bytes.Buffer)
	buf.Reset()
	defer bodyPool.Put(buf)
	if _, err := io.Copy(buf, req.Body); err != nil {
		return
	}
	body := buf.Bytes()
	ids := req.Header.Get("X-DD-Event-Ids")
	if ids == "" {
		ids = req.Header.Get("X-DD-Event-Id")
	}
	type ev struct {
		shard   int
		seq     int64
		t       []byte
		payload []byte
	}
	bad := ""
	envs, err := httpapi.DecodeEnvelopes(body)
	if err != nil {
		bad = err.Error()
	}
	evs := make([]ev, 0, len(envs))
	for _, env := range envs {
		op, _ := rawjson.Int(rawjson.Field(env.Payload, "op"))
		seq, ok := rawjson.Int(rawjson.Field(env.Payload, "s"))
		if op != 0 || !ok || seq <= 0 {
			bad = fmt.Sprintf("not an envelope of a dispatch: %.200s", env.Payload)
			break
		}
		evs = append(evs, ev{env.ShardID, seq, rawjson.Field(env.Payload, "t"), env.Payload})
	}
	nIDs := 0
	if ids != "" {
		nIDs = 1 + bytes.Count([]byte(ids), []byte{','})
	}
	if bad == "" && (req.Header.Get("Content-Type") != "application/json" || nIDs != len(evs)) {
		bad = fmt.Sprintf("Content-Type %q, %d event ids for %d events", req.Header.Get("Content-Type"), nIDs, len(evs))
	}
	now := time.Now()
	r.mu.Lock()
	if bad != "" {
		r.invalid++
		if r.firstInvalid == "" {
			r.firstInvalid = bad
		}
		r.mu.Unlock()
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	for _, e := range evs {
		s := r.shards[e.shard]
		if s == nil {
			s = &shardSeqs{}
			r.shards[e.shard] = s
		}
		s.add(e.seq)
		t, _ := rawjson.String(e.t)
		r.types[t]++
		if t == "GUILD_CREATE" {
			if id, ok := rawjson.String(rawjson.Field(rawjson.Field(e.payload, "d"), "id")); ok {
				r.guilds[id] = struct{}{}
			}
		}
	}
	for len(ids) > 0 {
		id, rest, _ := cutComma(ids)
		ids = rest
		n := r.ids[id]
		if n > 0 {
			r.dupIDs++
		}
		if n < 65535 {
			r.ids[id] = n + 1
		}
	}
	r.mu.Unlock()
	r.events.Add(int64(len(evs)))
	r.lastEvent.Store(now.UnixNano())
	w.WriteHeader(http.StatusNoContent)
}

func cutComma(s string) (before, after string, found bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == ',' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// ReceiverStats summarises what arrived.
type ReceiverStats struct {
	Requests     int64            `json:"requests"`
	Events       int64            `json:"events"`
	UniqueIDs    int64            `json:"unique_event_ids"`
	DuplicateIDs int64            `json:"duplicate_event_ids"` // deliveries of an id already seen
	DuplicateSeq int64            `json:"duplicate_seqs"`      // (shard, seq) already seen
	OutOfOrder   int64            `json:"out_of_order"`        // first arrivals below the shard's highest seq
	BadAuth      int64            `json:"bad_auth"`
	Invalid      int64            `json:"invalid"`
	FirstInvalid string           `json:"first_invalid,omitempty"`
	Types        map[string]int64 `json:"types"`
	Guilds       int              `json:"guild_creates"` // distinct guilds whose GUILD_CREATE arrived
}

// Stats returns a snapshot.
func (r *Receiver) Stats() ReceiverStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := ReceiverStats{Requests: r.requests.Load(), Events: r.events.Load(), UniqueIDs: int64(len(r.ids)),
		DuplicateIDs: r.dupIDs, BadAuth: r.badAuth, Invalid: r.invalid, FirstInvalid: r.firstInvalid,
		Types: map[string]int64{}, Guilds: len(r.guilds)}
	for k, v := range r.types {
		st.Types[k] = v
	}
	for _, s := range r.shards {
		st.DuplicateSeq += s.dups
		st.OutOfOrder += s.outOfOrder
	}
	return st
}

// GuildCreates is how many distinct guilds' GUILD_CREATE arrived.
func (r *Receiver) GuildCreates() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.guilds)
}

// Missing counts, for each shard, the sequences 1..last[shard] that never arrived, and the sequences
// that arrived beyond last (events the simulator did not send on the session it reports).
func (r *Receiver) Missing(last map[int]int64) (missing, beyond int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for shard, l := range last {
		s := r.shards[shard]
		if s == nil {
			missing += l
			continue
		}
		for seq := int64(1); seq <= l; seq++ {
			if !s.has(seq) {
				missing++
			}
		}
	}
	for shard, s := range r.shards {
		l, ok := last[shard]
		if !ok {
			l = 0
		}
		if s.high > l {
			for seq := l + 1; seq <= s.high; seq++ {
				if s.has(seq) {
					beyond++
				}
			}
		}
	}
	return missing, beyond
}
