package restproxy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/ddhq/dd/internal/httpapi"
)

// Cluster mode (PRODUCT.md §7, issue #13). The rest processes of one token elect a leader; only the
// leader sends to Discord and keeps the token's limits, and every other process forwards each request to
// it as received: method, path and query, headers (the caller's Authorization included: the leader
// checks the caller's credentials as usual, which is what proves that the hop comes from the same
// deployment), and the body streamed, behind "Expect: 100-continue" so that a process that no longer
// leads can refuse before the body leaves the follower. HopHeader marks the hop: a process never forwards
// a request that carries it.
//
// What a caller sees across a change of leader:
//   - A request that reaches a follower while no leader is known, or while the known one cannot be
//     reached, waits for the next one (at most rest.max_wait, then 503), and is then forwarded. A
//     connection refused by the old leader means it never got the request: it is sent to the next.
//   - A request the old leader had already received when it died is lost with it: it may or may not have
//     reached Discord, so the follower answers 502 (not retried: it must not reach Discord twice).
//   - A leader that loses its lease (cut off from NATS, say) stops sending at once: what it has not sent
//     yet is answered 503 "not sent" (retry it), what it had sent completes.
//   - The new leader forgets the token's buckets (learned again as on first sight) and starts as if the
//     last second's global budget were spent (ratelimit.Limiter.TakeOver).

// HopHeader marks a request forwarded by a follower to the leader.
const HopHeader = "X-DD-Forwarded"

// notLeaderHeader marks the leader's refusal of a forwarded request it no longer leads (421).
const notLeaderHeader = "X-DD-Not-Leader"

// Cluster connects the proxy to its cluster's elections. Nil Options.Cluster: one machine.
type Cluster struct {
	// Elect joins the election of key (derived from a hash of the token, never the token) and returns it.
	// It is called once per key.
	Elect func(key string) Election
	// Close leaves every election (releasing what this process leads). Called by Proxy.Close.
	Close func()
}

// Election is one token's election as the proxy needs it.
type Election interface {
	Term() Term
}

// Term is an election's state at one moment.
type Term struct {
	Leading bool
	Done    <-chan struct{} // when Leading: closed when the leadership ends
	Leader  string          // when not Leading: the leader's advertise URL; "" while none is known
	N       uint64          // changes with every new term
	Changed <-chan struct{} // closed when the term changes
}

// leadState is one token's election on this process.
type leadState struct {
	el       Election
	key      string
	label    string   // the key's prefix, for metrics and logs
	identity []string // what TakeOver forgets when this process starts leading; nil: every token
	mu       sync.Mutex
	taken    uint64 // the term whose takeover was done

	lastOK, lastFail atomic.Int64 // forwarding to the leader: unix ns of the last success and dial failure
}

type clusterState struct {
	c         *Cluster
	mu        sync.Mutex
	leads     map[string]*leadState
	main      *leadState // the configured token's
	transport *http.Transport
	stop      chan struct{}

	leader    *prometheus.GaugeVec   // token -> 1/0
	forwarded *prometheus.CounterVec // outcome
	served    prometheus.Counter     // forwarded requests this process served as the leader
}

func (p *Proxy) initCluster(c *Cluster, reg prometheus.Registerer) {
	cs := &clusterState{c: c, leads: map[string]*leadState{}, stop: make(chan struct{}),
		transport: &http.Transport{
			DialContext:           (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:          1024,
			MaxIdleConnsPerHost:   512,
			IdleConnTimeout:       90 * time.Second,
			ExpectContinueTimeout: 5 * time.Second,
			DisableCompression:    true,
			WriteBufferSize:       32 << 10,
			ReadBufferSize:        32 << 10,
		},
		leader: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "dd_rest_leader",
			Help: "1 while this process leads the rest role of a token (cluster mode), 0 while it forwards; token is a hash prefix."}, []string{"token"}),
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dd_rest_forwarded_total",
			Help: "Requests this process forwarded to the leader (cluster mode), by outcome: answered (the leader's answer passed on), leader_lost (502: the leader failed after receiving it), not_sent (503), no_leader (503 after rest.max_wait)."}, []string{"outcome"}),
		served: prometheus.NewCounter(prometheus.CounterOpts{Name: "dd_rest_forwarded_served_total",
			Help: "Forwarded requests this process received as the leader (cluster mode)."}),
	}
	if reg != nil {
		reg.MustRegister(cs.leader, cs.forwarded, cs.served)
	}
	p.cluster = cs
	if p.o.AllowAnyToken {
		cs.main = p.lead(p.botAuth, []string{p.botAuth, ""})
	} else {
		cs.main = p.lead(p.botAuth, nil)
	}
}

// electionKey names a token's election: a hash, so that the token never reaches NATS.
func electionKey(auth string) string {
	sum := sha256.Sum256([]byte("dd rest leader\x00" + auth))
	return "rest." + hex.EncodeToString(sum[:16])
}

