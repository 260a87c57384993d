// Package botsim is a stand-in for a bot's event endpoint: it receives dd's event deliveries
// (README, "The gateway role"), checks their envelope and Authorization, and records what arrived so that tests can
// prove nothing was lost and order was kept. It can play a bot that is down. It is for tests and the demo,
// not for production.
package botsim

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"

	"github.com/ddhq/dd/internal/httpapi"
	"github.com/ddhq/dd/internal/rawjson"
)

// Receiver records deliveries. Its zero value is not usable; call New.
type Receiver struct {
	srv    *httptest.Server
	secret string
	down   atomic.Bool
	count  atomic.Int64 // events received, for cheap polling

	mu       sync.Mutex
	seqs     map[int][]int64 // per shard, in arrival order
	ids      map[string]int  // X-DD-Event-Id -> deliveries
	types    map[string]int
	badAuth  int
	invalid  []string
	requests int
	// OnEvent, if set, sees every delivered event (under the receiver's lock: keep it quick).
	OnEvent func(shard int, payload json.RawMessage)
}

// New starts a receiver on loopback that expects Authorization: secret ("" expects none).
func New(secret string) *Receiver {
	r := &Receiver{secret: secret, seqs: map[int][]int64{}, ids: map[string]int{}, types: map[string]int{}}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	return r
}

// URL is where dd should deliver (events.urls).
func (r *Receiver) URL() string { return r.srv.URL }

// Close stops the receiver.
func (r *Receiver) Close() { r.srv.Close() }

// SetDown makes the receiver answer 503, as a bot that is restarting would.
func (r *Receiver) SetDown(down bool) { r.down.Store(down) }

func (r *Receiver) serve(w http.ResponseWriter, req *http.Request) {
	if r.down.Load() {
		http.Error(w, "bot restarting", http.StatusServiceUnavailable)
		return
	}
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return
	}
	// Decoded without a full parse: in benchmarks this receiver shares dd's cores, so it should cost little.
	envs, err := httpapi.DecodeEnvelopes(body)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests++
	if req.Header.Get("Authorization") != r.secret {
		r.badAuth++
		http.Error(w, "wrong secret", http.StatusUnauthorized)
		return
	}
	if err != nil || req.Header.Get("X-DD-Event-Id") == "" || req.Header.Get("Content-Type") != "application/json" {
		r.invalid = append(r.invalid, fmt.Sprintf("%v: %.200s", err, body))
		http.Error(w, "bad envelope", http.StatusBadRequest)
		return
	}
	for _, env := range envs {
		op, _ := rawjson.Int(rawjson.Field(env.Payload, "op"))
		seq, _ := rawjson.Int(rawjson.Field(env.Payload, "s"))
		t, _ := rawjson.String(rawjson.Field(env.Payload, "t"))
		if op != 0 || seq == 0 {
			r.invalid = append(r.invalid, fmt.Sprintf("payload %.200s", env.Payload))
			continue
		}
		r.count.Add(1)
		r.seqs[env.ShardID] = append(r.seqs[env.ShardID], seq)
		r.types[t]++
		if r.OnEvent != nil {
			r.OnEvent(env.ShardID, env.Payload)
		}
	}
	r.ids[req.Header.Get("X-DD-Event-Id")]++
	w.WriteHeader(http.StatusNoContent)
}

// Count is how many events arrived (duplicates included); cheap enough to poll.
func (r *Receiver) Count() int { return int(r.count.Load()) }

// Complete reports whether shard received every sequence from 1 to last (duplicates allowed) and
// whether each first arrival came in order.
func (r *Receiver) Complete(shard int, last int64) (all, ordered bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := map[int64]bool{}
	ordered = true
	var high int64
	for _, s := range r.seqs[shard] {
		if s < high && !seen[s] {
			ordered = false
		}
		seen[s] = true
		high = max(high, s)
	}
	for s := int64(1); s <= last; s++ {
		if !seen[s] {
			return false, ordered
		}
	}
	return true, ordered
}

// Stats summarises what arrived.
type Stats struct {
	Requests   int
	Events     int
	Duplicates int // events delivered more than once (same shard and seq)
	BadAuth    int
	Invalid    []string
	Types      map[string]int
}

// Stats returns a snapshot.
func (r *Receiver) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := Stats{Requests: r.requests, BadAuth: r.badAuth, Invalid: append([]string(nil), r.invalid...), Types: map[string]int{}}
	for k, v := range r.types {
		st.Types[k] = v
	}
	for _, seqs := range r.seqs {
		seen := map[int64]bool{}
		for _, s := range seqs {
			st.Events++
			if seen[s] {
				st.Duplicates++
			}
			seen[s] = true
		}
	}
	return st
}
