package delivery

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// BotPoster is the HTTP side of delivering events to the bot, for any reader of events that delivers
// them (the Deliverer here; cluster mode's delivery from the stream could share it): events.urls checked,
// shard N's URL, one POST of a body with the events secret and the event ids, and the name of a failure
// in dd_delivery_failed_attempts_total. It neither retries nor acknowledges: its caller does. http://
// URLs are posted to over HTTP/1.1 on the caller's goroutine (h1.go), https ones through net/http.
type BotPoster struct {
	urls, shown []string             // shown: as logged, passwords masked (url.URL.Redacted)
	h1          map[string]*h1Client // by URL: the http:// ones, unless o.Client was given
	o           PosterOptions
}

// PosterOptions configure NewBotPoster.
type PosterOptions struct {
	URLs   []string // events.urls: shard N goes to URLs[N % len(URLs)]
	Secret string   // events.secret: sent as Authorization; omitted when empty
	// Batch adds X-DD-Event-Ids, every event's id in order, to each POST (events.batch_max above 1).
	Batch bool
	// Timeout bounds one POST, answer included. Default 10s.
	Timeout time.Duration
	// MaxIdle is how many idle connections are kept per bot host. Default 256.
	MaxIdle int
	// Client overrides the HTTP client (its Timeout is ignored: Timeout applies).
	Client *http.Client
}

// NewBotPoster checks the URLs (each an http(s) URL with a host) and builds the client.
func NewBotPoster(o PosterOptions) (*BotPoster, error) {
	if len(o.URLs) == 0 {
		return nil, errors.New("no URL to deliver events to (events.urls)")
	}
	shown := make([]string, len(o.URLs))
	for i, u := range o.URLs {
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return nil, fmt.Errorf("events.urls: entry %d is not an http(s) URL", i)
		}
		shown[i] = p.Redacted()
	}
	if o.Timeout <= 0 {
		o.Timeout = defaultTimeout
	}
	if o.MaxIdle <= 0 {
		o.MaxIdle = defaultMaxInFlight
	}
	var h1 map[string]*h1Client
	if o.Client == nil {
		h1 = map[string]*h1Client{}
		for _, u := range o.URLs {
			if c := newH1Client(u, o.Secret, o.MaxIdle); c != nil {
				h1[u] = c
			}
		}
		o.Client = defaultClient(o.MaxIdle, len(o.URLs))
	}
	return &BotPoster{urls: o.URLs, shown: shown, h1: h1, o: o}, nil
}

// defaultClient is net/http's client for https URLs (and, before the HTTP/1.1 path, every URL).
func defaultClient(maxIdle, urls int) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        maxIdle * urls,
			MaxIdleConnsPerHost: maxIdle,
			IdleConnTimeout:     90 * time.Second,
			ForceAttemptHTTP2:   true,
		},
		// A redirect is not followed: a 301/302 would turn the POST into a GET without the events, and
		// its 2xx would acknowledge them. It counts as a failure instead.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// AppendBody appends to b the POST body of n events, event i appended by add: the one envelope alone,
// or, when batching (events.batch_max above 1), a JSON array of them (even of one).
func AppendBody(b []byte, n int, batch bool, add func(b []byte, i int) []byte) []byte {
	if batch {
		b = append(b, '[')
	}
	for i := range n {
		if i > 0 {
			b = append(b, ',')
		}
		b = add(b, i)
	}
	if batch {
		b = append(b, ']')
	}
	return b
}

// URL is where shard's events go, and that URL as logged (its password masked).
func (p *BotPoster) URL(shard int) (target, shown string) {
	return p.urls[shard%len(p.urls)], p.shown[shard%len(p.shown)]
}

// Post sends one attempt: body, with ids[0] as X-DD-Event-Id (and every id in X-DD-Event-Ids when
// batching). Nil when the bot answered 2xx; otherwise reason is the failure's metric label (status_5xx,
// status_4xx, status_other, timeout, network, request).
func (p *BotPoster) Post(ctx context.Context, target string, body []byte, ids []string) (reason string, err error) {
	if h := p.h1[target]; h != nil {
		status, reason, err := h.post(ctx, p.o.Timeout, body, ids, p.o.Batch)
		if err != nil {
			return reason, err
		}
		return statusFailure(status, strconv.Itoa(status)+" "+http.StatusText(status))
	}
	pctx, cancel := context.WithTimeout(ctx, p.o.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(pctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return "request", err
	}
	req.Header.Set("Content-Type", "application/json")
	if p.o.Secret != "" {
		req.Header.Set("Authorization", p.o.Secret)
	}
	req.Header.Set("X-DD-Event-Id", ids[0])
	if p.o.Batch {
		req.Header.Set("X-DD-Event-Ids", strings.Join(ids, ","))
	}
	resp, err := p.o.Client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return "timeout", fmt.Errorf("no answer within %s: %w", p.o.Timeout, err)
		}
		return "network", err
	}
	// Read what the bot sent so that the connection can be reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return statusFailure(resp.StatusCode, resp.Status)
}

// statusFailure is nil for a 2xx, else the failure's metric label and error.
func statusFailure(code int, status string) (reason string, err error) {
	switch {
	case code >= 200 && code < 300:
		return "", nil
	case code >= 500:
		reason = "status_5xx"
	case code >= 400:
		reason = "status_4xx"
	default:
		reason = "status_other"
	}
	return reason, fmt.Errorf("bot answered %s", status)
}
