package roles

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/ddhq/dd/cluster"
	"github.com/ddhq/dd/config"
	"github.com/ddhq/dd/gateway"
	"github.com/ddhq/dd/internal/httpapi"
	"github.com/ddhq/dd/shard"
)

// clusterGateway is the gateway role in cluster mode (cluster.nats_url set; PRODUCT.md §7): a
// cluster.Gateway built from the config, and its HTTP API. The bot's events go to events.urls from the
// stream, and with --role=all the in-process cache follows the stream with its own durable consumer.
//
// POST /reshard (and gateway.reshard's trigger) reshards the whole deployment: any process writes the
// reshard into the target bucket and every process follows it (cluster/reshard.go). Not in cluster mode
// (refused by the config): events.sink "redis", cache.request_members, gateway.clusters.
type clusterGateway struct {
	*cluster.Gateway
	api http.Handler
}

// clusterOptions is the NATS connection of cluster mode, from the config.
func clusterOptions(cfg *config.Config, log *zap.Logger) cluster.Options {
	c := cfg.Cluster
	return cluster.Options{URL: c.NATSURL, Name: c.Name, Instance: c.Instance, Replicas: c.Replicas,
		CredsFile: c.NATSCreds, TLSCAFile: c.NATSTLSCA, Log: log.Named("cluster")}
}

// newClusterGateway connects to NATS (failing when no server answers) and prepares the role; run starts
// the shards.
func newClusterGateway(cfg *config.Config, reg prometheus.Registerer, log *zap.Logger, identifyWin time.Duration) (*clusterGateway, error) {
	log = log.Named("gateway")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := cluster.Connect(ctx, clusterOptions(cfg, log))
	if err != nil {
		return nil, fmt.Errorf("cluster.nats_url: %w", err)
	}
	if len(cfg.Events.URLs) == 0 {
		log.Info("events.urls is empty: events stay in the stream "+cluster.StreamName(conn.Name())+" for the bot to read",
			zap.String("instance", conn.Instance()))
	}
	gw := cfg.Gateway
	var fixed func(total int) []int // nil: the processes share every shard
	if gw.FirstShard != 0 || gw.LastShard != -1 {
		fixed = gateway.ShardRange(gw.FirstShard, gw.LastShard)
	}
	apiURL, auth := gatewayBotAPI(cfg)
	cg, err := cluster.NewGateway(cluster.GatewayConfig{
		Conn:        conn,
		GatewayBot:  gateway.GatewayBotFrom(apiURL, cfg.Discord.APIVersion, auth, log.With(zap.String("instance", conn.Instance()))),
		TotalShards: gw.TotalShards, CheckCount: func(total int) error { return gateway.CheckCount(total, 0) }, Shards: fixed,
		Shard: shard.Config{Token: cfg.Discord.Token, Intents: int(gw.Intents), APIVersion: cfg.Discord.APIVersion,
			Compress: gw.Compress, LargeThreshold: gw.LargeThreshold},
		Filter: cluster.Filter{Drop: cfg.Events.Drop, DedupMessageUpdates: gw.DedupMessageUpdates,
			DropKnownGuildCreates: gw.DropKnownGuildCreates, LoadingGuildEvent: gw.LoadingGuildEvent},
		IdentifyWindow: identifyWin, LeaseTTL: cfg.Cluster.LeaseTTL, MaxEvents: int64(cfg.Events.MaxQueueEvents),
		Delivery: cluster.DeliveryConfig{URLs: cfg.Events.URLs, Secret: cfg.Events.Secret, BatchMax: cfg.Events.BatchMax},
		Reshard:  gw.Reshard, ReshardPercentage: gw.ReshardPercentage, ReshardEvery: gw.ReshardCheckInterval,
		IdentifyReserve: gw.ReshardIdentifyReserve, CountFor: gateway.NewShardCount, CheckTarget: gateway.CheckCount,
		Registerer: reg, Logger: log,
	})
	if err != nil {
		conn.Close()
		return nil, err
	}
	g := &clusterGateway{Gateway: cg}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", g.handleStatus)
	mux.HandleFunc("POST /reshard", g.handleReshard)
	mux.Handle("/", gateway.CommandHandler(g.shardSet, log)) // and 404 for the rest
	g.api = requireSecret(cfg.Gateway.Secret, withProfiles(mux))
	return g, nil
}

