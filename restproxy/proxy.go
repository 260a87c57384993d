// Package restproxy is the rest role's HTTP handler: the single front door between a bot's processes and
// Discord's REST API. Callers send ordinary Discord API requests; the proxy checks who they are, receives
// the whole request, waits for the rate limits (package ratelimit), sends it with the bot's token over a
// pooled connection, retries what Discord asks to retry, and streams Discord's answer back. A request
// that was fully received is completed even when its caller has gone.
//
// It does not serve health or metrics endpoints (package roles does) and keeps no state beyond the
// limiter's memory of buckets.
package restproxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/ddhq/dd/internal/ctxsleep"
	"github.com/ddhq/dd/internal/httpapi"
	"github.com/ddhq/dd/ratelimit"
)

// Options configure a Proxy. Zero values take the defaults in their comments.
type Options struct {
	// Token is the bot token, without "Bot ". Required.
	Token string
	// Secret is what callers may put in Authorization instead of the token (Discordeno's proxy mode).
	// Empty: callers need no secret (only allowed on loopback; see config).
	Secret string
	// SecretHeader, when set, is another header that may carry the secret, so that Authorization stays
	// free for the caller's own credentials (OAuth2 Bearer, Basic).
	SecretHeader string
	// AllowAnyToken lets callers send "Authorization: Bot <their token>"; each token has its own limits.
	AllowAnyToken bool
	// APIURL is Discord's REST base, e.g. "https://discord.com/api". Required.
	APIURL string
	// APIVersion serves paths without a version ("/api/..."). Default 10.
	APIVersion int
	// UserAgent is sent upstream. Required by Discord: "DiscordBot (url, version)".
	UserAgent string
	// MaxBody is the largest request body accepted. Default 100 MiB.
	MaxBody int64
	// MemoryBody is the largest body kept in memory while queued; larger ones are spooled to SpoolDir.
	// Default 1 MiB.
	MemoryBody int64
	// SpoolDir holds spooled bodies. Default: the system temp directory.
	SpoolDir string
	// MaxWait bounds the time a request waits in dd's queues; past it the caller gets 504. Default 60s.
	MaxWait time.Duration
	// MaxRetries bounds retries of shared-scope 429s, 502/503/504 and network errors. Default 3;
	// negative means none.
	MaxRetries int
	// UpstreamTimeout bounds the wait for Discord's response headers on one attempt. Default 60s.
	UpstreamTimeout time.Duration
	// Cluster, when set, makes this process one of several rest processes of the bot (cluster mode): it
	// sends to Discord only while it leads a token's election, and forwards to the leader otherwise.
	// NATSCluster builds the one on NATS.
	Cluster *Cluster
	// Limits configures the rate limiter (global rate, invalid-request limit).
	Limits ratelimit.Options
	// Transport sends upstream requests. Default: a pooled transport built for the load (NewTransport).
	Transport http.RoundTripper
	// Registerer receives the proxy's metrics. Nil: not registered.
	Registerer prometheus.Registerer
	// Logger; default zap.NewNop().
	Logger *zap.Logger
}

// Proxy is the rest role's http.Handler.
type Proxy struct {
	o         Options
	base      string // APIURL without a trailing slash
	botAuth   string // "Bot <token>"
	transport http.RoundTripper
	ownsTrans bool
	lim       *ratelimit.Limiter
	m         *metrics
	log       *zap.Logger
	bufs      sync.Pool
	health    upstreamHealth
	cluster   *clusterState // nil: one machine
}

