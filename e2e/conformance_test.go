package e2e

// The transport conformance suite: black-box scenarios written once and
// run over every transport in drivers (drivers_test.go). Each scenario is
// a subtest of TestConformance with one subtest per transport, so
// `go test -run 'Conformance/.*/ws'` runs one transport and a failure
// names the scenario and the transport.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestConformance(t *testing.T) {
	t.Run("ordered_delivery", conformOrderedDelivery)
	t.Run("resume_after_drop", conformResumeAfterDrop)
	t.Run("resume_after_sigkill", conformResumeAfterSIGKILL)
	t.Run("reset_when_trimmed", conformResetWhenTrimmed)
	t.Run("denied_subscribe", conformDeniedSubscribe)
	t.Run("exclude_sender", conformExcludeSender)
	t.Run("exclude_across_reconnect", conformExcludeAcrossReconnect)
	t.Run("two_channels_interleaved", conformTwoChannelsInterleaved)
}

// forEachDriver runs f as one subtest per transport.
func forEachDriver(t *testing.T, f func(t *testing.T, d driver)) {
	for _, d := range drivers {
		t.Run(d.name(), func(t *testing.T) { f(t, d) })
	}
}

func mustOpen(t *testing.T, d driver, base, tok string, channels []string, from *mark) conn {
	t.Helper()
	c, err := d.open(t, base, tok, channels, from)
	if err != nil {
		t.Fatalf("open %v from %v: %v", channels, from, err)
	}
	return c
}

// mustPublish publishes data on channel with the API key.
func mustPublish(t testing.TB, base, channel, data string) publishResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, _, err := publish(ctx, base, channel, data, "")
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// publishRange publishes {"i":i} for i in from..to on channel, in order,
// with the API key; each must be acknowledged at offset i.
func publishRange(ctx context.Context, base, channel string, from, to int) error {
	for i := from; i <= to; i++ {
		res, _, err := publish(ctx, base, channel, fmt.Sprintf(`{"i":%d}`, i), "")
		if err != nil {
			return fmt.Errorf("publish %d on %s: %w", i, channel, err)
		}
		if res.Offset != uint64(i) {
			return fmt.Errorf("publish %d on %s acknowledged at offset %d", i, channel, res.Offset)
		}
	}
	return nil
}

func mustPublishRange(t testing.TB, base, channel string, from, to int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := publishRange(ctx, base, channel, from, to); err != nil {
		t.Fatal(err)
	}
}

// goPublishRange runs publishRange in the background; wait returns its
// error.
func goPublishRange(t testing.TB, base, channel string, from, to int) (wait func() error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	done := make(chan error, 1)
	go func() { done <- publishRange(ctx, base, channel, from, to) }()
	t.Cleanup(cancel)
	return func() error { defer cancel(); return <-done }
}

// collectMessages receives n messages.
func collectMessages(t testing.TB, c conn, n int) []envelope {
	t.Helper()
	envs := make([]envelope, 0, n)
	for len(envs) < n {
		env, err := c.recv(20 * time.Second)
		if err != nil {
			t.Fatalf("after %d of %d messages: %v", len(envs), n, err)
		}
		envs = append(envs, env)
	}
	return envs
}

// expectRange checks that envs are exactly channel's offsets from..to,
// once each, in order, each carrying the data {"i":offset} that
// publishRange gives it.
func expectRange(t testing.TB, envs []envelope, channel string, from, to uint64) {
	t.Helper()
	if len(envs) != int(to-from+1) {
		t.Errorf("got %d messages, want offsets %d..%d", len(envs), from, to)
	}
	for i, e := range envs {
		want := from + uint64(i)
		if e.Channel != channel || e.Offset != want {
			t.Fatalf("message #%d is %s offset %d, want %s offset %d (gap, duplicate or reorder); got offsets %v",
				i+1, e.Channel, e.Offset, channel, want, envOffsets(envs))
		}
		var d struct{ I uint64 }
		if err := json.Unmarshal(e.Data, &d); err != nil || d.I != e.Offset {
			t.Fatalf("offset %d carries data %s, want {\"i\":%d}", e.Offset, e.Data, e.Offset)
		}
	}
}