// lead returns the election of auth's token, joining it on first sight.
func (p *Proxy) lead(auth string, identity []string) *leadState {
	cs := p.cluster
	key := electionKey(auth)
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if ls := cs.leads[key]; ls != nil {
		return ls
	}
	ls := &leadState{el: cs.c.Elect(key), key: key, label: key[len("rest."):][:12], identity: identity}
	cs.leads[key] = ls
	go p.followTerms(ls)
	return ls
}

// leadFor is the election a request belongs to: the configured token's, or with rest.allow_any_token
// the caller's token's (requests that carry no token of their own, webhooks and interactions, go with
// the configured token).
func (p *Proxy) leadFor(auth, identity string) *leadState {
	if !p.o.AllowAnyToken || identity == "" || auth == p.botAuth {
		return p.cluster.main
	}
	return p.lead(auth, []string{auth})
}

// followTerms logs changes of leader and keeps the metric, until the proxy closes.
func (p *Proxy) followTerms(ls *leadState) {
	cs := p.cluster
	for {
		t := ls.el.Term()
		switch {
		case t.Leading:
			p.takeOver(ls, t)
			cs.leader.WithLabelValues(ls.label).Set(1)
			p.log.Info("leading the rest role for a token (cluster mode)", zap.String("token", ls.label))
		case t.Leader != "":
			cs.leader.WithLabelValues(ls.label).Set(0)
			p.log.Info("following the rest leader (cluster mode)", zap.String("token", ls.label), zap.String("leader", t.Leader))
		default:
			cs.leader.WithLabelValues(ls.label).Set(0)
		}
		select {
		case <-t.Changed:
		case <-cs.stop:
			return
		}
	}
}

// takeOver makes the limiter forget the token once per term led, before the term's first request.
func (p *Proxy) takeOver(ls *leadState, t Term) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.taken == t.N {
		return
	}
	ls.taken = t.N
	if ls.identity == nil {
		p.lim.TakeOverAll()
	} else {
		for _, id := range ls.identity {
			p.lim.TakeOver(id)
		}
	}
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// route sends the request to its token's leader. It returns the leadership's Done channel when this
// process leads (the caller serves the request), or nil when the request was answered here (forwarded,
// or refused).
func (p *Proxy) route(w http.ResponseWriter, r *http.Request, auth, identity string) <-chan struct{} {
	cs := p.cluster
	ls := p.leadFor(auth, identity)
	hop := r.Header.Get(HopHeader) != ""
	deadline := time.Now().Add(p.o.MaxWait)
	for {
		t := ls.el.Term()
		var retry time.Duration // wait before trying the same term again; 0: wait for the next term
		switch {
		case t.Leading && !closed(t.Done):
			p.takeOver(ls, t)
			if hop {
				cs.served.Inc()
			}
			return t.Done
		case hop:
			// Never forwarded twice: the follower finds the leader itself.
			w.Header().Set(notLeaderHeader, "1")
			w.Header().Set("Connection", "close")
			p.refuse(w, http.StatusMisdirectedRequest, "not_leader", "this dd process does not lead the rest role for this token (cluster mode): not sent")
			return nil
		case t.Leader != "":
			switch p.forwardToLeader(w, r, ls, t.Leader) {
			case forwardDone:
				return nil
			case forwardRetryLater:
				retry = 100 * time.Millisecond
			}
		}
		left := time.Until(deadline)
		if left <= 0 {
			cs.forwarded.WithLabelValues("no_leader").Inc()
			p.refuse(w, http.StatusServiceUnavailable, "no_leader",
				fmt.Sprintf("no rest leader could be reached within rest.max_wait (%s) (cluster mode: is NATS reachable, is another dd rest process running?): not sent", p.o.MaxWait))
			return nil
		}
		if retry == 0 || retry > left {
			retry = left
		}
		timer := time.NewTimer(retry)
		select {
		case <-t.Changed:
		case <-timer.C:
		}
		timer.Stop()
	}
}

type forwardResult int

const (
	forwardDone       forwardResult = iota // answered
	forwardRetryLater                      // nothing was sent: try again (same leader later, or the next)
)

// countingBody reads the caller's body for the forwarded request, remembering whether any of it was
// read and whether reading failed (the caller's trouble, not the leader's).
type countingBody struct {
	r    io.ReadCloser
	n    int64
	err  error
	done atomic.Bool
}

func (c *countingBody) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	if err != nil && err != io.EOF {
		c.err = err
	}
	return n, err
}

func (c *countingBody) Close() error { c.done.Store(true); return nil }