// New builds a Proxy.
func New(o Options) (*Proxy, error) {
	if o.Token == "" {
		return nil, errors.New("restproxy: a bot token is required")
	}
	u, err := url.Parse(o.APIURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("restproxy: API URL %q is not an http(s) URL", o.APIURL)
	}
	if o.APIVersion <= 0 {
		o.APIVersion = 10
	}
	if o.UserAgent == "" {
		o.UserAgent = "DiscordBot (https://github.com/ddhq/dd, dev)"
	}
	if o.MaxBody <= 0 {
		o.MaxBody = 100 << 20
	}
	if o.MemoryBody <= 0 {
		o.MemoryBody = 1 << 20
	}
	if o.MaxWait <= 0 {
		o.MaxWait = time.Minute
	}
	if o.MaxRetries == 0 {
		o.MaxRetries = 3
	}
	if o.MaxRetries < 0 {
		o.MaxRetries = 0
	}
	if o.UpstreamTimeout <= 0 {
		o.UpstreamTimeout = time.Minute
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	p := &Proxy{o: o, base: strings.TrimRight(o.APIURL, "/"), botAuth: "Bot " + o.Token, transport: o.Transport,
		lim: ratelimit.New(o.Limits), log: o.Logger}
	if p.transport == nil {
		p.transport, p.ownsTrans = NewTransport(o.UpstreamTimeout), true
	}
	p.m = newMetrics(o.Registerer, p.lim)
	p.bufs.New = func() any { b := make([]byte, 32<<10); return &b }
	p.health.failed = make(chan struct{}, 1)
	if o.Cluster != nil {
		p.initCluster(o.Cluster, o.Registerer)
	}
	return p, nil
}

// NewTransport is the upstream transport: one keep-alive pool sized for a large bot's load (hundreds of
// requests in flight to one host), HTTP/2 where the server offers it, no transparent decompression (the
// caller's Accept-Encoding is forwarded and Discord's bytes passed through as they are).
func NewTransport(responseHeaderTimeout time.Duration) *http.Transport {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           d.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   512,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: responseHeaderTimeout,
		DisableCompression:    true,
		WriteBufferSize:       32 << 10,
		ReadBufferSize:        32 << 10,
	}
}

// Limiter is the proxy's rate limiter (for tests and metrics).
func (p *Proxy) Limiter() *ratelimit.Limiter { return p.lim }

// Close releases the limiter's background work and idle upstream connections.
func (p *Proxy) Close() {
	if p.cluster != nil {
		p.cluster.close()
	}
	p.lim.Close()
	if t, ok := p.transport.(*http.Transport); ok && p.ownsTrans {
		t.CloseIdleConnections()
	}
}

func (p *Proxy) refuse(w http.ResponseWriter, status int, reason, msg string) {
	p.m.refused.WithLabelValues(reason).Inc()
	p.m.answered("refused", status)
	httpapi.WriteError(w, status, msg)
}

