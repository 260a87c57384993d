package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/ddhq/dd/internal/ctxsleep"
	"github.com/ddhq/dd/shard"
)

// GatewayBotFrom is a Config.GatewayBot: it asks apiURL (Discord's API, or dd's rest role at
// "<rest.url>/api") for /gateway/bot with auth ("Bot <token>", or the rest role's secret). Network
// trouble and Discord's errors are retried with backoff up to a minute; a refused token is a
// *FatalError. It returns nil, nil when ctx ends first.
func GatewayBotFrom(apiURL string, apiVersion int, auth string, log *zap.Logger) func(ctx context.Context) (*shard.GatewayBot, error) {
	if log == nil {
		log = zap.NewNop()
	}
	apiURL = strings.TrimRight(apiURL, "/")
	client := &http.Client{Timeout: 15 * time.Second}
	return func(ctx context.Context) (*shard.GatewayBot, error) {
		backoff := time.Second
		for {
			info, err := shard.FetchGatewayBot(ctx, client, apiURL, apiVersion, auth)
			if err == nil {
				return &info, nil
			}
			if he, ok := errors.AsType[*shard.HTTPError](err); ok && he.Status == http.StatusUnauthorized {
				return nil, &FatalError{Err: fmt.Errorf("GET /gateway/bot: %w", err),
					Hint: "Discord refused the token: set discord.token to the bot token from the developer portal"}
			}
			log.Warn("cannot get the gateway URL yet; retrying", zap.Error(err), zap.Duration("after", backoff))
			if ctxsleep.Sleep(ctx, backoff) != nil {
				return nil, nil
			}
			backoff = min(backoff*2, time.Minute)
		}
	}
}