// forwardToLeader sends the request to the leader as received and passes its answer on. It does not
// watch the caller: once the leader has the whole body, the request completes without it.
func (p *Proxy) forwardToLeader(w http.ResponseWriter, r *http.Request, ls *leadState, leader string) forwardResult {
	cs := p.cluster
	u, err := url.Parse(strings.TrimRight(leader, "/"))
	if err != nil {
		p.log.Error("the rest leader's advertise_url is not a URL", zap.String("leader", leader), zap.Error(err))
		return forwardRetryLater
	}
	// No caller context: a caller that disconnects once the leader has its request does not cancel it.
	limit := p.o.MaxWait + time.Duration(p.o.MaxRetries+1)*p.o.UpstreamTimeout + 30*time.Second
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, r.Method, u.String(), nil)
	if err != nil {
		p.log.Error("cannot build the forwarded request", zap.Error(err))
		return forwardRetryLater
	}
	// The path and query exactly as the caller sent them (Opaque is written as is).
	rawPath, rawQuery, _ := strings.Cut(r.RequestURI, "?")
	req.URL.Opaque, req.URL.RawQuery = u.Path+rawPath, rawQuery
	req.Header = make(http.Header, len(r.Header)+2)
	for k, vs := range r.Header {
		if !hopByHop[k] {
			req.Header[k] = vs
		}
	}
	req.Header.Set(HopHeader, "1")
	var body *countingBody
	if r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody {
		body = &countingBody{r: r.Body}
		req.Body, req.ContentLength = body, r.ContentLength
		req.Header.Set("Expect", "100-continue")
	}
	started := func() bool { return body != nil && body.n > 0 }

	resp, err := cs.transport.RoundTrip(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" && !started() {
			// The leader never got it (dead, or not listening yet): the next leader will.
			ls.lastFail.Store(time.Now().UnixNano())
			return forwardRetryLater
		}
		if body != nil && body.err != nil {
			p.refuse(w, http.StatusBadRequest, "bad_request", "the request body could not be read: not forwarded")
			return forwardDone
		}
		p.log.Warn("the rest leader failed before answering a forwarded request", zap.String("leader", leader), zap.Error(err))
		cs.forwarded.WithLabelValues("leader_lost").Inc()
		p.refuse(w, http.StatusBadGateway, "leader_lost",
			"the rest leader ("+leader+") failed before answering (cluster mode): the request may or may not have reached Discord")
		return forwardDone
	}
	ls.lastOK.Store(time.Now().UnixNano())
	if resp.StatusCode == http.StatusMisdirectedRequest && resp.Header.Get(notLeaderHeader) != "" {
		drain(resp.Body)
		if started() {
			cs.forwarded.WithLabelValues("not_sent").Inc()
			p.refuse(w, http.StatusServiceUnavailable, "not_leader", "the rest leader changed while the request was forwarded (cluster mode): not sent; retry")
			return forwardDone
		}
		return forwardRetryLater
	}
	cs.forwarded.WithLabelValues("answered").Inc()
	defer resp.Body.Close()
	h := w.Header()
	for k, vs := range resp.Header {
		if !hopByHop[k] {
			h[k] = vs
		}
	}
	p.m.answered("forwarded", resp.StatusCode)
	w.WriteHeader(resp.StatusCode)
	bp := p.bufs.Get().(*[]byte)
	defer p.bufs.Put(bp)
	if _, err := io.CopyBuffer(w, resp.Body, *bp); err != nil {
		drain(resp.Body)
	}
	return forwardDone
}

// hopByHop are the headers of one connection, not forwarded between dd processes.
var hopByHop = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true, "Proxy-Authorization": true,
	"Proxy-Connection": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
	"Content-Length": true, "Expect": true, "Host": true,
}

// clusterReady is nil while this process leads the configured token (and Discord is reachable) or can
// reach the leader.
func (p *Proxy) clusterReady() error {
	ls := p.cluster.main
	t := ls.el.Term()
	switch {
	case t.Leading:
		return p.Reachable()
	case t.Leader == "":
		return errors.New("no rest leader known (cluster mode: election in progress, or NATS unreachable)")
	case ls.lastFail.Load() > ls.lastOK.Load():
		return fmt.Errorf("the rest leader %s cannot be reached", t.Leader)
	}
	return nil
}

func (cs *clusterState) close() {
	close(cs.stop)
	if cs.c.Close != nil {
		cs.c.Close()
	}
	cs.transport.CloseIdleConnections()
}

// lostLead answers a request this process held when it stopped leading: never sent, it can be retried;
// sent before (and now due for a retry), it may have reached Discord.
func (p *Proxy) lostLead(w http.ResponseWriter, label string, attempts int) {
	p.m.refused.WithLabelValues("leadership_lost").Inc()
	if attempts == 0 {
		p.m.answered(label, http.StatusServiceUnavailable)
		w.Header().Set("Retry-After", "1")
		httpapi.WriteError(w, http.StatusServiceUnavailable, "this dd process lost the rest leadership before sending the request (cluster mode): not sent; retry")
		return
	}
	p.m.answered(label, http.StatusBadGateway)
	httpapi.WriteError(w, http.StatusBadGateway, "this dd process lost the rest leadership while retrying the request (cluster mode): it may or may not have reached Discord")
}

// Ready is nil when the proxy can serve: Discord reachable, and in cluster mode this process leads or
// can reach the leader (for /readyz).
func (p *Proxy) Ready() error {
	if p.cluster != nil {
		return p.clusterReady()
	}
	return p.Reachable()
}
