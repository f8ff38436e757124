// Command hookreceiver is the webhook endpoint of Herald's e2e tests: a
// separate process, so that a test can kill it and start it again, that
// receives Herald's webhook requests on a loopback address, checks each
// request's Standard Webhooks signature with its own code (not Herald's),
// and prints one JSON line per request on stdout for the test to read.
//
// Its answers are controlled by flags, and at run time by a control
// address:
//
//	GET  /mode   the current mode and counters
//	POST /mode   change the mode: {"status":500, "fail_rate":0.2,
//	             "delay_ms":2000, "delay_requests":3} (fields left out
//	             stay as they are)
//
// A request is answered, in this order: 401 when its signature does not
// verify; else after the delay (for the next delay_requests requests, or
// every request when that is 0); with status when it is not 200; else,
// unless it waited, 500 with probability fail_rate (drawn from a
// generator seeded by -seed); else 200. So a receiver started with a
// delay for a few requests and a fail rate is slow first, then fails at
// random. The request's line is printed before it is answered,
// so a line with status 200 may describe an answer its sender never got
// (it died, or the receiver was killed): such an event comes again.
//
// The first line on stdout is {"ready":true,...} once both addresses
// listen.
package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "hookreceiver:", err)
		os.Exit(1)
	}
}

// mode is how requests are answered.
type mode struct {
	Status        int     `json:"status"`
	FailRate      float64 `json:"fail_rate"`
	DelayMS       int     `json:"delay_ms"`
	DelayRequests int     `json:"delay_requests"`
}

// modeChange is the body of POST /mode.
type modeChange struct {
	Status        *int     `json:"status"`
	FailRate      *float64 `json:"fail_rate"`
	DelayMS       *int     `json:"delay_ms"`
	DelayRequests *int     `json:"delay_requests"`
}

// stats is the answer of GET /mode.
type stats struct {
	mode
	Requests int64 `json:"requests"`
	Inflight int64 `json:"inflight"`
	// HoldingMS is the longest delay among the requests being held now
	// (0: none), so a test can act while a request surely waits.
	HoldingMS int `json:"holding_ms"`
}

// record is one request as printed.
type record struct {
	Seq       int64             `json:"seq"`
	Path      string            `json:"path"`
	WebhookID string            `json:"webhook_id"`
	Timestamp string            `json:"webhook_timestamp"`
	SigOK     bool              `json:"sig_ok"`
	SigError  string            `json:"sig_error,omitempty"`
	DelayedMS int               `json:"delayed_ms,omitempty"`
	Status    int               `json:"status"` // 0: the sender went away first
	Headers   map[string]string `json:"headers"`
	Body      json.RawMessage   `json:"body,omitempty"`
	BodyText  string            `json:"body_text,omitempty"` // a body that is not JSON
	Events    []event           `json:"events"`
}

// event is one event of a default-format body ({"id","type","timestamp",
// "data"}, or a list of those), with what its data says of where.
type event struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	Timestamp string          `json:"timestamp"`
	Channel   string          `json:"channel,omitempty"`
	Offset    uint64          `json:"offset,omitempty"`
	Data      json.RawMessage `json:"data"`
}

type receiver struct {
	keys [][]byte
	log  *slog.Logger

	mu       sync.Mutex // guards everything below
	m        mode
	rng      *rand.Rand
	seq      int64
	inflight int64
	holding  map[int]int // delay in ms → requests waiting it out now
	out      io.Writer
}