func (g *clusterGateway) ServeHTTP(w http.ResponseWriter, r *http.Request) { g.api.ServeHTTP(w, r) }

// run runs the shards until ctx ends (cluster.Gateway.Run); a *FatalError means no shard can run.
func (g *clusterGateway) run(ctx context.Context) error {
	err := g.Run(ctx)
	if fe, ok := errors.AsType[*cluster.FatalError](err); ok {
		return &FatalError{Err: fe.Err, Hint: fe.Hint}
	}
	return err
}

// shardSet is the shards this process runs, nil before they start.
func (g *clusterGateway) shardSet() gateway.ShardSet {
	if r := g.Running(); r != nil {
		return r
	}
	return nil
}

// handleStatus answers the deployment as this process sees it (its processes, each shard's owner) and
// the shards this process runs; ?shards=false leaves the per-shard lines out.
func (g *clusterGateway) handleStatus(w http.ResponseWriter, r *http.Request) {
	lines := r.URL.Query().Get("shards") != "false"
	st := g.Status()
	out := map[string]any{"cluster": st.Cluster, "instance": st.Instance, "nats_connected": st.NATSConnected,
		"total_shards": st.TotalShards, "processes": st.Processes, "reshard": st.Reshard}
	summary := map[string]any{"shards": len(st.Shards), "states": st.States}
	if st.Started {
		summary["guilds"], summary["loading_guilds"], summary["queued_events"], summary["max_rtt_ms"] = st.Guilds, st.Loading, st.Queued, st.MaxRTT
		out["free_shards"], out["queue_depth"], out["filtered_events"] = st.Free, st.Queued, st.Filtered
		out["published_events"], out["duplicate_events"] = st.Published, st.Duplicates
	}
	out["summary"] = summary
	if lines {
		out["owners"], out["shards"] = st.Owners, st.Shards
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
}

// handleReshard serves POST /reshard [{"total_shards": N}] in cluster mode: the whole deployment moves to
// N (0 or no body: Discord's recommendation), with the answers of one machine's (202, 409 while one
// runs, 400 for a count dd cannot run or a fixed first_shard/last_shard, 422 for one that would hurt,
// 502 when Discord or NATS did not answer).
func (g *clusterGateway) handleReshard(w http.ResponseWriter, r *http.Request) {
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
	if body.TotalShards != nil && *body.TotalShards != 0 {
		if err := gateway.CheckCount(*body.TotalShards, 0); err != nil {
			httpapi.WriteError(w, http.StatusBadRequest, err.Error())
			return
		}
		to = *body.TotalShards
	}
	from, to, err := g.Reshard(r.Context(), to, "requested with POST /reshard")
	if err != nil {
		status, msg := http.StatusUnprocessableEntity, "reshard not started: "+err.Error()
		re, isRe := errors.AsType[*cluster.ReshardError](err)
		switch {
		case errors.Is(err, cluster.ErrNotStarted):
			status, msg = http.StatusServiceUnavailable, err.Error()
		case errors.Is(err, cluster.ErrReshardBusy):
			status, msg = http.StatusConflict, err.Error()
		case isRe && re.Reason == cluster.ReshardBadCount:
			status = http.StatusBadRequest
		case isRe && re.Reason == cluster.ReshardUnreachable:
			status, msg = http.StatusBadGateway, err.Error()
		}
		httpapi.WriteError(w, status, msg)
		return
	}
	httpapi.WriteJSON(w, http.StatusAccepted, map[string]any{"status": "started", "from": from, "to": to,
		"progress": "every gateway process of the deployment follows it; GET /status on any shows it under reshard"})
}

// clusterCacheFollower is the cache role's feed in cluster mode without a gateway in the process: its
// own durable consumer of the stream ("dd-cache-<instance>"), so that several cache processes each hold
// every event. It connects to NATS (retrying until it can) and follows until ctx ends.
func clusterCacheFollower(cfg *config.Config, apply func(payloads ...[]byte) error, log *zap.Logger) func(context.Context) error {
	log = log.Named("cache")
	return func(ctx context.Context) error {
		return cluster.FollowConnecting(ctx, clusterOptions(cfg, log), cluster.FollowConfig{Log: log},
			func(p [][]byte) error { return apply(p...) })
	}
}