func envOffsets(envs []envelope) []string {
	out := make([]string, len(envs))
	for i, e := range envs {
		out[i] = fmt.Sprintf("%s@%d", e.Event, e.Offset)
	}
	return out
}

// expectMessage receives the next message and checks it is channel's
// offset want.
func expectMessage(t testing.TB, c conn, channel string, want uint64) envelope {
	t.Helper()
	e := nextMessage(t, c)
	if e.Channel != channel || e.Offset != want || e.Event == "herald.reset" {
		t.Fatalf("got %s %s offset %d (%s), want %s offset %d", e.Event, e.Channel, e.Offset, e.Data, channel, want)
	}
	return e
}

// 1. Ordered delivery: 200 messages published through the API by four
// concurrent publishers arrive as offsets 1..200, in order, each the
// message acknowledged at that offset.
func conformOrderedDelivery(t *testing.T) {
	srv := startServer(t)
	forEachDriver(t, func(t *testing.T, d driver) {
		const n, publishers = 200, 4
		ch := "ordered_" + d.name()
		c := mustOpen(t, d, srv.url(), apiKey, []string{ch}, nil)

		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		var mu sync.Mutex
		acked := map[uint64]string{}
		var wg sync.WaitGroup
		errs := make(chan error, publishers)
		for p := range publishers {
			wg.Go(func() {
				for i := range n / publishers {
					res, _, err := publish(ctx, srv.url(), ch, fmt.Sprintf(`{"p":%d,"i":%d}`, p, i), "")
					if err != nil {
						errs <- err
						return
					}
					mu.Lock()
					acked[res.Offset] = res.ID
					mu.Unlock()
				}
			})
		}
		envs := collectMessages(t, c, n)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		for i, e := range envs {
			if e.Channel != ch || e.Offset != uint64(i+1) {
				t.Fatalf("message #%d is %s offset %d; offsets %v", i+1, e.Channel, e.Offset, envOffsets(envs))
			}
			if e.ID != acked[e.Offset] || e.Epoch == "" || e.Epoch != envs[0].Epoch {
				t.Fatalf("offset %d: id %s epoch %q, but the publish of offset %d was acknowledged with id %s (epoch of #1 %q)",
					e.Offset, e.ID, e.Epoch, e.Offset, acked[e.Offset], envs[0].Epoch)
			}
		}
		// Nothing more is pending: the next message is the next offset.
		mustPublish(t, srv.url(), ch, `"after"`)
		expectMessage(t, c, ch, n+1)
	})
}

// 2. Resume after a dropped connection: a client receives some messages,
// its connection is cut, more are published; it resumes from where it was
// and gets the rest exactly once, in order, then live ones published
// during the resume with no gap or duplicate at the hand-over.
func conformResumeAfterDrop(t *testing.T) {
	srv := startServer(t)
	forEachDriver(t, func(t *testing.T, d driver) {
		ch := "resume_" + d.name()
		c := mustOpen(t, d, srv.url(), apiKey, []string{ch}, nil)
		mustPublishRange(t, srv.url(), ch, 1, 50)
		expectRange(t, collectMessages(t, c, 20), ch, 1, 20)
		c.drop() // 21..50 may sit unread in the client's buffers: they are lost with it
		mustPublishRange(t, srv.url(), ch, 51, 80)

		c = resumeConn(t, d, srv.url(), apiKey, []string{ch}, c)
		wait := goPublishRange(t, srv.url(), ch, 81, 150) // live, racing the catch-up
		envs := collectMessages(t, c, 130)
		if err := wait(); err != nil {
			t.Fatal(err)
		}
		expectRange(t, envs, ch, 21, 150)
		mustPublish(t, srv.url(), ch, `{"i":151}`)
		expectMessage(t, c, ch, 151)
	})
}

