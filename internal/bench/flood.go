package bench

// The flood workload of `herald bench`: an abusive user floods a
// rate-limited channel with publishes as fast as it can — several
// keep-alive connections, each pipelining requests — while subscribers
// receive a well-behaved user's messages, paced under the limit. It
// measures what the limiter promises and what the flood costs the others:
// how many of the abuser's publishes were refused (each must be a 429 with
// retry_after and Retry-After) and accepted (at most the rule's burst plus
// its rate over the flood), and the delivery latency of the well-behaved
// messages during a baseline without the flood and during the flood,
// with the usual lost / duplicated / out-of-order accounting over every
// message stored, the abuser's included.
//
// The server needs a rule that rate-limits the channel for users, and the
// tool needs its JWT secret to mint the two users' tokens (the API key is
// never rate-limited); the subscribers use the API key. The README's
// "Limits and abuse" section has a configuration and the command.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldrt/herald/client"
	"github.com/heraldrt/herald/server"
)

// The users of a flood run.
const (
	benchFloodAbuser    = "bench-flood-abuser"
	benchFloodPublisher = "bench-flood-publisher"
)

// benchFloodResult is what the flood workload adds to the report.
type benchFloodResult struct {
	Abuser benchAbuseResult `json:"abuser"`
	// Limit is the rule's rate_limit as the server's refusals state it
	// (absent when nothing was refused by the rule).
	Limit *benchFloodLimit `json:"limit,omitempty"`
	// BaselineSeconds is the phase before the flood; its latencies are
	// the well-behaved messages' without the flood. The report's latency
	// and ack_latency are the same during the flood.
	BaselineSeconds    float64      `json:"baseline_seconds"`
	BaselineLatency    benchLatency `json:"baseline_latency"`
	BaselineAckLatency benchLatency `json:"baseline_ack_latency"`
	// ByTransport splits both latencies by the subscribers' transport.
	ByTransport map[string]benchFloodLatencies `json:"by_transport"`
}

type benchFloodLatencies struct {
	Baseline benchLatency `json:"baseline"`
	Flood    benchLatency `json:"flood"`
}

// benchAbuseResult counts the abusive user's requests.
type benchAbuseResult struct {
	Connections int     `json:"connections"`
	Window      int     `json:"window"` // requests in flight per connection
	Seconds     float64 `json:"seconds"`
	Attempts    int64   `json:"attempts"`
	Accepted    int64   `json:"accepted"`
	// Refused is every 429: by the channel's rule, or at the server's cap
	// on one user's requests in flight.
	Refused         int64   `json:"refused"`
	RefusedByRule   int64   `json:"refused_by_rule"`
	RefusedInFlight int64   `json:"refused_in_flight"`
	AttemptsPerSec  float64 `json:"attempts_per_sec"`
	AcceptedPerSec  float64 `json:"accepted_per_sec"`
	RefusedPerSec   float64 `json:"refused_per_sec"`
	RefusedPercent  float64 `json:"refused_percent"`
	// NoRetryAfter counts 429s that lack retry_after in the body or the
	// Retry-After header; Other counts any other status, by status.
	NoRetryAfter int64            `json:"no_retry_after"`
	Other        map[string]int64 `json:"other,omitempty"`
	Sample       string           `json:"sample,omitempty"` // one answer that was neither 200 nor a proper 429
	Errors       []string         `json:"errors,omitempty"` // connection failures
}

// benchFloodLimit is the rule's limit and what it allows over the flood.
type benchFloodLimit struct {
	Limit  int    `json:"limit"`
	Window string `json:"window"`
	// MaxAccepted is the bucket (limit) plus limit per window over the
	// abuser's whole run, from its first dial to its last answer.
	MaxAccepted int64 `json:"max_accepted"`
}

