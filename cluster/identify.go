package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/ddhq/dd/identify"
)

// The identify queue in the KV. Each max_concurrency bucket is a key, "bucket.<n>", of the identify
// bucket: holding its lease is holding the bucket's turn. A released key keeps, ownerless, when the
// bucket's last IDENTIFY arrived at Discord at the latest (arrivedBy, as the in-process limiter keeps it:
// the receipt of its answer, plus the margin when it got none); the next holder's NotBefore is one window
// after that. A holder that dies leaves no arrivedBy: its key expires after the turn's TTL, and the
// server's expiry marker stands for an unanswered IDENTIFY sent at that instant, plus the margin.
//
// arrivedBy is kept on the server's clock (JetStream stamps every write), never on a dd process's:
// the holder stamps it from the server's timestamp of its acquiring write plus its own elapsed time since
// it sent that write (an upper bound); the next holder converts it back the same way from its own
// acquiring write (a lower bound on the server's clock at the acknowledgement). So skewed clocks between
// dd processes change nothing; only the NATS servers must agree within the margin.
//
// The daily budget is the key "budget": remaining identifies and the reset time (on the wall clock of
// the process that last fetched /gateway/bot: a day-long reset can stand a skew of seconds).

const budgetKey = "budget"

// IdentifyConfig configures an IdentifyLimiter. Every field but Limit has a default.
type IdentifyConfig struct {
	// Limit is the bot's session_start_limit: MaxConcurrency (every process must use the same) and the
	// budget, written to the KV when it holds none yet.
	Limit identify.SessionStartLimit
	// Window is Discord's identify window per bucket. Default 5 s.
	Window time.Duration
	// Margin is how much later an IDENTIFY that got no answer may have reached Discord. Default
	// max(Window/20, 50 ms), as the in-process limiter's.
	Margin time.Duration
	// TurnTTL is the lease TTL of a turn: how long a crashed holder blocks its bucket. It must outlast the
	// wait for NotBefore, the dial and the answer with room to spare, since a holder cut off from NATS
	// past it would send its IDENTIFY outside its turn. Default 30 s.
	TurnTTL time.Duration
	// Log: default the Conn's.
	Log *zap.Logger
}

// IdentifyLimiter is an identify.Limiter shared through NATS by every process of one bot.
type IdentifyLimiter struct {
	cfg     IdentifyConfig
	kv      *rawKV
	leaser  *Leaser
	log     *zap.Logger
	buckets int
	local   []chan struct{} // one token a bucket: this process's shards queue here, not in the KV

	mu   sync.Mutex
	held map[int]*identifyTurn // bucket -> this process's turn
}

var _ identify.Limiter = (*IdentifyLimiter)(nil)

type identifyTurn struct {
	shardID int
	lease   *Lease
	sent    bool
}

// turnData is a bucket key's data: while held, which shard holds it; once released, arrivedBy.
type turnData struct {
	Shard       *int  `json:"shard,omitempty"`
	Sent        bool  `json:"sent,omitempty"`
	ArrivedByMs int64 `json:"arrived_by_ms,omitempty"` // unix ms, the server's clock
}

type budgetValue struct {
	Total     int   `json:"total"`
	Remaining int   `json:"remaining"`
	ResetAtMs int64 `json:"reset_at_ms"` // unix ms, the writer's wall clock
}

// NewIdentifyLimiter builds the limiter on c's identify bucket and writes cfg.Limit's budget to the KV if
// it holds none.
func NewIdentifyLimiter(ctx context.Context, c *Conn, cfg IdentifyConfig) (*IdentifyLimiter, error) {
	if cfg.Limit.MaxConcurrency < 1 {
		cfg.Limit.MaxConcurrency = 1
	}
	if cfg.Window == 0 {
		cfg.Window = 5 * time.Second
	}
	if cfg.Margin == 0 {
		cfg.Margin = max(cfg.Window/20, 50*time.Millisecond)
	}
	if cfg.TurnTTL == 0 {
		cfg.TurnTTL = 30 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = c.log
	}
	leaser, err := NewLeaser(c, BucketIdentify, LeaseConfig{TTL: cfg.TurnTTL, Log: cfg.Log})
	if err != nil {
		return nil, err
	}
	l := &IdentifyLimiter{cfg: cfg, kv: newRawKV(c, BucketIdentify), leaser: leaser, log: cfg.Log,
		buckets: cfg.Limit.MaxConcurrency, held: map[int]*identifyTurn{}}
	for i := 0; i < l.buckets; i++ {
		l.local = append(l.local, make(chan struct{}, 1))
		l.local[i] <- struct{}{}
	}
	if err := l.writeBudget(ctx, cfg.Limit, false); err != nil {
		return nil, err
	}
	return l, nil
}

