package gateway

import (
	"errors"
	"net/http"

	"github.com/ddhq/dd/internal/httpapi"
	"github.com/ddhq/dd/internal/shardstatus"
)

// Depths is what GET /status reports of the queue: the events waiting for the bot, in all and by
// shard. A *queue.Queue is one.
type Depths interface {
	Depth() int
	ShardDepths() map[int]int
}

// NewHandler serves g's HTTP API (README, "The gateway role"): the shard command endpoints
// (CommandHandler) on the running set, GET /status with q's depths, and POST /reshard. It does not check
// who asks (the caller wraps it in its secret check) and does not listen (the role's server does).
func NewHandler(g *Gateway, q Depths) http.Handler {
	mux := http.NewServeMux()
	h := statusHandler{g: g, q: q}
	mux.HandleFunc("GET /status", h.handleStatus)
	mux.HandleFunc("POST /reshard", h.handleReshard)
	mux.Handle("/", CommandHandler(func() ShardSet {
		if cur := g.Current(); cur != nil {
			return cur.Manager()
		}
		return nil
	}, g.log))
	return mux
}

type statusHandler struct {
	g *Gateway
	q Depths
}

// ShardStatus is one shard in GET /status.
type ShardStatus = shardstatus.Line

// StatusSummary is /status at a glance: what a person or a probe of a 1,000-shard process reads first.
type StatusSummary = shardstatus.Summary

// handleStatus answers every shard's line (the contract) and a summary; ?shards=false leaves the lines
// out, for probes of processes with many shards.
func (h statusHandler) handleStatus(w http.ResponseWriter, r *http.Request) {
	lines := r.URL.Query().Get("shards") != "false"
	out := map[string]any{"queue_depth": h.q.Depth(), "reshard": h.g.ReshardStatus()}
	cur := h.g.Current()
	if cur == nil {
		out["summary"], out["total_shards"] = shardstatus.Summarize(nil), 0
		if lines {
			out["shards"] = []ShardStatus{}
		}
		httpapi.WriteJSON(w, http.StatusOK, out)
		return
	}
	shards := shardStatuses(cur, h.q.ShardDepths())
	out["summary"], out["total_shards"] = shardstatus.Summarize(shards), cur.Total()
	if lines {
		out["shards"] = shards
	}
	out["filtered_events"] = cur.Filtered()
	if next := h.g.Next(); next != nil {
		nextShards := shardStatuses(next, nil)
		out["next_summary"], out["next_total_shards"] = shardstatus.Summarize(nextShards), next.Total()
		if lines {
			out["next_shards"] = nextShards
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
}

func shardStatuses(set *Set, depths map[int]int) []ShardStatus {
	out := make([]ShardStatus, 0, len(set.IDs()))
	for _, s := range set.Manager().Shards() {
		guilds, loading := set.Guilds(s.ID())
		out = append(out, shardstatus.Of(s, guilds, loading, depths[s.ID()]))
	}
	return out
}

// handleReshard serves POST /reshard [{"total_shards": N}].
func (h statusHandler) handleReshard(w http.ResponseWriter, r *http.Request) {
	var body struct {
		TotalShards *int `json:"total_shards"`
	}
	if r.ContentLength != 0 {
		if err := httpapi.DecodeBody(w, r, 4096, &body); err != nil {
			httpapi.WriteError(w, http.StatusBadRequest, "body must be empty or {\"total_shards\": N}: "+err.Error())
			return
		}
	}
	to := 0 // Discord's recommendation
	if body.TotalShards != nil {
		if err := CheckCount(*body.TotalShards, 0); err != nil {
			httpapi.WriteError(w, http.StatusBadRequest, err.Error())
			return
		}
		to = *body.TotalShards
	}
	started, err := h.g.Reshard(r.Context(), to, "requested with POST /reshard")
	if err != nil {
		status := http.StatusUnprocessableEntity
		msg := "reshard not started: " + err.Error()
		var re *ReshardError
		switch {
		case errors.Is(err, ErrNotStarted):
			status, msg = http.StatusServiceUnavailable, err.Error()
		case errors.Is(err, ErrBusy):
			status, msg = http.StatusConflict, err.Error()
		case errors.As(err, &re) && re.Reason == BadCount:
			status = http.StatusBadRequest
		case errors.As(err, &re) && re.Reason == Unreachable:
			status, msg = http.StatusBadGateway, err.Error()
		}
		httpapi.WriteError(w, status, msg)
		return
	}
	if started.Requested {
		httpapi.WriteJSON(w, http.StatusAccepted, map[string]any{"status": "requested", "from": started.From, "to": started.To,
			"progress": "every gateway process follows the rest role's target; GET /status on each shows it under reshard"})
		return
	}
	httpapi.WriteJSON(w, http.StatusAccepted, map[string]any{"status": "started", "from": started.From, "to": started.To,
		"progress": "GET /status shows it under reshard"})
}