// floodTokens mints the abusive user's and the publishers' tokens and
// checks that the server takes them.
func (r *benchRun) floodTokens(ctx context.Context) (abuser, publisher string, err error) {
	mint := func(user string) (string, error) {
		now := time.Now()
		return server.MintToken(r.opts.jwtSecret, server.Claims{RegisteredClaims: jwt.RegisteredClaims{
			Subject: user, IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(24 * time.Hour))}})
	}
	for _, u := range []struct {
		user string
		tok  *string
	}{{benchFloodAbuser, &abuser}, {benchFloodPublisher, &publisher}} {
		if *u.tok, err = mint(u.user); err != nil {
			return "", "", fmt.Errorf("--jwt-secret: %w", err)
		}
		c, err := client.New(r.opts.base.String(), client.Options{Token: *u.tok, HTTPClient: r.pubHC})
		if err != nil {
			return "", "", err
		}
		var ae *client.APIError
		if err := c.Call(ctx, http.MethodGet, "api/users/"+u.user, nil, nil, nil); errors.As(err, &ae) {
			return "", "", fmt.Errorf("the server refuses a token minted with --jwt-secret (GET /api/users/%s: %d %s): is it the server's jwt_secret?", u.user, ae.Status, http.StatusText(ae.Status))
		} else if err != nil {
			return "", "", err
		}
	}
	return abuser, publisher, nil
}

// runFlood: subscribers connect; the well-behaved publishers start; after
// the warm-up, the baseline; then the flood, measured; then everything
// stops and the tool waits for what is in flight.
func (r *benchRun) runFlood(ctx context.Context) (*benchResult, error) {
	res := r.newResult()
	abuserTok, pubTok, err := r.floodTokens(ctx)
	if err != nil {
		return nil, err
	}
	r.pubToken = pubTok
	r.abuser = newBenchAbuser(r, abuserTok)
	st, err := r.startStreams(ctx)
	if err != nil {
		return nil, err
	}
	b0 := time.Now()
	r.baseFrom.Store(b0.UnixNano())
	r.phase.Store(benchPhaseBaseline)
	benchWait(ctx, r.opts.baseline)
	b1 := time.Now()
	r.baseTo.Store(b1.UnixNano())

	s0 := r.snapshot()
	r.latFrom.Store(s0.at.UnixNano())
	r.phase.Store(benchPhaseFlood)
	floodCtx, stopFlood := context.WithCancel(ctx)
	floodDone := make(chan struct{})
	go func() {
		defer close(floodDone)
		r.abuser.run(floodCtx)
	}()
	benchWait(ctx, r.opts.duration)
	s1 := r.snapshot()
	r.latTo.Store(s1.at.UnixNano())
	stopFlood()
	<-floodDone

	ch := r.chans[0]
	st.stop(ctx, res, func() {
		// The abuser's accepted publishes are on the channel too.
		r.abuser.mu.Lock()
		ch.head = max(ch.head, r.abuser.count.maxOffset)
		r.abuser.mu.Unlock()
	})

	r.fill(res, s0, s1)
	res.Flood = r.floodResult(b1.Sub(b0))
	if res.Flood.Limit == nil {
		r.notices.add("the server refused none of the abusive user's %d publishes by a rate limit: does a rule give channel %s a rate_limit for users? (README, Limits and abuse)", res.Flood.Abuser.Attempts, ch.name)
		_, res.Notices = r.notices.get()
	}
	return res, nil
}

// floodResult sums up the abuser and the two phases' latencies.
func (r *benchRun) floodResult(baseline time.Duration) *benchFloodResult {
	a := r.abuser
	a.mu.Lock()
	c, secs := a.count, a.end.Sub(a.start)
	a.mu.Unlock()
	ab := benchAbuseResult{
		Connections: a.conns, Window: a.window, Seconds: round3(secs.Seconds()),
		Attempts: c.attempts, Accepted: c.accepted, Refused: c.byRule + c.inFlight,
		RefusedByRule: c.byRule, RefusedInFlight: c.inFlight, NoRetryAfter: c.noRetryAfter,
		Sample: c.sample, Errors: c.errs,
	}
	if s := secs.Seconds(); s > 0 {
		ab.AttemptsPerSec = math.Round(float64(ab.Attempts) / s)
		ab.AcceptedPerSec = math.Round(float64(ab.Accepted)/s*10) / 10
		ab.RefusedPerSec = math.Round(float64(ab.Refused) / s)
	}
	if ab.Attempts > 0 {
		ab.RefusedPercent = math.Round(float64(ab.Refused)/float64(ab.Attempts)*1000) / 10
	}
	for code, n := range c.other {
		if ab.Other == nil {
			ab.Other = map[string]int64{}
		}
		ab.Other[strconv.Itoa(code)] = n
	}
	f := &benchFloodResult{Abuser: ab, BaselineSeconds: round3(baseline.Seconds()), ByTransport: map[string]benchFloodLatencies{}}
	if limit, window, ok := benchParseLimit(c.ruleMessage); ok {
		f.Limit = &benchFloodLimit{Limit: limit, Window: window.String(), MaxAccepted: benchMaxAccepted(limit, window, secs)}
	}
	base, baseAck := newBenchHist(), newBenchHist()
	byTransport := map[string][2]*benchHist{}
	for _, s := range r.subs {
		base.merge(s.baseHist)
		h, ok := byTransport[s.transport]
		if !ok {
			h = [2]*benchHist{newBenchHist(), newBenchHist()}
			byTransport[s.transport] = h
		}
		h[0].merge(s.baseHist)
		h[1].merge(s.hist)
	}
	for _, p := range r.pubs {
		baseAck.merge(p.baseAckHist)
	}
	f.BaselineLatency, f.BaselineAckLatency = base.summary(), baseAck.summary()
	for tr, h := range byTransport {
		f.ByTransport[tr] = benchFloodLatencies{Baseline: h[0].summary(), Flood: h[1].summary()}
	}
	return f
}