// 3. Resume after SIGKILL: messages are published with idempotency keys,
// retried across the outage; the server is SIGKILLed mid-stream and
// restarted on the same data folder; the client resumes from its position
// when its connection ends and gets offsets 1..n exactly once, in order.
func conformResumeAfterSIGKILL(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		const n, killAt = 300, 120
		srv := startServer(t) // one per transport: the kill is per transport
		ch := "crash_" + d.name()
		c := mustOpen(t, d, srv.url(), apiKey, []string{ch}, nil)

		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		killed := make(chan struct{})
		pubErr := make(chan error, 1)
		go func() {
			pubErr <- publishSequence(ctx, srv.url, ch, n, func(i int) {
				if i == killAt {
					close(killed)
				}
			})
		}()
		<-killed
		envs := collectMessages(t, c, killAt/2) // mid-stream
		srv.kill()
		srv.restart()

		resumes := 0
		for len(envs) < n {
			e, err := c.recv(30 * time.Second)
			switch {
			case errors.Is(err, errEnded):
				resumes++
				if resumes > 3 {
					t.Fatalf("connection ended %d times; got %d of %d: %v", resumes, len(envs), n, err)
				}
				c = resumeConn(t, d, srv.url(), apiKey, []string{ch}, c)
				continue
			case err != nil:
				t.Fatalf("got %d of %d: %v", len(envs), n, err)
			}
			envs = append(envs, e)
		}
		if err := <-pubErr; err != nil {
			t.Fatal(err)
		}
		if resumes == 0 {
			t.Fatal("the connection never ended across SIGKILL")
		}
		expectRange(t, envs, ch, 1, n)
		mustPublish(t, srv.url(), ch, fmt.Sprintf(`{"i":%d}`, n+1))
		expectMessage(t, c, ch, n+1)
	})
}

// 4. herald.reset when the history no longer reaches back: with 10
// messages kept, a client coming back from offset 5 after 30 were
// published gets a herald.reset (reason trimmed, resume_after 20) first,
// then exactly offsets 21..30, then live ones.
func conformResetWhenTrimmed(t *testing.T) {
	srv := startServer(t, "--config", writeConfig(t, "history:\n  size: 10\n  ttl: 1h\n  trim_interval: 100ms\n"))
	forEachDriver(t, func(t *testing.T, d driver) {
		ch := "trimmed_" + d.name()
		c := mustOpen(t, d, srv.url(), apiKey, []string{ch}, nil)
		mustPublishRange(t, srv.url(), ch, 1, 5)
		envs := collectMessages(t, c, 5)
		expectRange(t, envs, ch, 1, 5)
		epoch := envs[0].Epoch
		old := c.mark()
		c.close()

		mustPublishRange(t, srv.url(), ch, 6, 30)
		// Trimming runs in the background; history says when it has.
		deadline := time.Now().Add(20 * time.Second)
		for {
			page, _ := history(t, srv.url(), ch)
			if len(page.Messages) == 10 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("history never trimmed to 10: %d kept", len(page.Messages))
			}
			time.Sleep(20 * time.Millisecond)
		}

		if d.name() == "poll" {
			// A poll session outlives its polls (it queues for its timeout
			// plus poll.grace), so a client back this soon with its cursor
			// continues it and gets what it queued, trimmed or not, with
			// no reset. A client whose session is gone — an app restarted
			// with the offset it saved — is the one that needs the reset.
			old = &mark{channels: map[string]position{ch: {offset: 5, epoch: epoch}}}
		}
		c = mustOpen(t, d, srv.url(), apiKey, []string{ch}, old)
		reset := nextMessage(t, c)
		var data struct {
			Reason      string `json:"reason"`
			Epoch       string `json:"epoch"`
			ResumeAfter uint64 `json:"resume_after"`
			Head        uint64 `json:"head"`
		}
		if err := json.Unmarshal(reset.Data, &data); err != nil || reset.Event != "herald.reset" || reset.Channel != ch ||
			reset.Offset != 0 || data.Reason != "trimmed" || data.ResumeAfter != 20 || data.Head != 30 || data.Epoch != epoch {
			t.Fatalf("first got %+v (data %s), want a herald.reset of %s without offset, data {reason trimmed, epoch %s, resume_after 20, head 30}",
				reset, reset.Data, ch, epoch)
		}
		expectRange(t, collectMessages(t, c, 10), ch, 21, 30)
		mustPublish(t, srv.url(), ch, `{"i":31}`)
		expectMessage(t, c, ch, 31)
	})
}