func bucketKey(b int) string { return "bucket." + strconv.Itoa(b) }

// Acquire implements identify.Limiter.
func (l *IdentifyLimiter) Acquire(ctx context.Context, shardID int) (identify.Turn, error) {
	b := shardID % l.buckets
	select {
	case <-l.local[b]:
	case <-ctx.Done():
		return identify.Turn{}, ctx.Err()
	}
	data, _ := json.Marshal(turnData{Shard: &shardID})
	lease, err := l.leaser.Acquire(ctx, bucketKey(b), data)
	if err != nil {
		l.local[b] <- struct{}{}
		return identify.Turn{}, fmt.Errorf("cluster: identify turn of bucket %d: %w", b, err)
	}
	sent, acked := lease.Acquired()
	prior := l.priorArrivedBy(lease.Prior())

	// The server's clock when it stored the acquiring write: the anchor of both conversions.
	var stamp time.Time
	for attempt := 0; ; attempt++ {
		rctx, cancel := context.WithTimeout(ctx, l.cfg.Window)
		e, err := l.kv.at(rctx, bucketKey(b), lease.acquiredRev)
		cancel()
		if err == nil {
			stamp = e.Written
			break
		}
		if attempt == 2 || ctx.Err() != nil {
			l.releaseLease(lease, prior)
			l.local[b] <- struct{}{}
			return identify.Turn{}, fmt.Errorf("cluster: identify turn of bucket %d: reading its timestamp: %w", b, err)
		}
	}
	notBefore := acked
	if !prior.IsZero() {
		// The server's clock read stamp when acked came at the latest: from acked on, the wait left is at
		// most prior + window - stamp.
		if nb := acked.Add(prior.Add(l.cfg.Window).Sub(stamp)); nb.After(notBefore) {
			notBefore = nb
		}
	}

	if err := l.spend(ctx, shardID, lease); err != nil {
		l.releaseLease(lease, prior)
		l.local[b] <- struct{}{}
		return identify.Turn{}, err
	}

	turn := &identifyTurn{shardID: shardID, lease: lease}
	l.mu.Lock()
	l.held[b] = turn
	l.mu.Unlock()
	var once sync.Once
	release := func(answered bool) {
		once.Do(func() {
			l.mu.Lock()
			wasSent := turn.sent
			delete(l.held, b)
			l.mu.Unlock()
			arrivedBy := prior
			if wasSent {
				// The answer came (or the connection failed) by now: on the server's clock, at most
				// stamp + the time since the acquiring write left.
				arrivedBy = stamp.Add(time.Since(sent))
				if !answered {
					arrivedBy = arrivedBy.Add(l.cfg.Margin)
				}
			}
			l.releaseLease(lease, arrivedBy)
			l.local[b] <- struct{}{}
		})
	}
	return identify.Turn{NotBefore: notBefore, Release: release}, nil
}

// priorArrivedBy is, on the server's clock, when the bucket's last IDENTIFY arrived at the latest; zero
// when nothing constrains the next one.
func (l *IdentifyLimiter) priorArrivedBy(p Prior) time.Time {
	switch {
	case p.Revision == 0:
		return time.Time{}
	case p.Expired || p.Deleted:
		// A holder died (or the key was deleted): count its IDENTIFY as sent, unanswered, at the expiry.
		return p.Written.Add(l.cfg.Margin)
	}
	var d turnData
	if err := json.Unmarshal(p.Data, &d); err != nil || d.ArrivedByMs == 0 {
		return time.Time{}
	}
	return time.UnixMilli(d.ArrivedByMs)
}

// releaseLease hands the bucket on, leaving arrivedBy (zero: nothing constrains the next IDENTIFY).
func (l *IdentifyLimiter) releaseLease(lease *Lease, arrivedBy time.Time) {
	var d turnData
	if !arrivedBy.IsZero() {
		d.ArrivedByMs = (arrivedBy.UnixNano() + int64(time.Millisecond) - 1) / int64(time.Millisecond)
	}
	data, _ := json.Marshal(d)
	ctx, cancel := context.WithTimeout(context.Background(), l.cfg.Window)
	defer cancel()
	if err := lease.ReleaseWith(ctx, data); err != nil {
		l.log.Warn("identify turn not released; its bucket waits for the turn's TTL", zap.String("key", lease.Key()), zap.Error(err))
	}
}

