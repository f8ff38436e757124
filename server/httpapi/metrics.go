package httpapi

import (
	"context"
	"crypto/subtle"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/heraldrt/herald/server"
)

// metrics are the Prometheus metrics /metrics serves, on a registry of
// their own (no global state): the core's own (server.Server.Metrics),
// Go's runtime and process metrics, and the life-event counts this
// package keeps as an observer of the core.
type metrics struct {
	srv      *server.Server
	token    string // required as Bearer, when set
	registry *prometheus.Registry
	obs      *server.Observer

	opened     *prometheus.CounterVec // by transport
	closed     *prometheus.CounterVec // by transport and reason
	moderation *prometheus.CounterVec // by action: disconnect, ban
}

// scrapeFlush bounds how long a scrape waits for the metrics observer to
// count the events that happened before it.
const scrapeFlush = time.Second

func newMetrics(srv *server.Server, token string) (*metrics, error) {
	m := &metrics{srv: srv, token: token, registry: prometheus.NewRegistry()}
	m.opened = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_sessions_opened_total", Help: "Sessions opened, by transport."}, []string{"transport"})
	m.closed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_sessions_closed_total", Help: "Sessions closed, by transport and reason (slow_consumer counts slow readers)."},
		[]string{"transport", "reason"})
	m.moderation = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_moderation_total", Help: "Moderation actions, by action."}, []string{"action"})
	if err := m.registry.Register(srv.Metrics()); err != nil {
		return nil, err
	}
	m.registry.MustRegister(m.opened, m.closed, m.moderation,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if pm := newProcMem("/proc/self/status"); pm != nil {
		m.registry.MustRegister(pm)
	}
	obs, err := srv.Observe("metrics", m.observe,
		server.SessionOpened, server.SessionClosed, server.UserDisconnected, server.UserBanned)
	if err != nil {
		return nil, err
	}
	m.obs = obs
	return m, nil
}

// observe counts one life event. It runs on the observer's goroutine.
func (m *metrics) observe(ev server.Event) {
	switch ev.Kind {
	case server.SessionOpened:
		m.opened.WithLabelValues(ev.Transport).Inc()
	case server.SessionClosed:
		m.closed.WithLabelValues(ev.Transport, ev.Reason.String()).Inc()
	case server.UserDisconnected:
		m.moderation.WithLabelValues("disconnect").Inc()
	case server.UserBanned:
		m.moderation.WithLabelValues("ban").Inc()
	}
}

// handler serves the metrics, behind the metrics token when one is set.
// A scrape first lets the observer count every event that happened before
// it (up to scrapeFlush), so what a client did before it scrapes shows.
func (m *metrics) handler(a *API) http.Handler {
	h := promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
	want := []byte("Bearer " + m.token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if m.token != "" && subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			a.fail(w, r, server.Errorf(http.StatusUnauthorized, "the metrics need Authorization: Bearer <metrics token>"))
			return
		}
		for _, t := range m.srv.Transports() {
			m.opened.WithLabelValues(t) // every transport shows, 0 included
		}
		ctx, cancel := context.WithTimeout(r.Context(), scrapeFlush)
		_ = m.obs.Flush(ctx) // past the bound, serve what is counted
		cancel()
		h.ServeHTTP(w, r)
	})
}

// jsonFamily is one metric family as GET /api/metrics writes it.
type jsonFamily struct {
	Type    string       `json:"type"`
	Help    string       `json:"help"`
	Samples []jsonSample `json:"samples"`
}

// jsonSample is one sample: its labels, and a counter's or gauge's value,
// or a histogram's count, sum and cumulative buckets (upper bound → count).
type jsonSample struct {
	Labels  map[string]string `json:"labels,omitempty"`
	Value   *float64          `json:"value,omitempty"`
	Count   *uint64           `json:"count,omitempty"`
	Sum     *float64          `json:"sum,omitempty"`
	Buckets map[string]uint64 `json:"buckets,omitempty"`
}

// jsonHandler serves GET /api/metrics (API key): the very metrics
// /metrics serves, gathered the same way, as JSON — what the admin
// dashboard reads, so that its numbers are Prometheus's.
func (m *metrics) jsonHandler(a *API) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !a.srv.RequireSystem(w, r, "reading the metrics") {
			return
		}
		for _, t := range m.srv.Transports() {
			m.opened.WithLabelValues(t)
		}
		ctx, cancel := context.WithTimeout(r.Context(), scrapeFlush)
		_ = m.obs.Flush(ctx)
		cancel()
		fams, err := m.registry.Gather()
		if err != nil {
			a.fail(w, r, fmt.Errorf("gather metrics: %w", err))
			return
		}
		out := make(map[string]jsonFamily, len(fams))
		for _, f := range fams {
			jf := jsonFamily{Type: strings.ToLower(f.GetType().String()), Help: f.GetHelp(), Samples: []jsonSample{}}
			for _, mt := range f.GetMetric() {
				var js jsonSample
				if len(mt.GetLabel()) > 0 {
					js.Labels = make(map[string]string, len(mt.GetLabel()))
					for _, l := range mt.GetLabel() {
						js.Labels[l.GetName()] = l.GetValue()
					}
				}
				switch {
				case mt.Counter != nil:
					js.Value = proto64(mt.GetCounter().GetValue())
				case mt.Gauge != nil:
					js.Value = proto64(mt.GetGauge().GetValue())
				case mt.Untyped != nil:
					js.Value = proto64(mt.GetUntyped().GetValue())
				case mt.Histogram != nil:
					h := mt.GetHistogram()
					count, sum := h.GetSampleCount(), h.GetSampleSum()
					js.Count, js.Sum = &count, &sum
					js.Buckets = make(map[string]uint64, len(h.GetBucket()))
					for _, b := range h.GetBucket() {
						js.Buckets[strconv.FormatFloat(b.GetUpperBound(), 'g', -1, 64)] = b.GetCumulativeCount()
					}
				default:
					continue // summaries: none of Herald's
				}
				jf.Samples = append(jf.Samples, js)
			}
			out[f.GetName()] = jf
		}
		server.WriteJSON(w, out)
	}
}

func proto64(v float64) *float64 { return &v }