// floodVerdict lists what the flood broke of the limiter's promises.
func (f *benchFloodResult) verdict() []string {
	var bad []string
	a := f.Abuser
	if a.NoRetryAfter > 0 {
		bad = append(bad, fmt.Sprintf("%d refusals without retry_after and Retry-After (e.g. %s)", a.NoRetryAfter, a.Sample))
	}
	if len(a.Other) > 0 {
		bad = append(bad, fmt.Sprintf("the abusive user got answers other than 200 and 429: %v (e.g. %s)", a.Other, a.Sample))
	}
	if len(a.Errors) > 0 {
		bad = append(bad, fmt.Sprintf("%d of the abusive user's connections failed (first: %s)", len(a.Errors), a.Errors[0]))
	}
	if l := f.Limit; l != nil && a.Accepted > l.MaxAccepted {
		bad = append(bad, fmt.Sprintf("the abusive user had %d publishes accepted in %.3f s, more than the limit of %d per %s allows (%d)",
			a.Accepted, a.Seconds, l.Limit, l.Window, l.MaxAccepted))
	}
	return bad
}

// writeFloodRows adds the flood's rows to the report's table.
func writeFloodRows(row func(k, format string, args ...any), res *benchResult) {
	f := res.Flood
	a := f.Abuser
	row("phases", "baseline %.2f s without the flood, then the flood %.2f s (measured)", f.BaselineSeconds, res.WindowSeconds)
	row("abusive user", "%s requests in %.2f s = %s/s over %d connections (%d in flight each)",
		benchNum(float64(a.Attempts)), a.Seconds, benchNum(a.AttemptsPerSec), a.Connections, a.Window)
	row("", "%s refused with 429 = %s/s (%.1f %%: %s by the rule, %s at the in-flight cap), %s accepted = %s/s",
		benchNum(float64(a.Refused)), benchNum(a.RefusedPerSec), a.RefusedPercent, benchNum(float64(a.RefusedByRule)),
		benchNum(float64(a.RefusedInFlight)), benchNum(float64(a.Accepted)), benchNum(a.AcceptedPerSec))
	if l := f.Limit; l != nil {
		row("", "rule: %d per %s, so at most %s accepted over the run", l.Limit, l.Window, benchNum(float64(l.MaxAccepted)))
	}
	retry := "every 429 with retry_after and Retry-After"
	if a.NoRetryAfter > 0 {
		retry = fmt.Sprintf("%d 429s WITHOUT retry_after or Retry-After", a.NoRetryAfter)
	}
	if len(a.Other) > 0 {
		retry += fmt.Sprintf("; other answers %v", a.Other)
	}
	row("", "%s", retry)
	row("delivered", "%s msgs/s during the flood  (%s messages, the abuser's included)", benchNum(res.DeliveredPerSec), benchNum(float64(res.Delivered)))
	row("latency, baseline", "%s", benchLatencyLine(f.BaselineLatency))
	row("latency, flood", "%s", benchLatencyLine(res.Latency))
	for _, tr := range slices.Sorted(maps.Keys(f.ByTransport)) {
		l := f.ByTransport[tr]
		row("  "+tr, "baseline p50 %s p99 %s → flood p50 %s p99 %s", benchDur(l.Baseline.P50), benchDur(l.Baseline.P99), benchDur(l.Flood.P50), benchDur(l.Flood.P99))
	}
	row("publish→ack, baseline", "%s", benchLatencyLine(f.BaselineAckLatency))
	row("publish→ack, flood", "%s", benchLatencyLine(res.AckLatency))
}