// Sent implements identify.Limiter.
func (l *IdentifyLimiter) Sent(shardID int, _ time.Time) {
	b := shardID % l.buckets
	l.mu.Lock()
	turn := l.held[b]
	if turn == nil || turn.shardID != shardID {
		l.mu.Unlock()
		return
	}
	turn.sent = true
	l.mu.Unlock()
	data, _ := json.Marshal(turnData{Shard: &shardID, Sent: true})
	turn.lease.SetData(data)
	if !turn.lease.Valid() {
		l.log.Error("IDENTIFY left after its turn's lease was lost (cut off from NATS longer than the turn TTL); another process may identify in the same window",
			zap.Int("shard", shardID), zap.Error(turn.lease.Err()))
	}
}

// spend takes one identify from the daily budget, waiting for its reset rather than burning the last
// one (running out resets the bot's token). The turn is held meanwhile, as the in-process limiter holds
// its slot.
func (l *IdentifyLimiter) spend(ctx context.Context, shardID int, lease *Lease) error {
	for {
		if err := lease.Err(); err != nil {
			return fmt.Errorf("cluster: identify turn lost while waiting for the budget: %w", err)
		}
		e, err := l.kv.last(ctx, budgetKey)
		var v budgetValue
		if err == nil {
			if e.Revision == 0 || e.Deleted {
				v = budgetFrom(l.cfg.Limit)
			} else if err = json.Unmarshal(e.Value, &v); err != nil {
				v = budgetFrom(l.cfg.Limit)
				err = nil
			}
		}
		if err == nil {
			resetAt := time.UnixMilli(v.ResetAtMs)
			if v.Remaining <= 0 && time.Now().After(resetAt) {
				l.log.Info("session start budget reset time passed; identifying again")
				v.Remaining = 1
			}
			if v.Remaining > 0 {
				v.Remaining--
				b, _ := json.Marshal(v)
				_, err = l.kv.put(ctx, budgetKey, b, e.Revision, 0)
				if err == nil {
					return nil
				}
				if errors.Is(err, errCASConflict) {
					continue // another process spent one meanwhile
				}
			} else {
				until := time.Until(resetAt)
				l.log.Warn("daily identify budget (session_start_limit) is spent; waiting for its reset instead of burning the token",
					zap.Int("shard", shardID), zap.Duration("reset_after", until))
				if err := l.sleep(ctx, lease, until+time.Second); err != nil {
					return err
				}
				continue
			}
		}
		l.log.Debug("identify budget unreadable; retrying", zap.Error(err))
		if err := l.sleep(ctx, lease, 250*time.Millisecond); err != nil {
			return err
		}
	}
}

func (l *IdentifyLimiter) sleep(ctx context.Context, lease *Lease, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-lease.Done():
		return fmt.Errorf("cluster: identify turn lost while waiting for the budget: %w", lease.Err())
	case <-t.C:
		return nil
	}
}

func budgetFrom(limit identify.SessionStartLimit) budgetValue {
	return budgetValue{Total: limit.Total, Remaining: limit.Remaining, ResetAtMs: time.Now().Add(limit.ResetAfter).UnixMilli()}
}

// Update replaces the budget in the KV with fresh numbers from /gateway/bot.
func (l *IdentifyLimiter) Update(ctx context.Context, limit identify.SessionStartLimit) error {
	return l.writeBudget(ctx, limit, true)
}

func (l *IdentifyLimiter) writeBudget(ctx context.Context, limit identify.SessionStartLimit, overwrite bool) error {
	b, _ := json.Marshal(budgetFrom(limit))
	for {
		e, err := l.kv.last(ctx, budgetKey)
		if err != nil {
			return err
		}
		if !overwrite && e.Revision != 0 && !e.Deleted {
			return nil
		}
		_, err = l.kv.put(ctx, budgetKey, b, e.Revision, 0)
		if errors.Is(err, errCASConflict) {
			continue
		}
		return err
	}
}

// Remaining is the identify budget left as the KV counts it.
func (l *IdentifyLimiter) Remaining(ctx context.Context) (int, error) {
	e, err := l.kv.last(ctx, budgetKey)
	if err != nil {
		return 0, err
	}
	var v budgetValue
	if e.Revision == 0 || e.Deleted {
		return l.cfg.Limit.Remaining, nil
	}
	if err := json.Unmarshal(e.Value, &v); err != nil {
		return 0, fmt.Errorf("cluster: identify budget: %w", err)
	}
	return v.Remaining, nil
}

func (l *IdentifyLimiter) String() string {
	return fmt.Sprintf("identify limiter on NATS (%s): %d buckets, window %s", l.kv.bucket, l.buckets, l.cfg.Window)
}
