package cache

import (
	"encoding/binary"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	applied      *prometheus.CounterVec
	skipped      *prometheus.CounterVec
	notCached    prometheus.Counter // skipped{reason="not_cached"}, looked up once
	applySeconds prometheus.Histogram
}

func newMetrics(c *Cache, reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		applied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dd_cache_events_applied_total", Help: "Gateway events applied to the cache, by event name."},
			[]string{"event"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dd_cache_events_skipped_total",
			Help: "Gateway events the cache did not apply, by reason (not_cached: an event it does not keep; malformed).",
		}, []string{"reason"}),
		applySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "dd_cache_apply_seconds", Help: "Time to apply one batch of events, commit included.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 9), // 0.1ms .. 6.5s
		}),
	}
	m.notCached = m.skipped.WithLabelValues("not_cached")
	if reg == nil {
		return m, nil
	}
	objects := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "dd_cache_objects", Help: "Objects in the cache, by kind."}, []string{"kind"})
	cs := []prometheus.Collector{m.applied, m.skipped, m.applySeconds, gaugeCollector{objects, c}}
	for _, col := range cs {
		if err := reg.Register(col); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// gaugeCollector reads the counters when scraped.
type gaugeCollector struct {
	g *prometheus.GaugeVec
	c *Cache
}

func (g gaugeCollector) Describe(ch chan<- *prometheus.Desc) { g.g.Describe(ch) }

func (g gaugeCollector) Collect(ch chan<- prometheus.Metric) {
	for i, name := range counterNames {
		g.g.WithLabelValues(name).Set(float64(g.c.counts[i].Load()))
	}
	g.g.Collect(ch)
}

func varint(b []byte) (int64, int) { return binary.Varint(b) }
