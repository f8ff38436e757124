package webhooks

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the webhooks' Prometheus metrics: deliveries by endpoint and
// result, their latency, dead letters, and (read at scrape time) each
// endpoint's outbox depth, dead letters kept, breaker state and whether
// it is disabled.
type metrics struct {
	svc         *Service
	deliveries  *prometheus.CounterVec   // endpoint, result
	latency     *prometheus.HistogramVec // endpoint
	dead        *prometheus.CounterVec   // endpoint
	lifeDropped prometheus.Counter

	depthDesc, deadDesc, breakerDesc, disabledDesc *prometheus.Desc
}

func newMetrics(s *Service) *metrics {
	return &metrics{
		svc: s,
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herald_webhook_deliveries_total",
			Help: "Webhook delivery attempts, by endpoint and result (delivered, failed, gone, breaker_open)."},
			[]string{"endpoint", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "herald_webhook_delivery_seconds",
			Help:    "Time from sending a webhook request to its answer, by endpoint.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}},
			[]string{"endpoint"}),
		dead: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herald_webhook_dead_lettered_total",
			Help: "Webhook events moved to an endpoint's dead letters, by endpoint."}, []string{"endpoint"}),
		lifeDropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "herald_webhook_life_events_dropped_total",
			Help: "Life events that could not be queued for webhooks."}),
		depthDesc: prometheus.NewDesc("herald_webhook_outbox_depth",
			"Webhook events waiting in an endpoint's outbox.", []string{"endpoint"}, nil),
		deadDesc: prometheus.NewDesc("herald_webhook_dead_letters",
			"Webhook events kept in an endpoint's dead letters.", []string{"endpoint"}, nil),
		breakerDesc: prometheus.NewDesc("herald_webhook_breaker_state",
			"An endpoint's breaker: 0 closed, 1 half-open, 2 open.", []string{"endpoint"}, nil),
		disabledDesc: prometheus.NewDesc("herald_webhook_endpoint_disabled",
			"1 while an endpoint is disabled (it answered 410 Gone).", []string{"endpoint"}, nil),
	}
}

// observe counts a request's result.
func (m *metrics) observe(endpoint string, r result) {
	if len(r.items) == len(r.bad) {
		return // nothing was sent
	}
	res := "failed"
	switch {
	case r.attempt.Outcome == Delivered:
		res = "delivered"
	case r.attempt.Outcome == Gone:
		res = "gone"
	case r.attempt.Err == ErrBreakerOpen:
		res = "breaker_open"
	}
	m.deliveries.WithLabelValues(endpoint, res).Inc()
	if r.took > 0 {
		m.latency.WithLabelValues(endpoint).Observe(r.took.Seconds())
	}
}

// Describe and Collect make metrics a prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	m.deliveries.Describe(ch)
	m.latency.Describe(ch)
	m.dead.Describe(ch)
	m.lifeDropped.Describe(ch)
	ch <- m.depthDesc
	ch <- m.deadDesc
	ch <- m.breakerDesc
	ch <- m.disabledDesc
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	m.deliveries.Collect(ch)
	m.latency.Collect(ch)
	m.dead.Collect(ch)
	m.lifeDropped.Collect(ch)
	for _, w := range m.svc.workers {
		name := w.ep.Name
		if m.svc.outbox != nil {
			if depth, dead, err := m.svc.outbox.Depth(name); err == nil {
				ch <- prometheus.MustNewConstMetric(m.depthDesc, prometheus.GaugeValue, float64(depth), name)
				ch <- prometheus.MustNewConstMetric(m.deadDesc, prometheus.GaugeValue, float64(dead), name)
			}
		}
		ch <- prometheus.MustNewConstMetric(m.breakerDesc, prometheus.GaugeValue, breakerValue(m.svc.sender.BreakerState(name)), name)
		disabled := 0.0
		if w.status().disabled {
			disabled = 1
		}
		ch <- prometheus.MustNewConstMetric(m.disabledDesc, prometheus.GaugeValue, disabled, name)
	}
}

func breakerValue(state string) float64 {
	switch state {
	case "half-open":
		return 1
	case "open":
		return 2
	}
	return 0
}

// Metrics returns the Service's metrics, for the server's registry.
func (s *Service) Metrics() prometheus.Collector { return s.metrics }
