package ratelimit

import (
	"net/http"
	"strconv"
	"time"
)

// Rate-limit scopes, as in X-RateLimit-Scope; ScopeBan is dd's name for Cloudflare's ban page (a 429
// without scope or JSON).
const (
	ScopeUser   = "user"
	ScopeGlobal = "global"
	ScopeShared = "shared"
	ScopeBan    = "ban"
)

// Response is what Discord answered to one attempt, as far as the limiter cares.
type Response struct {
	Status int
	Header http.Header
	// RetryAfter is a 429 body's retry_after (more precise than the Retry-After header); 0 if unknown.
	RetryAfter time.Duration
	// Global is a 429 body's "global" field.
	Global bool
	// JSON says whether a 429's body was JSON; a 429 that is neither JSON nor scoped is Cloudflare's
	// ban page.
	JSON bool
}

// rateHeaders is the parsed X-RateLimit-* set.
type rateHeaders struct {
	hasLimit   bool
	limit      int
	remaining  int
	reset      float64 // X-RateLimit-Reset, unix seconds; 0 when absent
	resetAfter time.Duration
	bucket     string
	scope      string
	global     bool
	retryAfter time.Duration // Retry-After header
}

func parseRateHeaders(h http.Header) rateHeaders {
	var r rateHeaders
	if h == nil {
		return r
	}
	if v := h.Get("X-Ratelimit-Limit"); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			r.limit, r.hasLimit = n, true
		}
	}
	if r.hasLimit {
		n, err := strconv.Atoi(h.Get("X-Ratelimit-Remaining"))
		if err != nil || n < 0 {
			n = 0
		}
		r.remaining = n
		if f, err := strconv.ParseFloat(h.Get("X-Ratelimit-Reset-After"), 64); err == nil && f >= 0 {
			r.resetAfter = secs(f)
		} else {
			r.hasLimit = false // a limit without a reset cannot be kept
		}
		if f, err := strconv.ParseFloat(h.Get("X-Ratelimit-Reset"), 64); err == nil && f > 0 {
			r.reset = f
		}
	}
	r.bucket = h.Get("X-Ratelimit-Bucket")
	r.scope = h.Get("X-Ratelimit-Scope")
	r.global = h.Get("X-Ratelimit-Global") == "true"
	if f, err := strconv.ParseFloat(h.Get("Retry-After"), 64); err == nil && f >= 0 {
		r.retryAfter = secs(f)
	}
	return r
}

func secs(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }

func unixSecs(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }
