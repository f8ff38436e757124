package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"testing"
	"time"
)

// A long-poll client that keeps nothing but the cursor — a shell loop, a
// mobile app that persists one string — and never passes its session
// back: the cursor names the session, so the client is one session of
// its user however many polls it makes. 500 quick polls while messages
// are published at 100/s: no 429 (the user's session limit is 32), every
// message exactly once and in order, one member with one session in
// presence.
func TestCursorOnlyPollingIsOneSession(t *testing.T) {
	srv := startServer(t, "--config", writeConfig(t, `channels:
  - pattern: "feed_{user}"
    subscribe: ["user:{user}"]
    publish: ["system"]
    presence: true
`))
	tok, err := permMint("--sub", "17")
	if err != nil {
		t.Fatal(err)
	}
	const ch, polls, messages = "feed_17", 500, 300
	code, first, raw := flowPoll(t, srv.url(), tok, url.Values{"channel": {ch}, "timeout": {"0"}})
	if code != 200 {
		t.Fatalf("first poll: %d %s", code, raw)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	published := make(chan error, 1)
	go func() {
		tick := time.NewTicker(10 * time.Millisecond) // 100/s: the pace of the workload, not a synchronisation
		defer tick.Stop()
		for i := 1; i <= messages; i++ {
			<-tick.C
			if _, _, err := publish(ctx, srv.url(), ch, fmt.Sprintf(`{"i":%d}`, i), ""); err != nil {
				published <- err
				return
			}
		}
		published <- nil
	}()

	cursor := first.Cursor
	var got []envelope
	for n := 1; n <= polls || len(got) < messages; n++ {
		if ctx.Err() != nil {
			t.Fatalf("after %d polls: %d of %d messages", n, len(got), messages)
		}
		// Quick polls while the publisher runs; once the 500 are done,
		// polls that wait for what is still to come.
		timeout := "0"
		if n > polls {
			timeout = "5"
		}
		code, ans, raw := flowPoll(t, srv.url(), tok, url.Values{"channel": {ch}, "cursor": {cursor}, "timeout": {timeout}})
		if code != 200 {
			t.Fatalf("poll %d: %d %s", n, code, raw)
		}
		if ans.Session != first.Session {
			t.Fatalf("poll %d was served by session %s, the first by %s", n, ans.Session, first.Session)
		}
		for _, m := range ans.Messages {
			var env envelope
			if err := json.Unmarshal(m, &env); err != nil {
				t.Fatalf("poll %d: message %s: %v", n, m, err)
			}
			got = append(got, env)
		}
		cursor = ans.Cursor
	}
	if err := <-published; err != nil {
		t.Fatal(err)
	}
	checkExactlyOnceInOrder(t, got, messages)

	info := getPresence(t, srv.url(), apiKey, ch, false)
	if info.Count != 1 || info.Sessions != 1 || info.sessionsByUser()["17"] != 1 {
		t.Fatalf("presence %+v: want user 17 once, with one session", info)
	}
}
