package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/ddhq/dd/internal/httpapi"
)

// Coordinator agrees on one shard count among the processes of a split deployment (Config.Processes
// above 1): any process may raise the target, every process follows it. Because processes own shards by
// shard_id % Processes and the new count is a multiple of the old, every guild stays in the same process
// across the reshard, so each process's own switch keeps the no-loss, no-repeat promise.
type Coordinator interface {
	// Target raises the deployment's target to propose when that is higher (0 only asks), and returns
	// the target.
	Target(ctx context.Context, propose int) (int, error)
}

// CoordinatorPath is where dd's rest role serves the coordinator (CoordinatorServer).
const CoordinatorPath = "/dd/v1/reshard"

// CoordinatorServer holds a split deployment's target shard count in memory and serves it over HTTP at
// CoordinatorPath: GET answers {"total_shards":N}; POST {"total_shards":N} raises it first. Processes
// propose their own count on every poll, so a restarted server learns the count back.
type CoordinatorServer struct {
	Secret string
	// MaxConcurrency is the bot's identify concurrency when known (0 before), so that a target Discord
	// would refuse is not stored.
	MaxConcurrency func() int
	Logger         *zap.Logger

	mu     sync.Mutex
	target int
}

func (c *CoordinatorServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !httpapi.SecretMatches(r.Header.Get("Authorization"), c.Secret) {
		httpapi.Unauthorized(w, r)
		return
	}
	switch r.Method {
	case http.MethodGet:
	case http.MethodPost:
		var body struct {
			TotalShards int `json:"total_shards"`
		}
		if err := httpapi.DecodeBody(w, r, 4096, &body); err != nil {
			httpapi.WriteError(w, http.StatusBadRequest, `body must be {"total_shards": N}: `+err.Error())
			return
		}
		mc := 0
		if c.MaxConcurrency != nil {
			mc = c.MaxConcurrency()
		}
		// Checked before it is stored: every split gateway polls the target and would try to follow it.
		if err := CheckCount(body.TotalShards, mc); err != nil {
			if c.Logger != nil {
				c.Logger.Warn("reshard target refused", zap.Int("total_shards", body.TotalShards), zap.Error(err))
			}
			httpapi.WriteError(w, http.StatusBadRequest, err.Error())
			return
		}
		c.mu.Lock()
		c.target = max(c.target, body.TotalShards)
		c.mu.Unlock()
	default:
		httpapi.WriteError(w, http.StatusMethodNotAllowed, "GET or POST")
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"total_shards": c.target})
}

// CoordinatorClient asks a CoordinatorServer at URL (the rest role's base URL) with Secret.
type CoordinatorClient struct {
	URL, Secret string
}

// Target implements Coordinator.
func (c CoordinatorClient) Target(ctx context.Context, propose int) (int, error) {
	method, body := http.MethodGet, []byte(nil)
	if propose > 0 {
		method, body = http.MethodPost, fmt.Appendf(nil, `{"total_shards":%d}`, propose)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.URL, "/")+CoordinatorPath, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", c.Secret)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return 0, fmt.Errorf("%s %s answered %s: %s", method, CoordinatorPath, resp.Status, bytes.TrimSpace(msg))
	}
	var out struct {
		TotalShards int `json:"total_shards"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&out); err != nil {
		return 0, err
	}
	return out.TotalShards, nil
}
