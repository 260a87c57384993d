package restproxy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

// How the proxy judges whether Discord can be reached (the rest role's /readyz).
var (
	// reachableGrace: after a failure, an answer from Discord this recent still counts (one refused
	// connection among many answers is not an outage).
	reachableGrace = 10 * time.Second
	// probeEvery is how often, while the last attempt failed, the proxy asks GET /gateway (no token, no
	// rate limit) to learn that Discord is back without waiting for a caller's request.
	probeEvery = 2 * time.Second
)

// upstreamHealth is what the proxy last saw of Discord: the times of the last answer and the last
// failure (a network error, or 502/503/504 from Discord's edge).
type upstreamHealth struct {
	lastOK, lastFail atomic.Int64 // unix nanoseconds
	lastErr          atomic.Pointer[string]
	failed           chan struct{} // a failure was observed (wakes WatchUpstream)
}

// ObserveUpstream records how one call to Discord went: nil for an answer, else why it failed. The proxy
// records its own requests; other callers of Discord in the rest role (its /gateway/bot) report here.
func (p *Proxy) ObserveUpstream(err error) {
	h := &p.health
	now := time.Now().UnixNano()
	if err == nil {
		h.lastOK.Store(now)
		return
	}
	msg := err.Error()
	h.lastErr.Store(&msg)
	h.lastFail.Store(now)
	select {
	case h.failed <- struct{}{}:
	default:
	}
}

func (p *Proxy) observeResponse(resp *http.Response, err error, out *outgoing) {
	switch {
	case err != nil:
		p.ObserveUpstream(errors.New(scrub(err.Error(), out)))
	case resp.StatusCode == http.StatusBadGateway || resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusGatewayTimeout:
		p.ObserveUpstream(fmt.Errorf("Discord answered %d", resp.StatusCode))
	default:
		p.ObserveUpstream(nil)
	}
}

// Reachable is nil unless the last call to Discord failed and no answer came within reachableGrace
// before it. Before any call it is nil: a rest role that has not needed Discord yet is ready.
func (p *Proxy) Reachable() error {
	h := &p.health
	fail, ok := h.lastFail.Load(), h.lastOK.Load()
	if fail == 0 || ok >= fail || (ok != 0 && time.Since(time.Unix(0, ok)) < reachableGrace) {
		return nil
	}
	msg := ""
	if m := h.lastErr.Load(); m != nil {
		msg = *m
	}
	last := "never"
	if ok != 0 {
		last = time.Since(time.Unix(0, ok)).Round(time.Second).String() + " ago"
	}
	return fmt.Errorf("Discord cannot be reached (%s); its last answer: %s", msg, last)
}

// WatchUpstream runs until ctx ends: while Discord is not Reachable, it asks GET /gateway every
// probeEvery, so that readiness comes back when Discord does, even with no caller sending requests (a
// load balancer sends none to a role that is not ready).
func (p *Proxy) WatchUpstream(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.health.failed:
		}
		for p.Reachable() != nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(probeEvery):
			}
			p.probe(ctx)
		}
	}
}

func (p *Proxy) probe(parent context.Context) {
	ctx, cancel := context.WithTimeout(parent, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.base+"/v"+strconv.Itoa(p.o.APIVersion)+"/gateway", nil)
	if err != nil {
		return
	}
	req.Header.Set("User-Agent", p.o.UserAgent)
	resp, err := p.transport.RoundTrip(req)
	if err != nil && parent.Err() != nil {
		return // dd is stopping: says nothing about Discord
	}
	if err == nil {
		drain(resp.Body)
	}
	p.observeResponse(resp, err, &outgoing{target: req.URL.String()})
}
