package datasync

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// sourceMetrics are the PostgreSQL source's metrics: changes and events
// by table, errors, and (read at scrape time) its state and lag.
type sourceMetrics struct {
	changes *prometheus.CounterVec // table
	events  *prometheus.CounterVec // table
	errors  *prometheus.CounterVec // kind: connection, refused

	mu        sync.Mutex // guards the lag fields
	walEnd    uint64     // the server's WAL end, from its last message
	confirmed uint64
	lastAt    time.Time // commit time of the last transaction published

	stateDesc, lagBytesDesc, lagSecondsDesc *prometheus.Desc
	src                                     *Source
}

func newSourceMetrics(s *Source) *sourceMetrics {
	return &sourceMetrics{
		src: s,
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herald_sync_changes_total",
			Help: "Database changes the sync rules mapped, by table."}, []string{"table"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herald_sync_events_total",
			Help: "Channel events published from database changes, by table."}, []string{"table"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herald_sync_errors_total",
			Help: "Sync errors: connection (the stream stopped), unmapped (a change made no event), refused (the core refused an event)."},
			[]string{"kind"}),
		stateDesc: prometheus.NewDesc("herald_sync_state",
			"The PostgreSQL source: 0 streaming, 1 connecting, 2 degraded.", nil, nil),
		lagBytesDesc: prometheus.NewDesc("herald_sync_lag_bytes",
			"WAL bytes the database has that Herald has not confirmed.", nil, nil),
		lagSecondsDesc: prometheus.NewDesc("herald_sync_lag_seconds",
			"Seconds since the commit of the last transaction published (0 when caught up).", nil, nil),
	}
}

func (m *sourceMetrics) sawWAL(end uint64) {
	m.mu.Lock()
	m.walEnd = max(m.walEnd, end)
	m.mu.Unlock()
}

func (m *sourceMetrics) committed(confirmed uint64, at time.Time) {
	m.mu.Lock()
	m.confirmed, m.lastAt = confirmed, at
	m.walEnd = max(m.walEnd, confirmed)
	m.mu.Unlock()
}

// Describe and Collect make the metrics a prometheus.Collector.
func (m *sourceMetrics) Describe(ch chan<- *prometheus.Desc) {
	m.changes.Describe(ch)
	m.events.Describe(ch)
	m.errors.Describe(ch)
	ch <- m.stateDesc
	ch <- m.lagBytesDesc
	ch <- m.lagSecondsDesc
}

func (m *sourceMetrics) Collect(ch chan<- prometheus.Metric) {
	m.changes.Collect(ch)
	m.events.Collect(ch)
	m.errors.Collect(ch)
	state := map[string]float64{"streaming": 0, "connecting": 1, "degraded": 2}[m.src.Status().State]
	ch <- prometheus.MustNewConstMetric(m.stateDesc, prometheus.GaugeValue, state)
	m.mu.Lock()
	lagBytes := float64(m.walEnd - m.confirmed)
	lagSeconds := 0.0
	if lagBytes > 0 && !m.lastAt.IsZero() {
		lagSeconds = time.Since(m.lastAt).Seconds()
	}
	m.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(m.lagBytesDesc, prometheus.GaugeValue, lagBytes)
	ch <- prometheus.MustNewConstMetric(m.lagSecondsDesc, prometheus.GaugeValue, lagSeconds)
}

// Metrics returns the source's metrics, for the server's registry.
func (s *Source) Metrics() prometheus.Collector { return s.metrics }