// ServeHTTP serves one Discord API request.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if msg := checkRequestTarget(r.RequestURI); msg != "" {
		p.refuse(w, http.StatusBadRequest, "bad_request", msg)
		return
	}
	if !knownMethods[r.Method] {
		w.Header().Set("Allow", "GET, HEAD, POST, PUT, PATCH, DELETE")
		p.refuse(w, http.StatusMethodNotAllowed, "bad_request", "method "+strconv.Quote(r.Method)+" is not one Discord's API serves")
		return
	}
	if msg := headerProblem(r.Header); msg != "" {
		p.refuse(w, http.StatusBadRequest, "bad_request", msg)
		return
	}
	rawPath, rawQuery, _ := strings.Cut(r.RequestURI, "?")

	if rawPath == "/timecheck" && (r.Method == "GET" || r.Method == "HEAD") {
		if _, ok := p.authorize(r); !ok {
			p.unauthorized(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]int64{"message": time.Now().UnixMilli()})
		return
	}
	version, apiPath, isAPI := splitVersion(rawPath, p.o.APIVersion)
	route := ratelimit.ParseRoute(r.Method, apiPath, time.Now())
	auth, ok := p.authorize(r)
	if !ok && !(isAPI && route.Key == "GET /gateway") {
		p.unauthorized(w, r)
		return
	}
	if !isAPI {
		p.refuse(w, http.StatusNotFound, "bad_request", "not a Discord API path: use /api/v{N}/..., /v{N}/... or /api/...")
		return
	}
	identity := auth
	if route.Unauthenticated {
		// The path's token authenticates (webhooks, interactions) or nothing is needed (GET /gateway):
		// the limits are the webhook's or interaction's, whichever bot sends.
		identity = ""
	}
	var lead <-chan struct{} // cluster mode: closed when this process stops leading the token
	if p.cluster != nil {
		if lead = p.route(w, r, auth, identity); lead == nil {
			return // forwarded to the leader, or refused
		}
	}

	b, err := readBody(r.Body, r.ContentLength, p.o.MemoryBody, p.o.MaxBody, p.o.SpoolDir)
	if err != nil {
		if errors.Is(err, errTooLarge) {
			p.refuse(w, http.StatusRequestEntityTooLarge, "too_large",
				fmt.Sprintf("the request body is over rest.max_body (%d bytes)", p.o.MaxBody))
			return
		}
		if errors.Is(err, errSpool) {
			// dd's own trouble (rest.spool_dir full or gone): said as such, and loudly.
			p.log.Error("cannot spool a request body; the request is refused (check rest.spool_dir's free space)",
				zap.String("spool_dir", p.o.SpoolDir), zap.Error(err))
			p.refuse(w, http.StatusInsufficientStorage, "spool", "dd cannot store the request body (rest.spool_dir is full or unusable): not forwarded")
			return
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			p.refuse(w, http.StatusRequestTimeout, "slow_body", err.Error()+": not forwarded")
			return
		}
		// The caller went away, or sent a broken body, before dd accepted the request: nothing to do.
		p.refuse(w, http.StatusBadRequest, "bad_request", "the request body could not be read: not forwarded")
		return
	}
	defer b.Close()

	target := p.base + "/v" + strconv.Itoa(version) + apiPath
	if rawQuery != "" {
		target += "?" + rawQuery
	}
	h := forwardHeaders(r.Header, p.o.SecretHeader)
	h["User-Agent"] = []string{p.o.UserAgent}
	if auth != "" {
		h["Authorization"] = []string{auth}
	}
	// Accepted now that it is fully received: rest.max_wait counts from here.
	out := &outgoing{method: r.Method, target: target, header: h, identity: identity, route: route, body: b, accepted: time.Now(), lead: lead}
	p.forward(w, out)
}

// outgoing is an accepted request on its way to Discord.
type outgoing struct {
	method, target string
	header         http.Header // as sent upstream, Authorization and User-Agent included
	identity       string
	route          ratelimit.Route
	body           *body
	accepted       time.Time
	lead           <-chan struct{} // cluster mode: closed when this process stops leading; nil otherwise
}

func forwardHeaders(in http.Header, secretHeader string) http.Header {
	out := make(http.Header, len(in)+2)
	for k, vs := range in {
		if dropRequestHeaders[k] || (secretHeader != "" && strings.EqualFold(k, secretHeader)) {
			continue
		}
		out[k] = vs
	}
	return out
}

// authorize decides whether the caller may use dd, and with which Authorization dd sends upstream.
func (p *Proxy) authorize(r *http.Request) (string, bool) {
	authz := r.Header.Get("Authorization")
	viaHeader := p.o.SecretHeader != "" && p.o.Secret != "" && httpapi.SecretMatches(r.Header.Get(p.o.SecretHeader), p.o.Secret)
	open := p.o.Secret == "" // no secret configured: a loopback-only deployment
	switch {
	case httpapi.SecretMatches(authz, p.o.Secret), httpapi.SecretMatches(authz, p.botAuth):
		return p.botAuth, true
	case authz == "" && (viaHeader || open):
		return p.botAuth, true
	case strings.HasPrefix(authz, "Bot "):
		if p.o.AllowAnyToken && validToken(authz[len("Bot "):]) {
			return authz, true
		}
		return "", false
	case authz != "" && (viaHeader || open) && !strings.ContainsAny(authz, "\r\n"):
		return authz, true // the caller's own credentials (OAuth2 Bearer, Basic) pass through
	}
	return "", false
}

