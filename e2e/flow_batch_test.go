package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"
)

// --- 4. batching ---

// batchReader collects one transport's messages by write: an SSE chunk, a
// WebSocket frame, a long-poll answer.
type batchReader struct {
	name    string
	n       int
	offsets []uint64
	writes  []int // messages per write, among the first n
	kinds   map[string]int
	lone    time.Time // when message n+1 came
	err     error
	haveN   chan struct{} // closed once the first n are in
	done    chan struct{} // closed once n+1 are in, or on error
}

func newBatchReader(name string, n int) *batchReader {
	return &batchReader{name: name, n: n, kinds: map[string]int{}, haveN: make(chan struct{}), done: make(chan struct{})}
}

// take records the messages of one write.
func (r *batchReader) take(offs []uint64) {
	now := time.Now()
	for i, off := range offs {
		r.offsets = append(r.offsets, off)
		switch {
		case off > uint64(r.n):
			r.lone = now
		case i == 0:
			r.writes = append(r.writes, 1)
		default:
			r.writes[len(r.writes)-1]++
		}
		if len(r.offsets) == r.n {
			close(r.haveN)
		}
	}
}

// TestBatchRuleOverEveryTransport: on a channel whose rule batches
// (size 20, timeout 2s), 100 messages published one after another arrive
// in order, exactly once, over every transport — in few writes: few SSE
// chunks, few WebSocket frames (batch pushes), few long-poll answers —
// and a lone message goes out by the timeout, without waiting for more.
// The timeout is long next to a publish, so batches fill whatever the
// machine's speed (they would not if 20 publishes took longer than it);
// how long a message is held, to the millisecond, is the core's unit
// test's business.
func TestBatchRuleOverEveryTransport(t *testing.T) {
	const (
		channel = "ticks"
		n       = 100
	)
	srv := startFlowServer(t, `channels:
  - pattern: "ticks"
    subscribe: ["system"]
    publish: ["system"]
    batch: {size: 20, timeout: 2s}
`)
	base := srv.url()

	sse, _, _ := openSSEStream(t, base, "channel="+channel, apiKey, "", 0)
	ws := openWS(t, base, apiKey, 0)
	ws.subscribe(channel, nil)
	_, first, _ := flowPoll(t, base, apiKey, url.Values{"channel": {channel}, "timeout": {"0"}})

	sr, wr, pr := newBatchReader("sse", n), newBatchReader("ws", n), newBatchReader("poll", n)
	go func() { // SSE: one chunk is one write
		defer close(sr.done)
		chunk := -1
		for len(sr.offsets) <= n {
			ev, err := sse.next(20 * time.Second)
			if err != nil {
				sr.err = fmt.Errorf("after %d messages: %w", len(sr.offsets), err)
				return
			}
			var env envelope
			if err := json.Unmarshal([]byte(ev.data), &env); err != nil || env.Offset == 0 {
				sr.err = fmt.Errorf("event %+v", ev)
				return
			}
			if ev.chunk != chunk {
				sr.take([]uint64{env.Offset})
				chunk = ev.chunk
			} else { // same write as the one before
				sr.offsets = append(sr.offsets, env.Offset)
				if env.Offset <= n {
					sr.writes[len(sr.writes)-1]++
				} else {
					sr.lone = time.Now()
				}
				if len(sr.offsets) == n {
					close(sr.haveN)
				}
			}
		}
	}()
	go func() { // WebSocket: frames
		defer close(wr.done)
		for len(wr.offsets) <= n {
			f, err := ws.read(20 * time.Second)
			if err != nil {
				wr.err = fmt.Errorf("after %d messages: %w", len(wr.offsets), err)
				return
			}
			envs, err := f.envelopes()
			if err != nil || len(envs) == 0 {
				wr.err = fmt.Errorf("frame %s (%v)", f.raw, err)
				return
			}
			offs := make([]uint64, len(envs))
			for i, e := range envs {
				offs[i] = e.Offset
			}
			if offs[0] <= n {
				wr.kinds[f.Type]++
			}
			wr.take(offs)
		}
	}()
	go func() { // long polling: answers
		defer close(pr.done)
		cursor, sess := first.Cursor, first.Session
		client := &http.Client{Timeout: 30 * time.Second}
		defer client.CloseIdleConnections()
		for len(pr.offsets) <= n {
			q := url.Values{"channel": {channel}, "cursor": {cursor}, "session": {sess}, "timeout": {"10"}}
			req, _ := http.NewRequest(http.MethodGet, base+"/poll?"+q.Encode(), nil)
			req.Header.Set("Authorization", "Bearer "+apiKey)
			resp, err := client.Do(req)
			if err != nil {
				pr.err = err
				return
			}
			var ans pollAnswer
			err = json.NewDecoder(resp.Body).Decode(&ans)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 {
				pr.err = fmt.Errorf("poll: %d %v", resp.StatusCode, err)
				return
			}
			cursor, sess = ans.Cursor, ans.Session
			var offs []uint64
			for _, m := range ans.Messages {
				var env envelope
				if err := json.Unmarshal(m, &env); err != nil {
					pr.err = err
					return
				}
				offs = append(offs, env.Offset)
			}
			if len(offs) > 0 {
				pr.take(offs)
			}
		}
	}()

	// 100 messages, quickly; once every transport has them, a lone one.
	pubStart := time.Now()
	mustPublishRange(t, base, channel, 1, n)
	t.Logf("%d messages published in %s", n, time.Since(pubStart).Round(time.Millisecond))
	readers := []*batchReader{sr, wr, pr}
	for _, r := range readers {
		select {
		case <-r.haveN:
		case <-r.done:
			t.Fatalf("%s: %v", r.name, r.err)
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: not all %d messages within 30s", r.name, n)
		}
	}
	loneSent := time.Now()
	mustPublish(t, base, channel, fmt.Sprintf(`{"i":%d}`, n+1))
	for _, r := range readers {
		select {
		case <-r.done:
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: no message %d within 30s", r.name, n+1)
		}
		if r.err != nil {
			t.Errorf("%s: %v", r.name, r.err)
			continue
		}
		checkOffsets(t, r.name, r.offsets, 1, n+1)
		biggest := slices.Max(r.writes)
		t.Logf("%s: %d messages in %d writes %v; the lone message came %s after it was published",
			r.name, n, len(r.writes), r.writes, r.lone.Sub(loneSent).Round(time.Millisecond))
		if len(r.writes)*4 > n || biggest < 10 {
			t.Errorf("%s: %d messages came in %d writes %v; batching should need far fewer", r.name, n, len(r.writes), r.writes)
		}
	}
	if wr.kinds["batch"] == 0 {
		t.Errorf("ws: no batch push among %v", wr.kinds)
	}
	t.Logf("ws frames by type: %v", wr.kinds)
}