func run() error {
	var (
		addr     = flag.String("addr", "", "where webhooks are received, host:port (required)")
		control  = flag.String("control", "", "where the mode is controlled, host:port (required)")
		secrets  = flag.String("secret", "", "signing secrets, whsec_…, comma-separated (required)")
		status   = flag.Int("status", 200, "the status of every verified request (then fail-rate applies to 200s)")
		failRate = flag.Float64("fail-rate", 0, "probability of answering 500 instead of 200")
		seed     = flag.Uint64("seed", 1, "seed of the fail-rate draws")
		delay    = flag.Duration("delay", 0, "wait before answering")
		delayN   = flag.Int("delay-requests", 0, "how many requests wait (0: every one)")
	)
	flag.Parse()
	if *addr == "" || *control == "" || *secrets == "" {
		return errors.New("-addr, -control and -secret are required")
	}
	r := &receiver{log: slog.New(slog.NewTextHandler(os.Stderr, nil)), out: os.Stdout,
		m:       mode{Status: *status, FailRate: *failRate, DelayMS: int(delay.Milliseconds()), DelayRequests: *delayN},
		rng:     rand.New(rand.NewPCG(*seed, *seed^0x9e3779b97f4a7c15)),
		holding: map[int]int{}}
	for s := range strings.SplitSeq(*secrets, ",") {
		key, err := parseSecret(s)
		if err != nil {
			return err
		}
		r.keys = append(r.keys, key)
	}

	hookLn, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	ctlLn, err := net.Listen("tcp", *control)
	if err != nil {
		hookLn.Close()
		return err
	}
	ctl := http.NewServeMux()
	ctl.HandleFunc("GET /mode", r.getMode)
	ctl.HandleFunc("POST /mode", r.setMode)
	hooks := &http.Server{Handler: http.HandlerFunc(r.receive), ReadHeaderTimeout: 10 * time.Second}
	ctls := &http.Server{Handler: ctl, ReadHeaderTimeout: 10 * time.Second}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	errs := make(chan error, 2)
	var wg sync.WaitGroup
	for _, s := range []struct {
		srv *http.Server
		ln  net.Listener
	}{{hooks, hookLn}, {ctls, ctlLn}} {
		wg.Go(func() {
			if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
				errs <- err
			}
		})
	}
	r.print(map[string]any{"ready": true, "addr": hookLn.Addr().String(), "control": ctlLn.Addr().String()})

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errs:
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = hooks.Shutdown(sctx)
	_ = ctls.Shutdown(sctx)
	wg.Wait()
	return runErr
}

// parseSecret reads "whsec_" and the base64 of the key.
func parseSecret(s string) ([]byte, error) {
	b64, ok := strings.CutPrefix(strings.TrimSpace(s), "whsec_")
	if !ok {
		return nil, fmt.Errorf("secret %q…: want whsec_<base64>", s[:min(len(s), 6)])
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		key, err = base64.RawStdEncoding.DecodeString(b64)
	}
	if err != nil || len(key) == 0 {
		return nil, errors.New("secret: what follows whsec_ is not base64")
	}
	return key, nil
}

// tolerance is how far a request's timestamp may be from this clock.
const tolerance = 5 * time.Minute

// verify checks the three Standard Webhooks headers: the timestamp is
// near now, and one of the space-separated "v1,<base64>" signatures is
// the HMAC-SHA256 of "id.timestamp.body" under one of the keys.
func (r *receiver) verify(h http.Header, body []byte) error {
	id, ts, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if id == "" || ts == "" || sigs == "" {
		return errors.New("a webhook-id, webhook-timestamp or webhook-signature header is missing")
	}
	secs, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("webhook-timestamp %q is not Unix seconds", ts)
	}
	if d := time.Since(time.Unix(secs, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("webhook-timestamp is %s away from now", d)
	}
	signed := []byte(id + "." + ts + "." + string(body))
	for _, key := range r.keys {
		mac := hmac.New(sha256.New, key)
		mac.Write(signed)
		want := mac.Sum(nil)
		for _, sig := range strings.Fields(sigs) {
			version, b64, ok := strings.Cut(sig, ",")
			if !ok || version != "v1" {
				continue
			}
			got, err := base64.StdEncoding.DecodeString(b64)
			if err == nil && hmac.Equal(got, want) {
				return nil
			}
		}
	}
	return errors.New("no signature matches")
}

