package roles

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/ddhq/dd/cluster"
	"github.com/ddhq/dd/config"
	"github.com/ddhq/dd/discord"
	"github.com/ddhq/dd/gateway"
	"github.com/ddhq/dd/identify"
	"github.com/ddhq/dd/ratelimit"
	"github.com/ddhq/dd/restproxy"
	"github.com/ddhq/dd/shard"
)

// identifyLimits reads the bot's identify limits from Discord for the identify queue the rest role
// serves; a refused token is fatal.
func identifyLimits(cfg *config.Config) func(ctx context.Context) (identify.SessionStartLimit, bool, error) {
	client := &http.Client{Timeout: 15 * time.Second}
	return func(ctx context.Context) (identify.SessionStartLimit, bool, error) {
		info, err := shard.FetchGatewayBot(ctx, client, cfg.Discord.APIURL, cfg.Discord.APIVersion, "Bot "+cfg.Discord.Token)
		if he, ok := errors.AsType[*shard.HTTPError](err); ok && he.Status == http.StatusUnauthorized {
			return identify.SessionStartLimit{}, false, &FatalError{Err: err,
				Hint: "Discord refused the token: set discord.token to the bot token from the developer portal"}
		}
		return info.SessionStartLimit, true, err
	}
}

// restRoutes serves the identify queue and the reshard coordinator that split gateway processes share
// beside the rest role's API. The identify queue authenticates first: its first request makes the rest
// role ask Discord for /gateway/bot, which no stranger may cause.
func restRoutes(secret string, ids *identify.Server, coord *gateway.CoordinatorServer, api http.Handler) http.Handler {
	queue := requireSecret(secret, ids)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, identify.QueuePath):
			queue.ServeHTTP(w, r)
		case r.URL.Path == gateway.CoordinatorPath:
			coord.ServeHTTP(w, r)
		default:
			api.ServeHTTP(w, r)
		}
	})
}

// newRest builds the rest role's handler from the config.
func newRest(cfg *config.Config, reg prometheus.Registerer, log *zap.Logger) (*restproxy.Proxy, error) {
	r := cfg.Rest
	retries := r.MaxRetries
	if retries == 0 {
		retries = -1 // restproxy reads 0 as "the default"; the config's 0 means none
	}
	var cl *restproxy.Cluster
	if cfg.Cluster.NATSURL != "" {
		var err error
		if cl, err = restCluster(cfg, log); err != nil {
			return nil, err
		}
	}
	p, err := restproxy.New(restproxy.Options{
		Token:           cfg.Discord.Token,
		Secret:          r.Secret,
		SecretHeader:    r.SecretHeader,
		AllowAnyToken:   r.AllowAnyToken,
		APIURL:          cfg.Discord.APIURL,
		APIVersion:      cfg.Discord.APIVersion,
		UserAgent:       discord.UserAgent,
		MaxBody:         r.MaxBody,
		SpoolDir:        r.SpoolDir,
		MaxWait:         r.MaxWait,
		MaxRetries:      retries,
		UpstreamTimeout: r.UpstreamTimeout,
		Cluster:         cl,
		Limits: ratelimit.Options{
			GlobalRate:          r.GlobalRateLimit,
			InvalidRequestLimit: r.InvalidRequestLimit,
		},
		Registerer: reg,
		Logger:     log.Named("rest"),
	})
	if err != nil && cl != nil {
		cl.Close()
	}
	return p, err
}

// restCluster connects the rest role to NATS (cluster mode): one election per token, in the leases
// bucket, publishing this process's advertise_url while it leads.
func restCluster(cfg *config.Config, log *zap.Logger) (*restproxy.Cluster, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := cluster.Connect(ctx, clusterOptions(cfg, log))
	if err != nil {
		return nil, fmt.Errorf("cluster.nats_url: %w", err)
	}
	cl, err := restproxy.NATSCluster(conn, cfg.Cluster.LeaseTTL, cfg.Cluster.AdvertiseURL, log)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("cluster.lease_ttl: %w", err)
	}
	return cl, nil
}
