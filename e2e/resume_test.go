package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sseEvent is one event read from a raw SSE response.
type sseEvent struct {
	name, data, id string
}

// openSSE opens /sse with the API key and returns a channel of events
// (closed at the end of the stream) and the response.
func openSSE(t testing.TB, ctx context.Context, url string, header http.Header) (<-chan sseEvent, *http.Response) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+apiKey)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	ch := make(chan sseEvent, 4096)
	if resp.StatusCode != 200 {
		close(ch)
		return ch, resp
	}
	go func() {
		defer close(ch)
		sc := newSSEScanner(resp.Body)
		for {
			ev, err := readSSEEvent(sc)
			if err != nil {
				return
			}
			ch <- ev
		}
	}()
	return ch, resp
}

func newSSEScanner(r io.Reader) *bufio.Scanner {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	return sc
}

// readSSEEvent reads up to the next event that has data (retry: fields,
// comments and id-only events are skipped). It returns io.ErrUnexpectedEOF
// when the stream ends first.
func readSSEEvent(sc *bufio.Scanner) (sseEvent, error) {
	var ev sseEvent
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if ev.data != "" {
				return ev, nil
			}
			ev = sseEvent{}
		case strings.HasPrefix(line, "event: "):
			ev.name = line[len("event: "):]
		case strings.HasPrefix(line, "data: "):
			ev.data = line[len("data: "):]
		case strings.HasPrefix(line, "id: "):
			ev.id = line[len("id: "):]
		}
	}
	if err := sc.Err(); err != nil {
		return ev, err
	}
	return ev, io.ErrUnexpectedEOF
}

func nextEvent(t testing.TB, ch <-chan sseEvent) sseEvent {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("stream ended")
		}
		return ev
	case <-time.After(20 * time.Second):
		t.Fatal("no event within 20s")
	}
	return sseEvent{}
}

func writeConfig(t testing.TB, yaml string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "herald.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestResumeOlderThanHistoryGetsWhatIsLeftAndReset: a subscriber that
// comes back with a position older than the retained history gets a
// herald.reset naming the channel, then every kept message, then live ones.
func TestResumeOlderThanHistoryGetsWhatIsLeftAndReset(t *testing.T) {
	srv := startServer(t, "--config", writeConfig(t, "history:\n  size: 10\n  ttl: 1h\n  trim_interval: 100ms\n"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// A first connection records its cursor after message 5.
	events, _ := openSSE(t, ctx, srv.url()+"/sse?channel=team_3_presence", nil)
	if ev := nextEvent(t, events); ev.name != "herald.connected" {
		t.Fatalf("first event %+v", ev)
	}
	for i := 1; i <= 5; i++ {
		if _, _, err := publish(ctx, srv.url(), "team_3_presence", fmt.Sprint(i), ""); err != nil {
			t.Fatal(err)
		}
	}
	var cursor string
	for i := 1; i <= 5; i++ {
		cursor = nextEvent(t, events).id
	}
	// While it is away, 25 more are published; only the last 10 are kept.
	for i := 6; i <= 30; i++ {
		if _, _, err := publish(ctx, srv.url(), "team_3_presence", fmt.Sprint(i), ""); err != nil {
			t.Fatal(err)
		}
	}
	// Trimming runs in the background; history says when it has happened.
	deadline := time.Now().Add(time.Minute)
	for {
		page, _ := history(t, srv.url(), "team_3_presence")
		if len(page.Messages) == 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("history never trimmed to 10: %d kept", len(page.Messages))
		}
		time.Sleep(50 * time.Millisecond)
	}

	again, _ := openSSE(t, ctx, srv.url()+"/sse?channel=team_3_presence", http.Header{"Last-Event-Id": {cursor}})
	nextEvent(t, again) // connected
	reset := nextEvent(t, again)
	var env struct {
		Channel string `json:"channel"`
		Event   string `json:"event"`
		Data    struct {
			Reason      string `json:"reason"`
			ResumeAfter uint64 `json:"resume_after"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(reset.data), &env); err != nil || reset.name != "herald.reset" ||
		env.Channel != "team_3_presence" || env.Data.Reason != "trimmed" || env.Data.ResumeAfter != 20 {
		t.Fatalf("got %+v, want a herald.reset of team_3_presence resuming after 20", reset)
	}
	for want := uint64(21); want <= 30; want++ {
		ev := nextEvent(t, again)
		var e envelope
		if err := json.Unmarshal([]byte(ev.data), &e); err != nil || e.Offset != want {
			t.Fatalf("got %+v, want offset %d", ev, want)
		}
	}
}

// TestSIGTERMTellsClientsToReconnectAndKeepsData: a graceful stop sends
// herald.disconnect with reconnect:true, exits 0, and the data is there
// after the restart.
func TestSIGTERMTellsClientsToReconnectAndKeepsData(t *testing.T) {
	srv := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	events, _ := openSSE(t, ctx, srv.url()+"/sse?channel=user_17_notifications", nil)
	nextEvent(t, events)
	if _, _, err := publish(ctx, srv.url(), "user_17_notifications", `{"title":"hello"}`, ""); err != nil {
		t.Fatal(err)
	}
	msg := nextEvent(t, events)
	if err := srv.terminate(); err != nil {
		t.Fatal(err)
	}
	bye := nextEvent(t, events)
	if bye.name != "herald.disconnect" || bye.data != `{"reason":"shutdown","reconnect":true}` {
		t.Fatalf("got %+v, want herald.disconnect with reconnect", bye)
	}
	if _, ok := <-events; ok {
		t.Fatal("stream goes on after the disconnect")
	}
	srv.restart()
	again, _ := openSSE(t, ctx, srv.url()+"/sse?channel=user_17_notifications", http.Header{"Last-Event-Id": {msg.id}})
	nextEvent(t, again)
	if _, _, err := publish(ctx, srv.url(), "user_17_notifications", `{"title":"again"}`, ""); err != nil {
		t.Fatal(err)
	}
	var e envelope
	if err := json.Unmarshal([]byte(nextEvent(t, again).data), &e); err != nil || e.Offset != 2 {
		t.Fatalf("after restart got %+v", e)
	}
}
