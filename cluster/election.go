package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// Election keeps one of several processes leading a key through the key's lease: every candidate takes
// the lease when it is free, the others learn who holds it and the data the holder published (its
// address, say), and one of them takes it within the TTL when the holder dies or cannot renew. No
// process decides for another: the compare-and-set of the lease does.
type Election struct {
	l    *Leaser
	key  string
	data json.RawMessage

	mu      sync.Mutex
	term    Term
	token   string // the lease token of the known holder: a new one is a new term
	changed chan struct{}

	stop    chan struct{}
	stopped chan struct{}
	once    sync.Once
}

// Term is what an election knows at one moment.
type Term struct {
	// Lease is this process's lease while it leads, nil otherwise. The leader stops acting as one when
	// Lease.Done closes, whatever Term says by then.
	Lease *Lease
	// Owner and Data are the leader's name and the data it published; "" and nil while no leader is
	// known (during an election, or before this process could read the key).
	Owner string
	Data  json.RawMessage
	// N numbers the terms this process has seen: it changes with every new leader (or new lease of the
	// same leader).
	N uint64
	// Changed is closed when the term changes.
	Changed <-chan struct{}
}

// Leading reports whether this process leads in this term.
func (t Term) Leading() bool { return t.Lease != nil }

// Elect makes this process a candidate for key, publishing data (JSON, the leader's address for
// example) while it leads. It campaigns in the background until Close.
func (l *Leaser) Elect(key string, data json.RawMessage) *Election {
	e := &Election{l: l, key: key, data: data, changed: make(chan struct{}),
		stop: make(chan struct{}), stopped: make(chan struct{})}
	e.term.Changed = e.changed
	go e.run()
	return e
}

// Term is the election's state now.
func (e *Election) Term() Term {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.term
}

// Close stops campaigning, and releases the lease if this process leads, so that another takes it at
// once instead of after the TTL.
func (e *Election) Close(ctx context.Context) error {
	e.once.Do(func() { close(e.stop) })
	<-e.stopped
	if le := e.Term().Lease; le != nil {
		e.set(Term{}, "")
		return le.Release(ctx)
	}
	return nil
}

// set publishes a term; token identifies the holding ("" for none known).
func (e *Election) set(t Term, token string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if token == e.token && t.Owner == e.term.Owner && (t.Lease == nil) == (e.term.Lease == nil) {
		return // the same term
	}
	e.token = token
	t.N = e.term.N + 1
	close(e.changed)
	e.changed = make(chan struct{})
	t.Changed = e.changed
	e.term = t
}

func (e *Election) run() {
	defer close(e.stopped)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-e.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	cfg := e.l.cfg
	// A watcher wakes a follower when the key changes (an expiry marker, a release); the poll covers a
	// watcher that could not start or missed something while reconnecting.
	var updates <-chan jetstream.KeyValueEntry
	watch := func() {
		if updates != nil {
			return
		}
		wctx, wcancel := context.WithTimeout(ctx, cfg.Renew)
		defer wcancel()
		if kv, err := e.l.kv.js.KeyValue(wctx, e.l.kv.bucket); err == nil {
			if w, err := kv.Watch(ctx, e.key, jetstream.UpdatesOnly()); err == nil {
				updates = w.Updates()
				go func() { <-ctx.Done(); _ = w.Stop() }()
			}
		}
	}
	poll := cfg.TTL / 4
	for ctx.Err() == nil {
		watch()
		rctx, rcancel := context.WithTimeout(ctx, cfg.Renew)
		le, err := e.l.TryAcquire(rctx, e.key, e.data)
		rcancel()
		if err == nil {
			e.set(Term{Lease: le, Owner: cfg.Owner, Data: e.data}, le.token)
			select {
			case <-le.Done():
				cfg.Log.Warn("leadership lost", zap.String("key", e.key), zap.Error(le.Err()))
				e.set(Term{}, "")
				continue
			case <-ctx.Done():
				return // Close releases it
			}
		}
		if errors.Is(err, ErrLeaseHeld) {
			gctx, gcancel := context.WithTimeout(ctx, cfg.Renew)
			cur, gerr := e.l.kv.last(gctx, e.key)
			gcancel()
			if gerr == nil {
				v, free := decodeLease(cur)
				if free {
					continue // released or expired in between: try again at once
				}
				e.set(Term{Owner: v.Owner, Data: v.Data}, v.Token)
			}
		} else if ctx.Err() == nil {
			// NATS cannot be asked: the last known leader stays known (it may well be alive, and it
			// refuses what it no longer leads), so that a follower cut off from NATS still forwards.
			cfg.Log.Debug("election: NATS unreachable; keeping the last known leader", zap.String("key", e.key), zap.Error(err))
		}
		wait := time.NewTimer(poll)
		select {
		case <-ctx.Done():
		case _, ok := <-updates:
			if !ok {
				updates = nil
			}
		case <-wait.C:
		}
		wait.Stop()
	}
}
