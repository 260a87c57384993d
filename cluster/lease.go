package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// How a lease works. The key's value names its holder and carries a token unique to this holding and a
// count of its writes. Every write is a compare-and-set on the key's last revision (JetStream's
// expected-last-subject-sequence) with a per-message TTL: acquiring writes over a free key (absent,
// deleted, expired, or released with an ownerless value), renewing writes over the holder's own last
// revision. When the holder stops writing, the server removes the value TTL after the last write and
// leaves a marker, and the key is free.
//
// The holder counts its deadline from before it sent its last acknowledged write: the server stored
// that write later, so expires it later, than deadline + margin. At the deadline (or at the first
// refused renewal) the lease ends: Done closes and Err says why, whether or not the holder could talk to
// NATS, so that at no instant do two processes both believe they hold the key. This choice (the server's
// TTL, never a time written in the value) keeps every process's wall clock out of the question: the only
// clocks compared are the holder's monotonic clock with itself, and the server's with itself.
//
// A renewal whose answer is lost may still have been written. The next one is then refused (the revision
// moved); the holder reads the key and, finding its own token, adopts that revision and counts its
// deadline from the write that the value's count names.

// ErrLeaseHeld is returned by TryAcquire when another holder has the key; the error names it.
var ErrLeaseHeld = errors.New("lease held")

// Why a lease ended, from Lease.Err.
var (
	ErrLeaseReleased = errors.New("lease released")
	ErrLeaseExpired  = errors.New("lease not renewed in time: given up before it could expire at the server")
	ErrLeaseTaken    = errors.New("lease lost: the key no longer holds this holder's value")
)

// LeaseConfig configures a Leaser. Every field has a default.
type LeaseConfig struct {
	// Owner names the holder in the key's value (for GET /status). Default the Conn's instance.
	Owner string
	// TTL is how long after its last renewal a lease expires at the server; the server counts whole
	// seconds, so a TTL that is not is rounded up there. Default 10 s (cluster.lease_ttl).
	TTL time.Duration
	// Renew is how often the holder renews. Default TTL/3: two renewals can fail before the third must
	// land.
	Renew time.Duration
	// Margin is how long before the server could expire the lease the holder gives it up: it covers a
	// difference between the servers' clocks and between clock rates. Default TTL/5.
	Margin time.Duration
	// Log receives lost leases and failed renewals. Default: the Conn's.
	Log *zap.Logger
}

// Leaser takes leases on the keys of one bucket.
type Leaser struct {
	kv  *rawKV
	cfg LeaseConfig
}

// NewLeaser takes leases in the bucket of kind (BucketLeases, BucketIdentify: a bucket made for TTLs).
func NewLeaser(c *Conn, kind string, cfg LeaseConfig) (*Leaser, error) {
	if kind != BucketLeases && kind != BucketIdentify {
		return nil, fmt.Errorf("cluster: leases need a bucket with TTLs (%s or %s), not %s", BucketLeases, BucketIdentify, kind)
	}
	if cfg.Owner == "" {
		cfg.Owner = c.instance
	}
	if cfg.TTL == 0 {
		cfg.TTL = 10 * time.Second
	}
	if cfg.TTL < time.Second {
		return nil, fmt.Errorf("cluster: lease TTL %s: the server's TTLs start at 1s", cfg.TTL)
	}
	if cfg.Renew == 0 {
		cfg.Renew = cfg.TTL / 3
	}
	if cfg.Margin == 0 {
		cfg.Margin = cfg.TTL / 5
	}
	if cfg.Renew+cfg.Margin >= cfg.TTL {
		return nil, fmt.Errorf("cluster: lease renew %s + margin %s must be under the TTL %s", cfg.Renew, cfg.Margin, cfg.TTL)
	}
	if cfg.Log == nil {
		cfg.Log = c.log
	}
	return &Leaser{kv: newRawKV(c, kind), cfg: cfg}, nil
}

// leaseValue is a lease key's value. Owner "" is a free key that keeps data for the next holder.
type leaseValue struct {
	Owner string          `json:"owner,omitempty"`
	Token string          `json:"token,omitempty"`
	N     uint64          `json:"n,omitempty"` // the holder's count of its writes
	TTLms int64           `json:"ttl_ms,omitempty"`
	Data  json.RawMessage `json:"data,omitempty"`
}