// 5. Denied subscribe: under the rule user_{user_id}_*, user 17 may not
// subscribe user_18_notifications: a 403 whose message names the channel.
// SSE refuses the request with a JSON error before any stream; WebSocket
// answers the subscribe op with ok:false and code 403 and the connection
// stays usable: an allowed subscribe on it works and delivers.
func conformDeniedSubscribe(t *testing.T) {
	srv := startServer(t, "--config", writeConfig(t, seedRulesYAML))
	tok17, err := permMint("--sub", "17", "--ttl", "1h")
	if err != nil {
		t.Fatal(err)
	}
	const denied = "user_18_notifications"
	checkDenial := func(t *testing.T, err error) {
		t.Helper()
		var oe *openError
		if !errors.As(err, &oe) {
			t.Fatalf("subscribe %s as user 17: %v, want a refusal", denied, err)
		}
		if oe.code != 403 || !strings.Contains(oe.message, denied) || oe.channel != denied {
			t.Fatalf("refusal %s: want code 403, a message naming %s and channel %q", oe.raw, denied, denied)
		}
	}
	forEachDriver(t, func(t *testing.T, d driver) {
		own := "user_17_" + d.name() + "_notifications"
		c, err := d.open(t, srv.url(), tok17, []string{denied}, nil)
		if err == nil {
			c.close()
		}
		checkDenial(t, err)

		c = mustOpen(t, d, srv.url(), tok17, []string{own}, nil)
		s, ok := c.(subscriber)
		if !ok {
			// One request per subscription set: the refusal above was the
			// whole answer. The user's own channel works.
			mustPublish(t, srv.url(), own, `{"i":1}`)
			expectMessage(t, c, own, 1)
			return
		}
		checkDenial(t, s.subscribe(denied, nil))
		other := "user_17_" + d.name() + "_inbox"
		if err := s.subscribe(other, nil); err != nil {
			t.Fatalf("subscribe %s after a refused subscribe: %v", other, err)
		}
		mustPublish(t, srv.url(), own, `{"i":1}`)
		mustPublish(t, srv.url(), other, `{"i":1}`)
		got := map[string]uint64{}
		for range 2 {
			e := nextMessage(t, c)
			got[e.Channel] = e.Offset
		}
		if got[own] != 1 || got[other] != 1 || len(got) != 2 {
			t.Fatalf("got %v, want offset 1 of %s and of %s", got, own, other)
		}
	})
}

