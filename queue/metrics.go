package queue

import (
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	appended      prometheus.Counter
	acked         *prometheus.CounterVec
	dropped       prometheus.Counter
	commitErrors  prometheus.Counter
	diskFullWaits prometheus.Counter
	batchEvents   prometheus.Histogram
	commitSeconds prometheus.Histogram
}

func newMetrics(q *Queue, reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		appended: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dd_queue_appended_events_total", Help: "Events appended to the queue."}),
		acked: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dd_queue_acked_events_total", Help: "Events acknowledged, by consumer."}, []string{"consumer"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dd_queue_dropped_events_total",
			Help: "Oldest events dropped because the queue held more than events.max_queue_events."}),
		commitErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dd_queue_commit_errors_total", Help: "Queue commits that failed."}),
		diskFullWaits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dd_queue_disk_full_waits_total",
			Help: "Appends that found the store's disk full and waited for space (see dd_disk_full)."}),
		batchEvents: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "dd_queue_commit_batch_events",
			Help:    "Events written per group commit.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 8), // 1 .. 16384
		}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "dd_queue_commit_seconds",
			Help:    "Time to write one queue transaction.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 4, 9), // 50µs .. 3.3s
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.appended, m.acked, m.dropped, m.commitErrors, m.diskFullWaits, m.batchEvents,
		m.commitSeconds, depthCollector{q}} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

var (
	storedDesc = prometheus.NewDesc("dd_queue_stored_events",
		"Events stored in the queue (not yet acknowledged by every consumer).", nil, nil)
	depthDesc = prometheus.NewDesc("dd_queue_depth_events",
		"Stored events a consumer has not acknowledged yet.", []string{"consumer"}, nil)
)

// depthCollector computes the depth gauges when scraped, from the queue's memory.
type depthCollector struct{ q *Queue }

func (d depthCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- storedDesc
	ch <- depthDesc
}

func (d depthCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(storedDesc, prometheus.GaugeValue, float64(d.q.Depth()))
	d.q.shardsMu.RLock()
	consumers := append([]*Consumer(nil), d.q.consumers...)
	d.q.shardsMu.RUnlock()
	for _, c := range consumers {
		ch <- prometheus.MustNewConstMetric(depthDesc, prometheus.GaugeValue, float64(c.Depth()), c.name)
	}
}
