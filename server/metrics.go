package server

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// stats are the core's own metrics: what happens on its hot paths,
// counted as it happens (atomics and lock-free Prometheus counters), and
// what it holds, read at scrape time. What happens once per session or
// per moderation action is not counted here: a metrics observer counts
// it from the life events (observe.go).
type stats struct {
	published   prometheus.Counter
	rateLimited *prometheus.CounterVec // by kind: publish, ops, connect, signal
	appendTime  prometheus.Histogram
	latency     prometheus.Histogram // commit to hand-over to the transport
	delivered   atomic.Uint64        // items handed to transports

	deliveredDesc *prometheus.Desc
	sessionsDesc  *prometheus.Desc
	droppedDesc   *prometheus.Desc
	srv           *Server
}

func newStats(s *Server) *stats {
	st := &stats{srv: s}
	st.published = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "herald_messages_published_total", Help: "Messages accepted by the publish pipeline (stored or ephemeral)."})
	st.rateLimited = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_rate_limited_total", Help: "Requests refused by a rate limit, by kind."}, []string{"kind"})
	st.appendTime = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "herald_store_append_seconds", Help: "Time from a publish reaching the store to its durable acknowledgement.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)})
	st.latency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "herald_delivery_latency_seconds", Help: "Time from a message's commit to its hand-over to a transport writer (sampled once per write).",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)})
	st.deliveredDesc = prometheus.NewDesc("herald_messages_delivered_total", "Messages handed to transport writers.", nil, nil)
	st.sessionsDesc = prometheus.NewDesc("herald_sessions", "Open sessions, by transport.", []string{"transport"}, nil)
	st.droppedDesc = prometheus.NewDesc("herald_observer_events_dropped_total",
		"Life events an observer lost because its queue was full, by observer.", []string{"observer"}, nil)
	for _, k := range []string{"publish", "ops", "connect", "signal"} {
		st.rateLimited.WithLabelValues(k)
	}
	return st
}

// observeDelivery records a drain: n items, the first committed at
// first (zero when unknown).
func (st *stats) observeDelivery(n int, first time.Time) {
	st.delivered.Add(uint64(n))
	if !first.IsZero() {
		st.latency.Observe(time.Since(first).Seconds())
	}
}

// Describe is part of prometheus.Collector.
func (st *stats) Describe(ch chan<- *prometheus.Desc) {
	st.published.Describe(ch)
	st.rateLimited.Describe(ch)
	st.appendTime.Describe(ch)
	st.latency.Describe(ch)
	ch <- st.deliveredDesc
	ch <- st.sessionsDesc
	ch <- st.droppedDesc
}

// Collect is part of prometheus.Collector.
func (st *stats) Collect(ch chan<- prometheus.Metric) {
	st.published.Collect(ch)
	st.rateLimited.Collect(ch)
	st.appendTime.Collect(ch)
	st.latency.Collect(ch)
	ch <- prometheus.MustNewConstMetric(st.deliveredDesc, prometheus.CounterValue, float64(st.delivered.Load()))
	s := st.srv
	counts := s.sessions.byTransport()
	s.transports.mu.Lock()
	list := append([]*Transport(nil), s.transports.list...)
	s.transports.mu.Unlock()
	for _, t := range list {
		ch <- prometheus.MustNewConstMetric(st.sessionsDesc, prometheus.GaugeValue, float64(counts[t]), t.name)
	}
	for _, o := range s.obs.all() {
		ch <- prometheus.MustNewConstMetric(st.droppedDesc, prometheus.CounterValue, float64(o.Dropped()), o.name)
	}
}

// Metrics returns the core's own metrics, for a Prometheus registry:
// messages published and delivered, store append and delivery latency,
// rate-limit refusals by kind, open sessions by transport (every
// registered transport, 0 included), and the events each observer
// dropped. Life-event counts (sessions opened and closed, moderation) are
// for an observer to keep.
func (s *Server) Metrics() prometheus.Collector { return s.stats }
