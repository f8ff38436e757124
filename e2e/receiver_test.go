package e2e

// The webhook receiver of the webhook tests (webhooks_test.go): the
// hookreceiver program (internal/hookreceiver) run as a process of its
// own, which checks every request's signature with its own code and
// prints what it got, one JSON line per request. The test kills it,
// starts it again on the same address, and changes how it answers.

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// hookSecret signs every test endpoint's requests (32 bytes of key).
const hookSecret = "whsec_aGVyYWxkLWUyZS13ZWJob29rLXNpZ25pbmcta2V5ISE="

// receiverMode is how the receiver answers (see internal/hookreceiver).
type receiverMode struct {
	Status        int // 0: 200
	FailRate      float64
	Seed          uint64
	Delay         time.Duration
	DelayRequests int // 0: every request waits Delay
}

// receiverStats is the receiver's GET /mode.
type receiverStats struct {
	Status        int     `json:"status"`
	FailRate      float64 `json:"fail_rate"`
	DelayMS       int     `json:"delay_ms"`
	DelayRequests int     `json:"delay_requests"`
	Requests      int64   `json:"requests"`
	Inflight      int64   `json:"inflight"`
	HoldingMS     int     `json:"holding_ms"`
}

// hookRecord is one request the receiver got.
type hookRecord struct {
	Seq       int64             `json:"seq"`
	Path      string            `json:"path"`
	WebhookID string            `json:"webhook_id"`
	Timestamp string            `json:"webhook_timestamp"`
	SigOK     bool              `json:"sig_ok"`
	SigError  string            `json:"sig_error"`
	DelayedMS int               `json:"delayed_ms"`
	Status    int               `json:"status"`
	Headers   map[string]string `json:"headers"`
	Body      json.RawMessage   `json:"body"`
	BodyText  string            `json:"body_text"`
	Events    []hookEvent       `json:"events"`
	Ready     bool              `json:"ready"`

	run int // which start of the receiver printed it (0 for the first)
}

// hookEvent is one event of a default-format body.
type hookEvent struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	Timestamp string          `json:"timestamp"`
	Channel   string          `json:"channel"`
	Offset    uint64          `json:"offset"`
	Data      json.RawMessage `json:"data"`
}

func (r hookRecord) accepted() bool { return r.Status/100 == 2 }

// receiver is one hookreceiver, across its restarts. Only the test's
// goroutine uses it.
type receiver struct {
	t             testing.TB
	addr, control string
	cmd           *exec.Cmd
	exited        chan struct{}
	stderr        *syncBuffer
	out           *lineReader
	runs          int
	done          []hookRecord // printed by earlier runs
	parsed        int          // lines of out already in recs
	recs          []hookRecord // printed by this run
}

// startReceiver starts a receiver on fresh loopback ports answering as m.
func startReceiver(t testing.TB, m receiverMode) *receiver {
	t.Helper()
	r := &receiver{t: t, addr: freeAddr(t), control: freeAddr(t)}
	r.start(m)
	t.Cleanup(func() {
		r.kill()
		if t.Failed() {
			t.Logf("receiver %s stderr:\n%s", r.addr, lastLines(r.stderr.String(), 20))
		}
	})
	return r
}

// url is the address of path on the receiver.
func (r *receiver) url(path string) string { return "http://" + r.addr + path }

func (r *receiver) start(m receiverMode) {
	r.t.Helper()
	if m.Status == 0 {
		m.Status = 200
	}
	args := []string{"-addr", r.addr, "-control", r.control, "-secret", hookSecret,
		"-status", fmt.Sprint(m.Status), "-fail-rate", fmt.Sprint(m.FailRate), "-seed", fmt.Sprint(m.Seed),
		"-delay", m.Delay.String(), "-delay-requests", fmt.Sprint(m.DelayRequests)}
	r.cmd = exec.Command(receiverBin, args...)
	r.cmd.SysProcAttr = childProcAttr()
	r.stderr = &syncBuffer{}
	r.cmd.Stderr = r.stderr
	stdout, err := r.cmd.StdoutPipe()
	if err != nil {
		r.t.Fatal(err)
	}
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) {
		_ = cmd.Wait()
		close(exited)
	}(r.cmd, r.exited)
	r.out, r.parsed, r.recs = readLines(stdout), 0, nil
	select {
	case <-r.out.more:
	case <-r.out.done:
	case <-time.After(20 * time.Second):
	}
	if r.out.count() == 0 {
		r.t.Fatalf("receiver on %s did not start:\n%s", r.addr, r.stderr.String())
	}
	var ready hookRecord
	if err := json.Unmarshal([]byte(r.out.all()[0]), &ready); err != nil || !ready.Ready {
		r.t.Fatalf("receiver's first line %q: want the ready line (%v)\n%s", r.out.all()[0], err, r.stderr.String())
	}
	r.parsed = 1
}

// kill SIGKILLs the receiver (if it runs) and keeps what it printed.
func (r *receiver) kill() {
	select {
	case <-r.exited:
	default:
		_ = killChild(r.cmd.Process)
		<-r.exited
	}
	<-r.out.done // every line it wrote is read
	r.records()
	r.done = append(r.done, r.recs...)
	r.recs, r.parsed = nil, len(r.out.all())
}

