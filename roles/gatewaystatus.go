package roles

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/ddhq/dd/gateway"
	"github.com/ddhq/dd/internal/httpapi"
)

// ---- the gateway's HTTP API (README, "The gateway role") ----

func (g *gatewayRole) routes() http.Handler {
	mux := http.NewServeMux()
	cmds := shardCommands{shards: g.shardSet, log: g.log}
	mux.HandleFunc("POST /{$}", cmds.handleDiscordeno)
	mux.HandleFunc("POST /shards/{id}/send", cmds.handleShardSend)
	mux.HandleFunc("GET /status", g.handleStatus)
	mux.HandleFunc("POST /reshard", g.handleReshard)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteError(w, http.StatusNotFound, fmt.Sprintf("no gateway endpoint %s %s", r.Method, r.URL.Path))
	})
	return mux
}

// ShardStatus is one shard in GET /status.
type ShardStatus struct {
	ID        int     `json:"id"`
	State     string  `json:"state"`
	RTTMillis float64 `json:"rtt_ms"`
	Guilds    int     `json:"guilds"`
	Loading   int     `json:"loading_guilds"`
	Resumable bool    `json:"resumable"`
	Queued    int     `json:"queued_events"`
}

// StatusSummary is /status at a glance: what a person or a probe of a 1,000-shard process reads first.
type StatusSummary struct {
	Shards  int            `json:"shards"`
	States  map[string]int `json:"states"` // shards by state
	Guilds  int            `json:"guilds"`
	Loading int            `json:"loading_guilds"`
	Queued  int            `json:"queued_events"`
	MaxRTT  float64        `json:"max_rtt_ms"`
}

// handleStatus answers every shard's line (the contract) and a summary; ?shards=false leaves the lines
// out, for probes of processes with many shards.
func (g *gatewayRole) handleStatus(w http.ResponseWriter, r *http.Request) {
	lines := r.URL.Query().Get("shards") != "false"
	out := map[string]any{"queue_depth": g.q.Depth(), "reshard": g.gw.ReshardStatus()}
	cur := g.gw.Current()
	if cur == nil {
		out["summary"], out["total_shards"] = StatusSummary{States: map[string]int{}}, 0
		if lines {
			out["shards"] = []ShardStatus{}
		}
		httpapi.WriteJSON(w, http.StatusOK, out)
		return
	}
	shards := shardStatuses(cur, g.q.ShardDepths())
	out["summary"], out["total_shards"] = summarize(shards), cur.Total()
	if lines {
		out["shards"] = shards
	}
	out["filtered_events"] = cur.Filtered()
	if next := g.gw.Next(); next != nil {
		nextShards := shardStatuses(next, nil)
		out["next_summary"], out["next_total_shards"] = summarize(nextShards), next.Total()
		if lines {
			out["next_shards"] = nextShards
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
}

func summarize(shards []ShardStatus) StatusSummary {
	s := StatusSummary{Shards: len(shards), States: map[string]int{}}
	for _, sh := range shards {
		s.States[sh.State]++
		s.Guilds += sh.Guilds
		s.Loading += sh.Loading
		s.Queued += sh.Queued
		s.MaxRTT = max(s.MaxRTT, sh.RTTMillis)
	}
	return s
}

func shardStatuses(set *gateway.Set, depths map[int]int) []ShardStatus {
	out := make([]ShardStatus, 0, len(set.IDs()))
	for _, s := range set.Manager().Shards() {
		guilds, loading := set.Guilds(s.ID())
		out = append(out, ShardStatus{ID: s.ID(), State: s.State().String(),
			RTTMillis: float64(s.RTT().Microseconds()) / 1000, Guilds: guilds,
			Loading: loading, Resumable: s.Session().Resumable(), Queued: depths[s.ID()]})
	}
	return out
}

// handleReshard serves POST /reshard [{"total_shards": N}].
func (g *gatewayRole) handleReshard(w http.ResponseWriter, r *http.Request) {
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
		if err := gateway.CheckCount(*body.TotalShards, 0); err != nil {
			httpapi.WriteError(w, http.StatusBadRequest, err.Error())
			return
		}
		to = *body.TotalShards
	}
	started, err := g.gw.Reshard(r.Context(), to, "requested with POST /reshard")
	if err != nil {
		status := http.StatusUnprocessableEntity
		msg := "reshard not started: " + err.Error()
		var re *gateway.ReshardError
		switch {
		case errors.Is(err, gateway.ErrNotStarted):
			status, msg = http.StatusServiceUnavailable, err.Error()
		case errors.Is(err, gateway.ErrBusy):
			status, msg = http.StatusConflict, err.Error()
		case errors.As(err, &re) && re.Reason == gateway.BadCount:
			status = http.StatusBadRequest
		case errors.As(err, &re) && re.Reason == gateway.Unreachable:
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
