package identify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/ddhq/dd/internal/ctxsleep"
)

// Remote is a Limiter that asks a shared Queue (the rest role's).
type Remote struct {
	base   string // e.g. http://rest:8000/dd/v1/identify
	secret string
	client *http.Client
	log    *zap.Logger

	mu     sync.Mutex
	leases map[int]string // shard -> current lease
}

var _ Limiter = (*Remote)(nil)

// NewRemote asks the queue at base, authenticating with secret.
func NewRemote(base, secret string, log *zap.Logger) *Remote {
	if log == nil {
		log = zap.NewNop()
	}
	return &Remote{base: strings.TrimRight(base, "/"), secret: secret, log: log,
		client: &http.Client{Timeout: 40 * time.Second}, leases: map[int]string{}}
}

// Acquire implements Limiter: it long-polls the queue until granted, retrying while the queue is
// unreachable (identifying without it could break the shared limit).
func (l *Remote) Acquire(ctx context.Context, shardID int) (Turn, error) {
	backoff := 500 * time.Millisecond
	for {
		status, body, err := l.call(ctx, "acquire", map[string]any{"shard_id": shardID})
		switch {
		case ctx.Err() != nil:
			return Turn{}, ctx.Err()
		case err == nil && status == http.StatusOK:
			var grant struct {
				Lease string `json:"lease"`
			}
			if err := json.Unmarshal(body, &grant); err != nil || grant.Lease == "" {
				return Turn{}, fmt.Errorf("identify queue: bad grant %q", body)
			}
			l.mu.Lock()
			l.leases[shardID] = grant.Lease
			l.mu.Unlock()
			var once sync.Once
			return Turn{NotBefore: time.Now(), Release: func(answered bool) {
				once.Do(func() {
					l.mu.Lock()
					if l.leases[shardID] == grant.Lease {
						delete(l.leases, shardID)
					}
					l.mu.Unlock()
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					if _, _, err := l.call(ctx, "release", map[string]any{"lease": grant.Lease, "answered": answered}); err != nil {
						l.log.Warn("identify lease not released; it will expire", zap.Int("shard", shardID), zap.Error(err))
					}
				})
			}}, nil
		case err == nil && status == http.StatusNoContent:
			backoff = 500 * time.Millisecond
			continue // long poll ended without a grant
		case err == nil && status == http.StatusUnauthorized:
			return Turn{}, errors.New("identify queue refused our secret: set rest.secret to the rest role's secret")
		default:
			l.log.Warn("identify queue unreachable; waiting (identifying without it could break the shared limit)",
				zap.Int("shard", shardID), zap.Int("status", status), zap.Error(err), zap.Duration("retry_in", backoff))
			if err := ctxsleep.Sleep(ctx, backoff); err != nil {
				return Turn{}, err
			}
			backoff = min(2*backoff, 10*time.Second)
		}
	}
}

// Sent implements Limiter.
func (l *Remote) Sent(shardID int, at time.Time) {
	l.mu.Lock()
	id := l.leases[shardID]
	l.mu.Unlock()
	if id == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _, _ = l.call(ctx, "sent", map[string]any{"lease": id, "at_ms": at.UnixMilli()})
}

func (l *Remote) call(ctx context.Context, action string, body any) (int, []byte, error) {
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, l.base+"/"+action, bytes.NewReader(b))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", l.secret)
	req.Header.Set("Content-Type", "application/json")
	resp, err := l.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, out, nil
}