// Prior is what a key held when a lease took it.
type Prior struct {
	Revision uint64          // 0: the key had no message
	Written  time.Time       // the server's clock when it was written
	Expired  bool            // the previous holder's lease ran out without a release
	Deleted  bool            // released by Release, or deleted (Expired is the TTL's own marker)
	Data     json.RawMessage // what the last holder left with ReleaseWith
}

// Holder reads who holds key: "" when free.
func (l *Leaser) Holder(ctx context.Context, key string) (string, error) {
	e, err := l.kv.last(ctx, key)
	if err != nil {
		return "", err
	}
	v, free := decodeLease(e)
	if free {
		return "", nil
	}
	return v.Owner, nil
}

func decodeLease(e rawEntry) (leaseValue, bool) {
	if e.Revision == 0 || e.Deleted {
		return leaseValue{}, true
	}
	var v leaseValue
	if err := json.Unmarshal(e.Value, &v); err != nil {
		// Not a lease value: someone else's key. Not free.
		return leaseValue{Owner: "?"}, false
	}
	return v, v.Owner == ""
}

// TryAcquire takes the lease on key if it is free, and keeps it renewed until Release or its loss.
// data (JSON, may be nil) is stored in the value beside the holder's name. A key held by another
// returns an error that matches ErrLeaseHeld.
func (l *Leaser) TryAcquire(ctx context.Context, key string, data json.RawMessage) (*Lease, error) {
	e, err := l.kv.last(ctx, key)
	if err != nil {
		return nil, err
	}
	v, free := decodeLease(e)
	if !free {
		return nil, fmt.Errorf("cluster: %s/%s: %w by %s", l.kv.bucket, key, ErrLeaseHeld, v.Owner)
	}
	le := &Lease{l: l, key: key, token: randomHex(12), data: data, pending: map[uint64]time.Time{},
		done: make(chan struct{}), stop: make(chan struct{}), stopped: make(chan struct{}),
		prior: Prior{Revision: e.Revision, Written: e.Written, Expired: e.Expired, Deleted: e.Deleted && !e.Expired, Data: v.Data}}
	le.n = 1
	sent := time.Now()
	rev, err := l.kv.put(ctx, key, le.value(1), e.Revision, l.cfg.TTL)
	if errors.Is(err, errCASConflict) {
		return nil, fmt.Errorf("cluster: %s/%s: %w (taken while acquiring)", l.kv.bucket, key, ErrLeaseHeld)
	}
	if err != nil {
		// The write may have landed with its answer lost: if the key holds this token, it is ours.
		rctx, cancel := context.WithTimeout(context.Background(), l.cfg.Renew)
		now, rerr := l.kv.last(rctx, key)
		cancel()
		if rerr != nil {
			return nil, err
		}
		if cur, _ := decodeLease(now); cur.Token != le.token {
			return nil, err
		}
		rev = now.Revision
	}
	le.rev, le.acquiredRev = rev, rev
	le.acquiredSent, le.acquiredAck = sent, time.Now()
	le.deadline = sent.Add(l.cfg.TTL - l.cfg.Margin)
	le.watchdog = time.AfterFunc(time.Until(le.deadline), le.checkDeadline)
	go le.run(sent)
	return le, nil
}

