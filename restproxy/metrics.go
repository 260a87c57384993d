package restproxy

import (
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ddhq/dd/ratelimit"
)

// maxRouteLabels bounds the route label's values: route keys are templates, but an authorised caller
// could still invent paths; past this many, new ones are counted as "other".
const maxRouteLabels = 2000

type metrics struct {
	requests     *prometheus.CounterVec   // route, status: answers given to callers
	rateLimited  *prometheus.CounterVec   // scope: 429s received from Discord
	retries      *prometheus.CounterVec   // reason
	refused      *prometheus.CounterVec   // reason: answers dd made itself
	queueWait    *prometheus.HistogramVec // route
	unauthorized prometheus.Counter
	upstream     prometheus.Gauge // attempts in flight to Discord

	mu     sync.Mutex
	routes map[string]bool
}

func newMetrics(reg prometheus.Registerer, lim *ratelimit.Limiter) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dd_rest_requests_total",
			Help: "Requests answered by the rest role, by route (bucket route key) and status."}, []string{"route", "status"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dd_rest_discord_429_total",
			Help: "429 answers received from Discord, by X-RateLimit-Scope (user, global, shared, ban). dd aims for zero."}, []string{"scope"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dd_rest_retries_total",
			Help: "Attempts retried, by reason."}, []string{"reason"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dd_rest_refused_total",
			Help: "Requests dd answered itself without (or after failing) reaching Discord, by reason."}, []string{"reason"}),
		queueWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "dd_rest_queue_wait_seconds",
			Help:    "Time requests waited in dd's rate-limit queues (bucket and global) before being sent.",
			Buckets: []float64{.0005, .001, .005, .01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}}, []string{"route"}),
		unauthorized: prometheus.NewCounter(prometheus.CounterOpts{Name: "dd_rest_unauthorized_total",
			Help: "Callers refused with 401 (never forwarded to Discord)."}),
		upstream: prometheus.NewGauge(prometheus.GaugeOpts{Name: "dd_rest_upstream_in_flight",
			Help: "Attempts in flight to Discord."}),
		routes: map[string]bool{},
	}
	if reg == nil {
		return m
	}
	reg.MustRegister(m.requests, m.rateLimited, m.retries, m.refused, m.queueWait, m.unauthorized, m.upstream,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "dd_rest_queue_depth",
			Help: "Requests waiting in dd's rate-limit queues."},
			func() float64 { return float64(lim.Stats().Waiting) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "dd_rest_invalid_requests",
			Help: "401/403/429 answers from Discord in the last 10 minutes (Discord bans at 10,000; dd stops at rest.invalid_request_limit)."},
			func() float64 { return float64(lim.Stats().InvalidRequests) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "dd_rest_invalid_requests_total",
			Help: "401/403/429 answers from Discord since start."},
			func() float64 { return float64(lim.Stats().InvalidTotal) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "dd_rest_buckets",
			Help: "Rate-limit buckets held in memory (idle ones are reclaimed)."},
			func() float64 { return float64(lim.Stats().Buckets) }),
	)
	return m
}

// route returns the label for a route key, bounded in number.
func (m *metrics) route(key string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.routes[key] {
		return key
	}
	if len(m.routes) >= maxRouteLabels {
		return "other"
	}
	m.routes[key] = true
	return key
}

func (m *metrics) answered(route string, status int) {
	m.requests.WithLabelValues(route, statusLabel(status)).Inc()
}

var statusLabels = func() (s [600]string) {
	for i := range s {
		s[i] = strconv.Itoa(i)
	}
	return
}()

func statusLabel(code int) string {
	if code >= 0 && code < len(statusLabels) {
		return statusLabels[code]
	}
	return strconv.Itoa(code)
}
