package roles

import (
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/ddhq/dd/config"
	"github.com/ddhq/dd/discord"
	"github.com/ddhq/dd/ratelimit"
	"github.com/ddhq/dd/restproxy"
)

// newRest builds the rest role's handler from the config.
func newRest(cfg *config.Config, reg prometheus.Registerer, log *zap.Logger) (*restproxy.Proxy, error) {
	r := cfg.Rest
	retries := r.MaxRetries
	if retries == 0 {
		retries = -1 // restproxy reads 0 as "the default"; the config's 0 means none
	}
	return restproxy.New(restproxy.Options{
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
		Limits: ratelimit.Options{
			GlobalRate:          r.GlobalRateLimit,
			InvalidRequestLimit: r.InvalidRequestLimit,
		},
		Registerer: reg,
		Logger:     log.Named("rest"),
	})
}
