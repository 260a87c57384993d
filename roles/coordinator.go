package roles

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
	"github.com/ddhq/dd/reshard"
)

// reshardCoordinatorPath is where the rest role keeps the shard count that split gateway processes move to
// together.
const reshardCoordinatorPath = "/dd/v1/reshard"

// reshardCoordinator holds a split deployment's target shard count. Any gateway process may raise it
// (POST, from its own POST /reshard or periodic check); every process polls it (POST of its own count, so
// that a restarted rest role learns the count back) and reshards its own shards to it. Because processes own shards by shard_id % clusters and the new count is a multiple of
// the old, every guild stays in the same process across the reshard, so each process's switch alone
// keeps the no-loss, no-repeat promise.
type reshardCoordinator struct {
	secret string
	// maxConcurrency is the bot's identify concurrency when the rest role knows it (0 before), so that a
	// target Discord would refuse is not stored.
	maxConcurrency func() int
	log            *zap.Logger
	mu             sync.Mutex
	target         int
}

func (c *reshardCoordinator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !httpapi.SecretMatches(r.Header.Get("Authorization"), c.secret) {
		unauthorized(w, r)
		return
	}
	switch r.Method {
	case http.MethodGet:
	case http.MethodPost:
		var body struct {
			TotalShards int `json:"total_shards"`
		}
		if err := decodeBody(w, r, 4096, &body); err != nil {
			httpapi.WriteError(w, http.StatusBadRequest, `body must be {"total_shards": N}: `+err.Error())
			return
		}
		mc := 0
		if c.maxConcurrency != nil {
			mc = c.maxConcurrency()
		}
		// Checked before it is stored: every split gateway polls the target and would try to follow it.
		if err := reshard.CheckCount(body.TotalShards, mc); err != nil {
			if c.log != nil {
				c.log.Warn("reshard target refused", zap.Int("total_shards", body.TotalShards), zap.Error(err))
			}
			httpapi.WriteError(w, http.StatusBadRequest, err.Error())
			return
		}
		c.mu.Lock()
		if body.TotalShards > c.target {
			c.target = body.TotalShards
		}
		c.mu.Unlock()
	default:
		httpapi.WriteError(w, http.StatusMethodNotAllowed, "GET or POST")
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"total_shards": c.target})
}

// coordinatorCall asks the rest role's coordinator (GET when propose is 0, else POST propose) and returns
// its target.
func (g *gatewayRole) coordinatorCall(ctx context.Context, propose int) (int, error) {
	method, body := http.MethodGet, []byte(nil)
	if propose > 0 {
		method, body = http.MethodPost, []byte(fmt.Sprintf(`{"total_shards":%d}`, propose))
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(g.cfg.Rest.URL, "/")+reshardCoordinatorPath, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", g.cfg.Rest.Secret)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var out struct {
		TotalShards int `json:"total_shards"`
	}
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return 0, fmt.Errorf("reshard coordinator answered %s: %s", resp.Status, bytes.TrimSpace(msg))
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&out); err != nil {
		return 0, err
	}
	return out.TotalShards, nil
}

// followCoordinator reshards this process whenever the deployment's target rises above its count. Each
// poll proposes the process's own count, so a restarted rest role (which keeps the target in memory only)
// learns the deployment's count back from its processes within one poll.
func (g *gatewayRole) followCoordinator(ctx context.Context, every time.Duration) {
	g.everyWhileSettled(ctx, every, func(cur *generation) {
		target, err := g.coordinatorCall(ctx, cur.total)
		if err != nil || target <= cur.total {
			return
		}
		// A target this process cannot move to (out of range, not a multiple of max_concurrency or of its
		// count) is ignored, said once per target rather than on every poll.
		if err := g.checkTarget(cur, target); err != nil {
			if g.ignoredTarget != target {
				g.ignoredTarget = target
				g.log.Error("ignoring the rest role's reshard target", zap.Int("target", target), zap.Int("total_shards", cur.total), zap.Error(err))
			}
			return
		}
		if _, err := g.startReshard(ctx, target, fmt.Sprintf("the deployment reshards to %d (rest role)", target)); err != nil {
			g.log.Warn("the deployment reshards but this process cannot follow yet", zap.Int("to", target), zap.Error(err))
		}
	})
}

// splitCount rounds a wanted shard count up so that a split deployment can move to it: a multiple of the
// current count (every guild then stays in its process), and so of gateway.clusters.
func splitCount(want, current int) int {
	return (want + current - 1) / current * current
}

// withReshardCoordinator serves the coordinator beside the rest role's API.
func withReshardCoordinator(c *reshardCoordinator, api http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == reshardCoordinatorPath {
			c.ServeHTTP(w, r)
			return
		}
		api.ServeHTTP(w, r)
	})
}
