package server

import (
	"crypto/subtle"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the server's Prometheus metrics, on a registry of its own
// (no global state). Hot paths count with atomics read at scrape time.
type metrics struct {
	registry *prometheus.Registry

	opened      *prometheus.CounterVec // by transport
	closed      *prometheus.CounterVec // by transport and reason
	published   prometheus.Counter
	rateLimited *prometheus.CounterVec // by kind: publish, ops, connect, signal
	moderation  *prometheus.CounterVec // by action: disconnect, ban
	appendTime  prometheus.Histogram
	latency     prometheus.Histogram // commit to hand-over to the transport

	delivered atomic.Uint64 // items handed to transports
}

func newMetrics(s *Server) *metrics {
	m := &metrics{registry: prometheus.NewRegistry()}
	m.opened = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_sessions_opened_total", Help: "Sessions opened, by transport."}, []string{"transport"})
	m.closed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_sessions_closed_total", Help: "Sessions closed, by transport and reason (slow_consumer counts slow readers)."},
		[]string{"transport", "reason"})
	m.published = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "herald_messages_published_total", Help: "Messages accepted by the publish pipeline (stored or ephemeral)."})
	m.rateLimited = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_rate_limited_total", Help: "Requests refused by a rate limit, by kind."}, []string{"kind"})
	m.moderation = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_moderation_total", Help: "Moderation actions, by action."}, []string{"action"})
	m.appendTime = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "herald_store_append_seconds", Help: "Time from a publish reaching the store to its durable acknowledgement.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)})
	m.latency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "herald_delivery_latency_seconds", Help: "Time from a message's commit to its hand-over to a transport writer (sampled once per write).",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)})
	delivered := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "herald_messages_delivered_total", Help: "Messages handed to transport writers."},
		func() float64 { return float64(m.delivered.Load()) })
	sessions := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "herald_sessions", Help: "Open sessions, by transport."}, []string{"transport"})
	m.registry.MustRegister(m.opened, m.closed, m.published, m.rateLimited, m.moderation,
		m.appendTime, m.latency, delivered, &sessionGauge{s: s, vec: sessions},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, t := range []string{"sse", "ws", "poll"} {
		m.opened.WithLabelValues(t)
	}
	for _, k := range []string{"publish", "ops", "connect", "signal"} {
		m.rateLimited.WithLabelValues(k)
	}
	return m
}

// sessionGauge counts open sessions by transport at scrape time.
type sessionGauge struct {
	s   *Server
	vec *prometheus.GaugeVec
}

func (g *sessionGauge) Describe(ch chan<- *prometheus.Desc) { g.vec.Describe(ch) }

func (g *sessionGauge) Collect(ch chan<- prometheus.Metric) {
	counts := map[string]int{"sse": 0, "ws": 0, "poll": 0}
	g.s.mu.Lock()
	for _, sess := range g.s.sessions {
		counts[sess.Transport]++
	}
	g.s.mu.Unlock()
	for t, n := range counts {
		g.vec.WithLabelValues(t).Set(float64(n))
	}
	g.vec.Collect(ch)
}

// observeDelivery records a drain: n items, the first committed at
// first (zero when unknown).
func (m *metrics) observeDelivery(n int, first time.Time) {
	m.delivered.Add(uint64(n))
	if !first.IsZero() {
		m.latency.Observe(time.Since(first).Seconds())
	}
}

// MetricsHandler serves the Prometheus metrics, behind Config.MetricsToken
// when one is set.
func (s *Server) MetricsHandler() http.Handler {
	h := promhttp.HandlerFor(s.metrics.registry, promhttp.HandlerOpts{})
	if s.cfg.MetricsToken == "" {
		return h
	}
	want := []byte("Bearer " + s.cfg.MetricsToken)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			s.WriteError(w, r, unauthorizedf("the metrics need Authorization: Bearer <metrics token>"))
			return
		}
		h.ServeHTTP(w, r)
	})
}