func (r *receiver) receive(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, 16<<20))
	if err != nil {
		http.Error(w, "reading the body: "+err.Error(), http.StatusBadRequest)
		return
	}
	rec := record{Path: req.URL.Path, WebhookID: req.Header.Get("webhook-id"), Timestamp: req.Header.Get("webhook-timestamp"),
		Headers: map[string]string{}}
	for name := range req.Header {
		switch l := strings.ToLower(name); {
		case l == "content-type", l == "user-agent", strings.HasPrefix(l, "x-"):
			rec.Headers[l] = req.Header.Get(name)
		}
	}
	if json.Valid(body) {
		rec.Body = body
		rec.Events = parseEvents(body)
	} else {
		rec.BodyText = string(body)
	}
	if err := r.verify(req.Header, body); err != nil {
		rec.SigError = err.Error()
	} else {
		rec.SigOK = true
	}

	r.mu.Lock()
	r.inflight++
	m := r.m
	wait := m.DelayMS > 0 && rec.SigOK
	if wait && m.DelayRequests > 0 {
		r.m.DelayRequests--
		if r.m.DelayRequests == 0 {
			r.m.DelayMS = 0 // the slow spell is over
		}
	}
	fail := !wait && m.FailRate > 0 && r.rng.Float64() < m.FailRate
	if wait {
		r.holding[m.DelayMS]++
	}
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.inflight--
		r.mu.Unlock()
	}()

	if wait {
		rec.DelayedMS = m.DelayMS
		t := time.NewTimer(time.Duration(m.DelayMS) * time.Millisecond)
		var cut bool
		select {
		case <-t.C:
		case <-req.Context().Done():
			t.Stop()
			cut = true
		}
		r.mu.Lock()
		if r.holding[m.DelayMS]--; r.holding[m.DelayMS] == 0 {
			delete(r.holding, m.DelayMS)
		}
		r.mu.Unlock()
		if cut {
			r.print(&rec) // status 0: nobody waits for the answer any more
			return
		}
	}
	switch {
	case !rec.SigOK:
		rec.Status = http.StatusUnauthorized
	case m.Status != http.StatusOK:
		rec.Status = m.Status
	case fail:
		rec.Status = http.StatusInternalServerError
	default:
		rec.Status = http.StatusOK
	}
	r.print(&rec)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(rec.Status)
	_, _ = fmt.Fprintf(w, `{"received":%d}`, len(rec.Events))
}

// parseEvents reads a default-format body; a templated body has none.
func parseEvents(body []byte) []event {
	var list []json.RawMessage
	if err := json.Unmarshal(body, &list); err != nil {
		list = []json.RawMessage{body}
	}
	out := make([]event, 0, len(list))
	for _, raw := range list {
		var ev event
		if json.Unmarshal(raw, &ev) != nil || ev.ID == "" || ev.Type == "" {
			continue
		}
		var where struct {
			Channel string `json:"channel"`
			Offset  uint64 `json:"offset"`
		}
		_ = json.Unmarshal(ev.Data, &where)
		ev.Channel, ev.Offset = where.Channel, where.Offset
		out = append(out, ev)
	}
	return out
}

// print writes v as one line on stdout; a record gets the next seq.
func (r *receiver) print(v any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if rec, ok := v.(*record); ok {
		r.seq++
		rec.Seq = r.seq
	}
	b, err := json.Marshal(v)
	if err != nil {
		r.log.Error("marshal a record", "err", err)
		return
	}
	if _, err := r.out.Write(append(b, '\n')); err != nil {
		r.log.Error("write a record", "err", err)
	}
}

func (r *receiver) getMode(w http.ResponseWriter, _ *http.Request) {
	r.mu.Lock()
	st := stats{mode: r.m, Requests: r.seq, Inflight: r.inflight}
	for ms := range r.holding {
		st.HoldingMS = max(st.HoldingMS, ms)
	}
	r.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(st)
}

func (r *receiver) setMode(w http.ResponseWriter, req *http.Request) {
	var c modeChange
	dec := json.NewDecoder(req.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	if c.Status != nil {
		r.m.Status = *c.Status
	}
	if c.FailRate != nil {
		r.m.FailRate = *c.FailRate
	}
	if c.DelayMS != nil {
		r.m.DelayMS = *c.DelayMS
	}
	if c.DelayRequests != nil {
		r.m.DelayRequests = *c.DelayRequests
	}
	r.mu.Unlock()
	r.getMode(w, req)
}
