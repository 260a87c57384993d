package identify

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/ddhq/dd/internal/ctxsleep"
	"github.com/ddhq/dd/internal/httpapi"
)

// The shared identify queue lets several dd gateway processes (one bot, shards split between them)
// identify no faster than one process would: each asks one Queue, served by the rest role, for
// every IDENTIFY. The protocol is three calls, all with the queue's secret in Authorization:
//
//	POST {base}/acquire  {"shard_id":N}       long-polls until granted -> {"lease":"...","ttl_ms":...}
//	                                          (204 after ~25 s with nothing granted: ask again)
//	POST {base}/sent     {"lease":"...","at_ms":unix ms}   the IDENTIFY left at that time
//	POST {base}/release  {"lease":"...","answered":true}   READY, op 9 or a close frame (answered), or a
//	                                          failure without an answer: the bucket is free
//
// The queue takes its own clock at release as the bound on the identify's arrival (it is after the
// holder saw the answer); a release without "answered", or a lease that outlives its TTL (a crashed
// holder), adds the limiter's margin.

// Queue serves the shared identify queue over HTTP, backed by a Local.
type Queue struct {
	limiter *Local
	secret  string
	ttl     time.Duration
	poll    time.Duration
	log     *zap.Logger

	mu     sync.Mutex
	leases map[string]*lease
}

type lease struct {
	shard   int
	release func(answered bool)
	timer   *time.Timer
}

// NewQueue serves limiter. ttl bounds how long a holder may keep a bucket (READY usually takes
// well under a second; default 60 s).
func NewQueue(limiter *Local, secret string, ttl time.Duration, log *zap.Logger) *Queue {
	if ttl == 0 {
		ttl = 60 * time.Second
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &Queue{limiter: limiter, secret: secret, ttl: ttl, poll: 25 * time.Second, log: log, leases: map[string]*lease{}}
}

// Limiter is the limiter behind the queue (its budget can be updated from /gateway/bot).
func (q *Queue) Limiter() *Local { return q.limiter }

func (q *Queue) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		httpapi.WriteError(w, http.StatusMethodNotAllowed, "use POST")
		return
	}
	if !httpapi.SecretMatches(r.Header.Get("Authorization"), q.secret) {
		httpapi.WriteError(w, http.StatusUnauthorized, "missing or wrong Authorization")
		return
	}
	var req struct {
		ShardID  *int   `json:"shard_id"`
		Lease    string `json:"lease"`
		AtMs     int64  `json:"at_ms"`
		Answered bool   `json:"answered"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&req); err != nil {
		httpapi.WriteError(w, http.StatusBadRequest, "body must be JSON: "+err.Error())
		return
	}
	switch action := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]; action {
	case "acquire":
		if req.ShardID == nil || *req.ShardID < 0 {
			httpapi.WriteError(w, http.StatusBadRequest, "acquire needs shard_id")
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), q.poll)
		defer cancel()
		turn, err := q.limiter.Acquire(ctx, *req.ShardID)
		if err == nil {
			// A grant means "send now": the queue waits out the window itself.
			if err = ctxsleep.Sleep(ctx, time.Until(turn.NotBefore)); err != nil {
				turn.Release(false)
			}
		}
		if err != nil {
			w.WriteHeader(http.StatusNoContent) // nothing yet (or the caller left): ask again
			return
		}
		release := turn.Release
		if r.Context().Err() != nil {
			release(false) // the caller left while we granted
			return
		}
		// Until told otherwise, the grant is the send: the caller sends at once.
		q.limiter.Sent(*req.ShardID, time.Now())
		id := newLeaseID()
		l := &lease{shard: *req.ShardID, release: release}
		q.mu.Lock()
		q.leases[id] = l
		l.timer = time.AfterFunc(q.ttl, func() {
			q.log.Warn("identify lease expired; releasing its bucket", zap.Int("shard", l.shard))
			q.drop(id, false)
		})
		q.mu.Unlock()
		httpapi.WriteJSON(w, http.StatusOK, map[string]any{"lease": id, "ttl_ms": q.ttl.Milliseconds()})
	case "sent":
		q.mu.Lock()
		l := q.leases[req.Lease]
		q.mu.Unlock()
		if l == nil {
			httpapi.WriteError(w, http.StatusNotFound, "no such lease (expired?)")
			return
		}
		q.limiter.Sent(l.shard, time.UnixMilli(req.AtMs))
		w.WriteHeader(http.StatusNoContent)
	case "release":
		if !q.drop(req.Lease, req.Answered) {
			httpapi.WriteError(w, http.StatusNotFound, "no such lease (expired?)")
			return
		}
		w.WriteHeader(http.StatusNoContent)
	default:
		httpapi.WriteError(w, http.StatusNotFound, "unknown identify queue call "+action)
	}
}

func (q *Queue) drop(id string, answered bool) bool {
	q.mu.Lock()
	l := q.leases[id]
	delete(q.leases, id)
	q.mu.Unlock()
	if l == nil {
		return false
	}
	l.timer.Stop()
	l.release(answered)
	return true
}

func newLeaseID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