func validToken(t string) bool {
	if t == "" || len(t) > 200 {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

func (p *Proxy) unauthorized(w http.ResponseWriter, r *http.Request) {
	// Answered without reading the body: Go's server would otherwise read up to 256 KiB of it before
	// sending the 401, so a stranger's slow body would hold the handler. The connection closes after.
	httpapi.DropUnreadBody(w, r)
	p.m.unauthorized.Inc()
	p.m.answered("unauthorized", http.StatusUnauthorized)
	msg := "missing or wrong Authorization: send the rest secret, or \"Bot <the configured token>\""
	if p.o.SecretHeader != "" {
		msg += ", or the secret in " + p.o.SecretHeader
	}
	httpapi.WriteError(w, http.StatusUnauthorized, msg)
}

// maxRateLimitRetries bounds retries of user and global 429s for one request: Discord asking again and
// again means something dd does not model, and retrying forever would only earn invalid requests.
const maxRateLimitRetries = 10

// forward sends an accepted request, retrying where Discord or the network allow, and writes the answer.
// It does not watch the caller: a caller that disconnects does not cancel its request.
func (p *Proxy) forward(w http.ResponseWriter, out *outgoing) {
	ctx, cancel := context.WithDeadline(context.Background(), out.accepted.Add(p.o.MaxWait))
	defer cancel()
	if out.lead != nil {
		// A leader that loses its lease sends nothing more: its waits end at once.
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			select {
			case <-out.lead:
				cancel()
			case <-stop:
			}
		}()
	}
	label := p.m.route(out.route.Key)
	retries, limited, attempts := 0, 0, 0
	for {
		waitStart := time.Now()
		tk, err := p.lim.Acquire(ctx, out.identity, out.route)
		p.m.queueWait.WithLabelValues(label).Observe(time.Since(waitStart).Seconds())
		if err == nil && out.lead != nil && closed(out.lead) {
			tk.Cancel()
			err = context.Canceled
		}
		if err != nil {
			if out.lead != nil && closed(out.lead) {
				p.lostLead(w, label, attempts)
				return
			}
			p.refuseLimited(w, label, err)
			return
		}
		attempts++
		p.m.upstream.Inc()
		resp, err := p.send(out)
		if err != nil {
			p.m.upstream.Dec()
			tk.Failed()
			if idempotent(out.method) && retries < p.o.MaxRetries && p.backoff(ctx, retries) {
				retries++
				p.m.retries.WithLabelValues("network").Inc()
				continue
			}
			p.log.Warn("Discord unreachable", zap.String("route", out.route.Key), zap.String("error", scrub(err.Error(), out)))
			p.m.refused.WithLabelValues("unreachable").Inc()
			p.m.answered(label, http.StatusBadGateway)
			httpapi.WriteError(w, http.StatusBadGateway, "Discord could not be reached ("+scrub(err.Error(), out)+")")
			return
		}

		if resp.StatusCode == http.StatusTooManyRequests {
			body, rl := read429(resp)
			p.m.upstream.Dec()
			o := tk.Done(rl)
			p.m.rateLimited.WithLabelValues(o.Scope).Inc()
			p.log.Warn("Discord answered 429", zap.String("route", out.route.Key), zap.String("scope", o.Scope),
				zap.Duration("retry_after", o.RetryAfter))
			switch {
			case o.Scope == ratelimit.ScopeBan:
				p.refuseLimited(w, label, ratelimit.ErrBanned)
				return
			case o.Scope == ratelimit.ScopeShared && retries < p.o.MaxRetries:
				retries++
				p.m.retries.WithLabelValues("429_shared").Inc()
				continue
			case o.Scope != ratelimit.ScopeShared && limited < maxRateLimitRetries:
				limited++
				p.m.retries.WithLabelValues("429_" + o.Scope).Inc()
				continue
			}
			// A shared-scope 429 on the last retry (or an endless run of them): the caller decides.
			p.writeHead(w, resp, label)
			_, _ = w.Write(body)
			return
		}

		tk.Done(ratelimit.Response{Status: resp.StatusCode, Header: resp.Header})
		switch resp.StatusCode {
		case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			if idempotent(out.method) && retries < p.o.MaxRetries && p.backoff(ctx, retries) {
				drain(resp.Body)
				p.m.upstream.Dec()
				retries++
				p.m.retries.WithLabelValues(strconv.Itoa(resp.StatusCode)).Inc()
				continue
			}
		}
		p.stream(w, resp, label)
		p.m.upstream.Dec()
		return
	}
}

// send makes one attempt.
func (p *Proxy) send(out *outgoing) (*http.Response, error) {
	req, err := http.NewRequestWithContext(context.Background(), out.method, out.target, nil)
	if err != nil {
		return nil, err
	}
	req.Header = out.header // the transport does not modify it: every attempt shares it
	if out.body.size > 0 {
		req.ContentLength = out.body.size
		req.Body = io.NopCloser(out.body.reader())
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(out.body.reader()), nil }
	} else if out.method == "POST" || out.method == "PUT" || out.method == "PATCH" {
		req.Body = http.NoBody // sent with "Content-Length: 0", which Discord's edge wants on bodiless writes
	}
	resp, err := p.transport.RoundTrip(req)
	p.observeResponse(resp, err, out)
	return resp, err
}