// 6. Exclude-sender: a session that publishes excluding itself does not
// get that message while another session does; both get the next one. In
// its place the excluding session gets only the position (SSE: an event
// with only an id: line; WebSocket: a skip push), so a resume does not
// bring the message back either.
func conformExcludeSender(t *testing.T) {
	srv := startServer(t)
	forEachDriver(t, func(t *testing.T, d driver) {
		ch := "exclude_" + d.name()
		a := mustOpen(t, d, srv.url(), apiKey, []string{ch}, nil)
		b := mustOpen(t, d, srv.url(), apiKey, []string{ch}, nil)
		if a.session() == "" || a.session() == b.session() {
			t.Fatalf("sessions %q and %q: want two distinct ones", a.session(), b.session())
		}
		mustPublish(t, srv.url(), ch, `{"i":1}`)
		expectMessage(t, a, ch, 1)
		expectMessage(t, b, ch, 1)

		// Live: a does not get its own message, b does; both get the next.
		res := a.publishSelfExcluded(t, ch, `{"i":2}`)
		if res.Offset != 2 {
			t.Fatalf("excluded publish acknowledged at offset %d, want 2", res.Offset)
		}
		if e := expectMessage(t, b, ch, 2); e.ID != res.ID {
			t.Fatalf("b got id %s at offset 2, the publish was acknowledged as %s", e.ID, res.ID)
		}
		mustPublish(t, srv.url(), ch, `{"i":3}`)
		expectMessage(t, a, ch, 3) // not 2
		expectMessage(t, b, ch, 3)

		// Resume right after an excluded publish.
		a.publishSelfExcluded(t, ch, `{"i":4}`)
		expectMessage(t, b, ch, 4)
		if !a.passedOver(t) {
			t.Fatal("the excluded publish left no position marker")
		}
		a.drop()
		mustPublish(t, srv.url(), ch, `{"i":5}`)
		expectMessage(t, b, ch, 5)
		a = resumeConn(t, d, srv.url(), apiKey, []string{ch}, a)
		expectMessage(t, a, ch, 5) // not 4: the position covers it
		mustPublish(t, srv.url(), ch, `{"i":6}`)
		expectMessage(t, a, ch, 6)
		expectMessage(t, b, ch, 6)
	})
}

// 6b. A user's connection drops right after it published a message it
// excluded itself from, before anything of it arrived; the client resumes
// from a position before the message: the message never arrives, every
// other one does, in order — the exclusion is stored with the message and
// the session survives the reconnect (the cursor names it; a WebSocket
// passes it back).
func conformExcludeAcrossReconnect(t *testing.T) {
	srv := startServer(t, "--config", writeConfig(t, `channels:
  - pattern: "xr_*"
    subscribe: ["authenticated"]
    publish: ["authenticated"]
`))
	tok, err := permMint("--sub", "17")
	if err != nil {
		t.Fatal(err)
	}
	forEachDriver(t, func(t *testing.T, d driver) {
		ch := "xr_" + d.name()
		a := mustOpen(t, d, srv.url(), tok, []string{ch}, nil)
		mustPublish(t, srv.url(), ch, `{"i":1}`)
		expectMessage(t, a, ch, 1)
		before := a.mark()
		a.publishSelfExcluded(t, ch, `{"i":2}`)
		a.drop() // before the marker of the excluded message could arrive
		mustPublishRange(t, srv.url(), ch, 3, 4)
		b, err := d.open(t, srv.url(), tok, []string{ch}, before)
		if err != nil {
			t.Fatalf("resume from %v: %v", before, err)
		}
		if b.session() != a.session() {
			t.Fatalf("resumed as session %s, want %s", b.session(), a.session())
		}
		expectMessage(t, b, ch, 3) // not 2
		expectMessage(t, b, ch, 4)
	})
}

// 7. Two channels on one connection, published alternately: each
// channel's offsets arrive complete and in order.
func conformTwoChannelsInterleaved(t *testing.T) {
	srv := startServer(t)
	forEachDriver(t, func(t *testing.T, d driver) {
		const n = 100
		chA, chB := "pair_a_"+d.name(), "pair_b_"+d.name()
		c := mustOpen(t, d, srv.url(), apiKey, []string{chA, chB}, nil)

		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		done := make(chan error, 1)
		go func() {
			for i := 1; i <= n; i++ {
				for _, ch := range []string{chA, chB} {
					if err := publishRange(ctx, srv.url(), ch, i, i); err != nil {
						done <- err
						return
					}
				}
			}
			done <- nil
		}()
		per := map[string][]envelope{}
		for _, e := range collectMessages(t, c, 2*n) {
			per[e.Channel] = append(per[e.Channel], e)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if len(per) != 2 {
			t.Fatalf("messages on channels %v, want %s and %s", mapKeys(per), chA, chB)
		}
		expectRange(t, per[chA], chA, 1, n)
		expectRange(t, per[chB], chB, 1, n)
	})
}

func mapKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
