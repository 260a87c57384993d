package shard

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/ddhq/dd/discord"
	"github.com/ddhq/dd/identify"
)

// GatewayBot is Discord's answer to GET /gateway/bot.
type GatewayBot struct {
	URL               string                     `json:"url"`
	Shards            int                        `json:"shards"`
	SessionStartLimit identify.SessionStartLimit `json:"-"`
}

// FetchGatewayBot asks apiURL (Discord's API base, or dd's rest role) for the gateway URL, the
// recommended shard count and the identify budget.
func FetchGatewayBot(ctx context.Context, client *http.Client, apiURL string, apiVersion int, auth string) (GatewayBot, error) {
	u := fmt.Sprintf("%s/v%d/gateway/bot", strings.TrimRight(apiURL, "/"), apiVersion)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return GatewayBot{}, err
	}
	req.Header.Set("Authorization", auth)
	req.Header.Set("User-Agent", discord.UserAgent)
	resp, err := client.Do(req)
	if err != nil {
		return GatewayBot{}, fmt.Errorf("GET /gateway/bot: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return GatewayBot{}, &HTTPError{Status: resp.StatusCode, Body: string(body)}
	}
	var raw struct {
		URL               string `json:"url"`
		Shards            int    `json:"shards"`
		SessionStartLimit struct {
			Total          int   `json:"total"`
			Remaining      int   `json:"remaining"`
			ResetAfter     int64 `json:"reset_after"`
			MaxConcurrency int   `json:"max_concurrency"`
		} `json:"session_start_limit"`
	}
	if err := json.Unmarshal(body, &raw); err != nil || raw.URL == "" {
		return GatewayBot{}, fmt.Errorf("GET /gateway/bot: unexpected answer %q", body)
	}
	l := raw.SessionStartLimit
	return GatewayBot{URL: raw.URL, Shards: raw.Shards, SessionStartLimit: identify.SessionStartLimit{Total: l.Total,
		Remaining: l.Remaining, ResetAfter: time.Duration(l.ResetAfter) * time.Millisecond, MaxConcurrency: l.MaxConcurrency}}, nil
}

// HTTPError is a non-200 answer.
type HTTPError struct {
	Status int
	Body   string
}

func (e *HTTPError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.Status, e.Body) }