// read429 reads a 429's (small) body and what the limiter needs from it.
func read429(resp *http.Response) ([]byte, ratelimit.Response) {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	drain(resp.Body)
	rl := ratelimit.Response{Status: resp.StatusCode, Header: resp.Header}
	var v struct {
		RetryAfter *float64 `json:"retry_after"`
		Global     bool     `json:"global"`
	}
	if json.Unmarshal(body, &v) == nil {
		rl.JSON = true
		rl.Global = v.Global
		if v.RetryAfter != nil && *v.RetryAfter >= 0 {
			rl.RetryAfter = time.Duration(*v.RetryAfter * float64(time.Second))
		}
	}
	return body, rl
}

// writeHead copies Discord's status and headers to the caller.
func (p *Proxy) writeHead(w http.ResponseWriter, resp *http.Response, label string) {
	h := w.Header()
	for k, vs := range resp.Header {
		if !dropResponseHeaders[k] {
			h[k] = vs
		}
	}
	p.m.answered(label, resp.StatusCode)
	w.WriteHeader(resp.StatusCode)
}

// stream passes Discord's answer through as it arrives. If the caller has gone, the rest is read and
// dropped so that the connection to Discord can be reused.
func (p *Proxy) stream(w http.ResponseWriter, resp *http.Response, label string) {
	defer resp.Body.Close()
	p.writeHead(w, resp, label)
	bp := p.bufs.Get().(*[]byte)
	defer p.bufs.Put(bp)
	if _, err := io.CopyBuffer(w, resp.Body, *bp); err != nil {
		drain(resp.Body)
	}
}

func drain(rc io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(rc, 4<<20))
	_ = rc.Close()
}

// backoff waits before retry n (100 ms doubling, at most 2 s); false if the wait would pass the
// request's deadline.
func (p *Proxy) backoff(ctx context.Context, n int) bool {
	d := min(100*time.Millisecond<<n, 2*time.Second)
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		return false
	}
	return ctxsleep.Sleep(ctx, d) == nil
}

func idempotent(method string) bool {
	switch method {
	case "GET", "HEAD", "PUT", "DELETE":
		return true
	}
	return false
}

// refuseLimited answers a request the limiter would not let through.
func (p *Proxy) refuseLimited(w http.ResponseWriter, label string, err error) {
	status, reason, msg := http.StatusServiceUnavailable, "shutdown", "dd is shutting down"
	switch {
	case errors.Is(err, ratelimit.ErrWouldWait):
		status, reason = http.StatusGatewayTimeout, "max_wait"
		msg = fmt.Sprintf("the request would wait longer than rest.max_wait (%s) for Discord's rate limits", p.o.MaxWait)
	case errors.Is(err, ratelimit.ErrInvalidRequestBudget):
		reason, msg = "invalid_requests", err.Error()[len("ratelimit: "):]
	case errors.Is(err, ratelimit.ErrBanned):
		reason, msg = "banned", err.Error()[len("ratelimit: "):]
	}
	p.m.refused.WithLabelValues(reason).Inc()
	p.m.answered(label, status)
	httpapi.WriteError(w, status, msg)
}

// scrub removes the request's URL (which may hold a webhook token) from an error message.
func scrub(msg string, out *outgoing) string {
	return strings.ReplaceAll(msg, out.target, "<url>")
}