// restart kills the receiver and starts it again on the same addresses.
func (r *receiver) restart(m receiverMode) {
	r.t.Helper()
	r.kill()
	r.runs++
	r.start(m)
}

// records returns every request received so far, across restarts, in
// the order they were answered.
func (r *receiver) records() []hookRecord {
	r.t.Helper()
	lines := r.out.all()
	for _, l := range lines[r.parsed:] {
		var rec hookRecord
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			r.t.Fatalf("receiver printed %q: %v", l, err)
		}
		rec.run = r.runs
		r.recs = append(r.recs, rec)
	}
	r.parsed = len(lines)
	return append(r.done[:len(r.done):len(r.done)], r.recs...)
}

// waitFor waits until cond holds for the records received so far (each
// new line is a chance), failing the test with what after timeout.
func (r *receiver) waitFor(timeout time.Duration, what string, cond func([]hookRecord) bool) []hookRecord {
	r.t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		recs := r.records()
		if cond(recs) {
			return recs
		}
		select {
		case <-r.out.more:
		case <-r.out.done:
			r.t.Fatalf("receiver exited while waiting for %s:\n%s", what, r.stderr.String())
		case <-deadline.C:
			r.t.Fatalf("receiver: %s not within %s (%d requests received)", what, timeout, len(recs))
		}
	}
}

// setMode changes how the receiver answers from now on.
func (r *receiver) setMode(change map[string]any) receiverStats {
	r.t.Helper()
	body, _ := json.Marshal(change)
	return r.controlCall(http.MethodPost, body)
}

// stats returns the receiver's mode and counters.
func (r *receiver) stats() receiverStats {
	r.t.Helper()
	return r.controlCall(http.MethodGet, nil)
}

func (r *receiver) controlCall(method string, body []byte) receiverStats {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, method, "http://"+r.control+"/mode", bytes.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatalf("receiver control: %v", err)
	}
	defer resp.Body.Close()
	var st receiverStats
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || resp.StatusCode != 200 {
		r.t.Fatalf("receiver control %s: %d %v", method, resp.StatusCode, err)
	}
	return st
}

// forgeryPath is where checkRejectsForgery sends; no endpoint uses it.
const forgeryPath = "/forgery"

// checkRejectsForgery sends the receiver a request signed with another
// key, and one whose body was changed after signing, and checks that it
// refuses both: its verification can fail, so its sig_ok means something.
func (r *receiver) checkRejectsForgery() {
	r.t.Helper()
	path := forgeryPath
	body := `{"id":"evt_forged","type":"message","timestamp":"2026-01-01T00:00:00.000Z","data":{}}`
	ts := fmt.Sprint(time.Now().Unix())
	other := "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=" // not this key's
	good := signForTest(hookSecret, "evt_forged", ts, body)
	for _, c := range []struct{ sig, body string }{{other, body}, {good, strings.Replace(body, "{}", `{"x":1}`, 1)}} {
		req, _ := http.NewRequest(http.MethodPost, r.url(path), strings.NewReader(c.body))
		req.Header.Set("webhook-id", "evt_forged")
		req.Header.Set("webhook-timestamp", ts)
		req.Header.Set("webhook-signature", c.sig)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			r.t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			r.t.Fatalf("receiver answered a forged request %d, want 401", resp.StatusCode)
		}
	}
	recs := r.waitFor(10*time.Second, "the forged requests", func(recs []hookRecord) bool { return len(onPath(recs, path)) == 2 })
	for _, rec := range onPath(recs, path) {
		if rec.SigOK || rec.Status != http.StatusUnauthorized || rec.SigError == "" {
			r.t.Fatalf("forged request recorded as %+v", rec)
		}
	}
}

// signForTest is the Standard Webhooks signature of a request, computed
// here only to forge a request whose body no longer matches it.
func signForTest(secret, id, ts, body string) string {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		panic(err) // hookSecret is valid base64
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "." + body))
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// onPath returns the records of requests sent to path.
func onPath(recs []hookRecord, path string) []hookRecord {
	var out []hookRecord
	for _, r := range recs {
		if r.Path == path {
			out = append(out, r)
		}
	}
	return out
}

// holdRequests makes the receiver hold each request it gets from now on
// for a minute, runs then (when not nil), and returns once it holds one:
// a kill of the sender then surely cuts a request in flight (one answered
// within milliseconds can end between a look at the receiver and the kill
// on a loaded machine).
func (r *receiver) holdRequests(then func()) {
	r.t.Helper()
	const hold = 60_000
	r.setMode(map[string]any{"delay_ms": hold})
	if then != nil {
		then()
	}
	deadline := time.Now().Add(30 * time.Second)
	for r.stats().HoldingMS != hold {
		if time.Now().After(deadline) {
			r.t.Fatal("no request held at the receiver for 30s")
		}
		time.Sleep(5 * time.Millisecond) // polled: the receiver is another process
	}
}