// Acquire waits until key is free and takes its lease, or until ctx ends. Errors talking to NATS are
// retried.
func (l *Leaser) Acquire(ctx context.Context, key string, data json.RawMessage) (*Lease, error) {
	// A watcher wakes the wait when the key changes (a release, an expiry marker); the poll covers a
	// watcher that missed something while reconnecting.
	var updates <-chan jetstream.KeyValueEntry
	if kv, err := l.kv.js.KeyValue(ctx, l.kv.bucket); err == nil {
		if w, err := kv.Watch(ctx, key, jetstream.UpdatesOnly()); err == nil {
			defer w.Stop()
			updates = w.Updates()
		}
	}
	poll := l.cfg.TTL / 4
	for {
		le, err := l.TryAcquire(ctx, key, data)
		if err == nil {
			return le, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		wait := time.NewTimer(poll)
		select {
		case <-ctx.Done():
			wait.Stop()
			return nil, ctx.Err()
		case <-updates:
		case <-wait.C:
		}
		wait.Stop()
	}
}

// Lease is one holding of a key. Its methods are safe for concurrent use.
type Lease struct {
	l     *Leaser
	key   string
	token string
	prior Prior

	acquiredSent, acquiredAck time.Time
	acquiredRev               uint64

	mu       sync.Mutex
	rev      uint64
	n        uint64
	data     json.RawMessage
	deadline time.Time
	pending  map[uint64]time.Time // unacknowledged writes: count -> when sent
	err      error
	done     chan struct{}
	watchdog *time.Timer

	stopOnce sync.Once
	stop     chan struct{} // closed by Release
	stopped  chan struct{} // closed when run returns
}

// Key is the leased key.
func (le *Lease) Key() string { return le.key }

// Prior is what the key held before this lease took it.
func (le *Lease) Prior() Prior { return le.prior }

// Done is closed when the lease ends: released, or lost (Err says which). A holder stops using what
// the lease guards when Done closes; the lease cannot then expire at the server for another Margin.
func (le *Lease) Done() <-chan struct{} { return le.done }

// Err is nil while the lease is held, then why it ended (ErrLeaseReleased, ErrLeaseExpired,
// ErrLeaseTaken).
func (le *Lease) Err() error {
	le.mu.Lock()
	defer le.mu.Unlock()
	return le.err
}

// Valid reports whether the lease is held now. Done is the way to wait for its end; Valid is for a
// check right before an action only the holder may take.
func (le *Lease) Valid() bool {
	le.mu.Lock()
	defer le.mu.Unlock()
	return le.err == nil && time.Now().Before(le.deadline)
}

// Deadline is when the holder gives the lease up unless a renewal lands first.
func (le *Lease) Deadline() time.Time {
	le.mu.Lock()
	defer le.mu.Unlock()
	return le.deadline
}

// Acquired is when the acquiring write was sent and when its acknowledgement came back: the server
// stored it between the two.
func (le *Lease) Acquired() (sent, acked time.Time) { return le.acquiredSent, le.acquiredAck }

// Revision is the key's revision as last written by this holder.
func (le *Lease) Revision() uint64 {
	le.mu.Lock()
	defer le.mu.Unlock()
	return le.rev
}

// SetData replaces the data the next renewal writes.
func (le *Lease) SetData(data json.RawMessage) {
	le.mu.Lock()
	le.data = data
	le.mu.Unlock()
}

func (le *Lease) value(n uint64) []byte {
	b, _ := json.Marshal(leaseValue{Owner: le.l.cfg.Owner, Token: le.token, N: n, TTLms: le.l.cfg.TTL.Milliseconds(), Data: le.data})
	return b
}

// end ends the lease once. Lock held.
func (le *Lease) end(err error) {
	if le.err != nil {
		return
	}
	le.err = err
	le.watchdog.Stop()
	close(le.done)
	if err != ErrLeaseReleased {
		le.l.cfg.Log.Warn("lease lost", zap.String("bucket", le.l.kv.bucket), zap.String("key", le.key), zap.Error(err))
	}
}

// checkDeadline ends the lease when its deadline passed without a renewal, whether or not a renewal is
// still on its way.
func (le *Lease) checkDeadline() {
	le.mu.Lock()
	defer le.mu.Unlock()
	if le.err != nil {
		return
	}
	if until := time.Until(le.deadline); until > 0 {
		le.watchdog.Reset(until)
		return
	}
	le.end(ErrLeaseExpired)
}

// renewed records that write n landed as revision rev.
func (le *Lease) renewed(n, rev uint64) {
	le.mu.Lock()
	defer le.mu.Unlock()
	sent, ok := le.pending[n]
	for k := range le.pending {
		if k <= n {
			delete(le.pending, k)
		}
	}
	if le.err != nil {
		return
	}
	le.rev = rev
	if ok {
		if d := sent.Add(le.l.cfg.TTL - le.l.cfg.Margin); d.After(le.deadline) {
			le.deadline = d
			le.watchdog.Reset(time.Until(d))
		}
	}
}

// run renews the lease until it ends.
func (le *Lease) run(lastSent time.Time) {
	defer close(le.stopped)
	cfg := le.l.cfg
	retry := max(cfg.Renew/4, 100*time.Millisecond)
	next := lastSent.Add(cfg.Renew)
	for {
		t := time.NewTimer(time.Until(next))
		select {
		case <-le.stop:
			t.Stop()
			return
		case <-le.done:
			t.Stop()
			return
		case <-t.C:
		}
		le.mu.Lock()
		if le.err != nil {
			le.mu.Unlock()
			return
		}
		le.n++
		n, rev, value, deadline := le.n, le.rev, le.value(le.n), le.deadline
		sent := time.Now()
		le.pending[n] = sent
		le.mu.Unlock()

		// No use waiting for an answer past the deadline: the lease is gone by then.
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		newRev, err := le.l.kv.put(ctx, le.key, value, rev, cfg.TTL)
		cancel()
		switch {
		case err == nil:
			le.renewed(n, newRev)
			next = sent.Add(cfg.Renew)
		case errors.Is(err, errCASConflict):
			if !le.reclaim() {
				return
			}
			next = time.Now() // renew at once over the adopted revision
		default:
			cfg.Log.Debug("lease renewal failed; retrying", zap.String("bucket", le.l.kv.bucket), zap.String("key", le.key), zap.Error(err))
			next = time.Now().Add(retry)
		}
	}
}

// reclaim handles a refused renewal: if the key holds this holder's token (an earlier write landed with
// its answer lost), adopt it; otherwise the lease is lost.
func (le *Lease) reclaim() bool {
	ctx, cancel := context.WithDeadline(context.Background(), le.Deadline())
	e, err := le.l.kv.last(ctx, le.key)
	cancel()
	if err != nil {
		return true // unknown yet: retry; the deadline ends it if NATS stays away
	}
	v, free := decodeLease(e)
	if free || v.Token != le.token {
		le.mu.Lock()
		le.end(ErrLeaseTaken)
		le.mu.Unlock()
		return false
	}
	le.renewed(v.N, e.Revision)
	return true
}

// halt stops renewing and waits for the renewal loop to return.
func (le *Lease) halt() {
	le.stopOnce.Do(func() { close(le.stop) })
	<-le.stopped
}

// Release gives the lease up and deletes the key (if it still holds this holder's value), so that the
// next holder need not wait for the TTL. The lease has ended when Release returns, whatever the error.
func (le *Lease) Release(ctx context.Context) error {
	return le.release(ctx, nil, false)
}

// ReleaseWith gives the lease up and leaves data in the key, ownerless and without TTL, for the next
// holder to read in its Prior.
func (le *Lease) ReleaseWith(ctx context.Context, data json.RawMessage) error {
	return le.release(ctx, data, true)
}

func (le *Lease) release(ctx context.Context, data json.RawMessage, keep bool) error {
	le.halt()
	le.mu.Lock()
	held := le.err == nil && time.Now().Before(le.deadline)
	le.end(ErrLeaseReleased)
	rev := le.rev
	le.mu.Unlock()
	if !held {
		return nil // lost already: the key is not ours to write
	}
	var err error
	if keep {
		b, _ := json.Marshal(leaseValue{Data: data})
		_, err = le.l.kv.put(ctx, le.key, b, rev, 0)
	} else {
		err = le.l.kv.del(ctx, le.key, rev)
	}
	if errors.Is(err, errCASConflict) {
		// An unacknowledged renewal moved the revision: the key is still ours; try once more on it.
		if e, rerr := le.l.kv.last(ctx, le.key); rerr == nil {
			if v, free := decodeLease(e); !free && v.Token == le.token {
				if keep {
					b, _ := json.Marshal(leaseValue{Data: data})
					_, err = le.l.kv.put(ctx, le.key, b, e.Revision, 0)
				} else {
					err = le.l.kv.del(ctx, le.key, e.Revision)
				}
			}
		}
	}
	if err != nil {
		return fmt.Errorf("cluster: releasing %s/%s (it expires after its TTL instead): %w", le.l.kv.bucket, le.key, err)
	}
	return nil
}
