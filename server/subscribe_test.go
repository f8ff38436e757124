package server

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldrt/herald/protocol"
	"github.com/heraldrt/herald/store"
)

func openSession(t testing.TB, srv *Server, channels []string, positions []*Position, cursor string) (*Session, OpenInfo) {
	t.Helper()
	sess, info, err := srv.Transport("test").Open(context.Background(), system, OpenRequest{
		Channels: channels, Positions: positions, Cursor: cursor,
	})
	if err != nil {
		t.Fatalf("open %v: %v", channels, err)
	}
	return sess, info
}

func TestLiveMessagesArriveInOrderOnEverySession(t *testing.T) {
	t.Parallel()
	srv, _ := newTestServer(t, Config{})
	var cs []*collector
	for i := 0; i < 5; i++ {
		sess, _ := openSession(t, srv, []string{"chat_room_7"}, nil, "")
		cs = append(cs, collect(t, sess))
	}
	publishN(t, srv, "chat_room_7", 1, 200)
	for _, c := range cs {
		items := c.waitFor(t, "200 messages", countOffsets("chat_room_7", 200))
		assertRange(t, offsets(items)["chat_room_7"], 1, 200)
	}
}

func TestReplayThenLiveHandOverHasNoGapOrDuplicate(t *testing.T) {
	t.Parallel()
	// Publishers run while subscribers join at every kind of position; each
	// subscriber must see exactly since+1 .. N once, in order.
	srv, _ := newTestServer(t, Config{CatchUpPage: 7, MaxPending: 16})
	const perPublisher, joins, perJoin = 400, 8, 5
	const total = 100 + 4*perPublisher + joins*perJoin
	const channel = "dashboard_42"
	publishN(t, srv, channel, 1, 100)

	var wg sync.WaitGroup
	for p := 0; p < 4; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perPublisher; i++ {
				if _, err := srv.Publish(context.Background(), system, PublishRequest{Channel: channel, Data: json.RawMessage(`1`)}); err != nil {
					t.Errorf("publish: %v", err)
					return
				}
			}
		}()
	}
	type sub struct {
		since uint64
		c     *collector
	}
	var subs []sub
	for _, since := range []uint64{0, 1, 50, 99, 100, 100, 30, 0} {
		sess, info := openSession(t, srv, []string{channel}, []*Position{{Since: since}}, "")
		if info.Channels[0].Channel != channel {
			t.Fatalf("open info %+v", info)
		}
		subs = append(subs, sub{since, collect(t, sess)})
		// Publish from here too, so joins and publishes interleave.
		for i := 0; i < perJoin; i++ {
			if _, err := srv.Publish(context.Background(), system, PublishRequest{Channel: channel, Data: json.RawMessage(`2`)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	wg.Wait()
	for _, s := range subs {
		items := s.c.waitFor(t, "every message", countOffsets(channel, int(total-s.since)))
		assertRange(t, offsets(items)[channel], s.since+1, total)
	}
}

func TestFreshSubscriptionStartsAtHead(t *testing.T) {
	t.Parallel()
	srv, _ := newTestServer(t, Config{})
	publishN(t, srv, "news", 1, 10)
	sess, info := openSession(t, srv, []string{"news"}, nil, "")
	if got := info.Channels[0].Head; got != 10 {
		t.Fatalf("head at connect = %d, want 10", got)
	}
	c := collect(t, sess)
	publishN(t, srv, "news", 11, 12)
	items := c.waitFor(t, "two live messages", countOffsets("news", 2))
	assertRange(t, offsets(items)["news"], 11, 12)
}

func TestResetWhenHistoryNoLongerReachesBack(t *testing.T) {
	t.Parallel()
	srv, st := newTestServer(t, Config{})
	publishN(t, srv, "ticker", 1, 20)
	if _, err := st.Trim(context.Background(), "ticker", store.Retention{MaxCount: 5}); err != nil {
		t.Fatal(err)
	}
	sess, _ := openSession(t, srv, []string{"ticker"}, []*Position{{Since: 3}}, "")
	c := collect(t, sess)
	items := c.waitFor(t, "kept messages", countOffsets("ticker", 5))
	if items[0].Kind != KindReset || items[0].Msg.Event != protocol.EventReset {
		t.Fatalf("first item = %+v, want a herald.reset", items[0])
	}
	var env struct {
		Channel string `json:"channel"`
		Event   string `json:"event"`
		Data    struct {
			Reason      string `json:"reason"`
			ResumeAfter uint64 `json:"resume_after"`
		} `json:"data"`
	}
	if err := json.Unmarshal(items[0].Msg.Raw, &env); err != nil {
		t.Fatalf("reset envelope %s: %v", items[0].Msg.Raw, err)
	}
	if env.Channel != "ticker" || env.Data.Reason != "trimmed" || env.Data.ResumeAfter != 15 {
		t.Fatalf("reset = %+v", env)
	}
	assertRange(t, offsets(items)["ticker"], 16, 20)
}

func TestResetWhenEpochChanged(t *testing.T) {
	t.Parallel()
	srv, _ := newTestServer(t, Config{})
	publishN(t, srv, "room", 1, 3)
	sess, _ := openSession(t, srv, []string{"room"}, []*Position{{Since: 2, Epoch: "0123456789ab"}}, "")
	c := collect(t, sess)
	items := c.waitFor(t, "reset and all messages", countOffsets("room", 3))
	if items[0].Kind != KindReset || !strings.Contains(string(items[0].Msg.Raw), `"reason":"epoch_changed"`) {
		t.Fatalf("first item %s, want reset epoch_changed", items[0].Msg.Raw)
	}
	assertRange(t, offsets(items)["room"], 1, 3)
}

func TestCursorResumesEveryChannelOfAStream(t *testing.T) {
	t.Parallel()
	srv, _ := newTestServer(t, Config{})
	chans := []string{"a", "b", "c"}
	for _, ch := range chans {
		publishN(t, srv, ch, 1, 4)
	}
	sess, _ := openSession(t, srv, chans, []*Position{{Since: 1}, {Since: 2}, nil}, "")
	c := collect(t, sess)
	items := c.waitFor(t, "a and b", func(it []Item) bool {
		o := offsets(it)
		return len(o["a"]) == 3 && len(o["b"]) == 2
	})
	last := items[len(items)-1]
	c.close()

	publishN(t, srv, "a", 5, 5)
	publishN(t, srv, "c", 5, 6)
	sess2, _ := openSession(t, srv, chans, nil, last.Cursor)
	c2 := collect(t, sess2)
	items2 := c2.waitFor(t, "resumed messages", func(it []Item) bool {
		o := offsets(it)
		return len(o["a"]) == 1 && len(o["c"]) == 2
	})
	o := offsets(items2)
	assertRange(t, o["a"], 5, 5)
	assertRange(t, o["c"], 5, 6)
	if len(o["b"]) != 0 {
		t.Fatalf("b replayed %v after resume", o["b"])
	}
}

func TestCursorAfterEveryMessageResumesRightAfterIt(t *testing.T) {
	t.Parallel()
	srv, _ := newTestServer(t, Config{})
	publishN(t, srv, "x", 1, 10)
	publishN(t, srv, "y", 1, 10)
	sess, info := openSession(t, srv, []string{"x", "y"}, []*Position{{Since: 0}, {Since: 0}}, "")
	if len(info.Channels) != 2 {
		t.Fatalf("info %+v", info)
	}
	c := collect(t, sess)
	items := c.waitFor(t, "20 messages", func(it []Item) bool { return len(it) >= 20 })
	c.close()
	// Resuming from the cursor of message k must replay exactly the rest.
	for k := 0; k < len(items); k += 3 {
		s2, _ := openSession(t, srv, []string{"x", "y"}, nil, items[k].Cursor)
		c2 := collect(t, s2)
		got := c2.waitFor(t, "rest", func(it []Item) bool { return len(it) >= len(items)-k-1 })
		want := offsets(items[k+1:])
		o := offsets(got)
		if fmt.Sprint(o["x"]) != fmt.Sprint(want["x"]) || fmt.Sprint(o["y"]) != fmt.Sprint(want["y"]) {
			t.Fatalf("resume after item %d: got %v, want %v", k, o, want)
		}
		c2.close()
	}
}

func TestSlowConsumerIsClosedWithoutSlowingOthers(t *testing.T) {
	t.Parallel()
	srv, _ := newTestServer(t, Config{Limits: Limits{QueueMessages: 16}})
	slow, _ := openSession(t, srv, []string{"feed"}, nil, "")
	defer slow.Close(ReasonClientGone)
	// The slow session goes live, then nobody drains it again.
	<-slow.Ready()
	slow.Drain(nil)
	fast, _ := openSession(t, srv, []string{"feed"}, nil, "")
	c := collect(t, fast)
	// Publish in steps the fast reader keeps up with; the slow one's queue
	// of 16 overflows in the second step.
	for step := 0; step < 10; step++ {
		publishN(t, srv, "feed", step*10+1, step*10+10)
		c.waitFor(t, "the step", countOffsets("feed", step*10+10))
	}
	items := c.waitFor(t, "100 messages", countOffsets("feed", 100))
	assertRange(t, offsets(items)["feed"], 1, 100)
	select {
	case <-slow.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("slow session was not closed")
	}
	if r := slow.Reason(); r != ReasonSlowConsumer || !r.Reconnect() {
		t.Fatalf("reason = %s, want slow_consumer with reconnect", r)
	}
	if r := fast.Reason(); fast.ctx.Err() != nil {
		t.Fatalf("fast session closed: %s", r)
	}
}

func TestEphemeralMessagesAreLiveOnlyAndExcludeSessionIsHonoured(t *testing.T) {
	t.Parallel()
	srv, _ := newTestServer(t, Config{})
	a, _ := openSession(t, srv, []string{"room"}, nil, "")
	b, _ := openSession(t, srv, []string{"room"}, nil, "")
	ca, cb := collect(t, a), collect(t, b)
	ca.waitFor(t, "live", func([]Item) bool { return true })
	ctx := context.Background()
	if _, err := srv.Publish(ctx, system, PublishRequest{Channel: "room", Event: "typing", Data: json.RawMessage(`{"on":true}`), Ephemeral: true, ExcludeSession: a.ID}); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Publish(ctx, system, PublishRequest{Channel: "room", Data: json.RawMessage(`"hi"`), ExcludeSession: a.ID}); err != nil {
		t.Fatal(err)
	}
	publishN(t, srv, "room", 2, 2)
	itemsB := cb.waitFor(t, "typing and two messages", func(it []Item) bool { return len(it) >= 3 })
	if itemsB[0].Msg.Event != "typing" || itemsB[0].Msg.Offset != 0 || strings.Contains(string(itemsB[0].Msg.Raw), `"offset"`) {
		t.Fatalf("ephemeral item %s", itemsB[0].Msg.Raw)
	}
	assertRange(t, offsets(itemsB)["room"], 1, 2)
	itemsA := ca.waitFor(t, "message 2", countOffsets("room", 1))
	assertRange(t, offsets(itemsA)["room"], 2, 2)
	for _, it := range itemsA {
		if it.Msg.Event == "typing" {
			t.Fatal("excluded session got the ephemeral message")
		}
	}
	page, err := srv.History(ctx, system, HistoryRequest{Channel: "room", Since: 0, Limit: limitOf(10)})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Messages) != 2 {
		t.Fatalf("history has %d messages, want 2 (ephemeral ones are not stored)", len(page.Messages))
	}
}

func TestOpenRefusesBadInputBeforeCreatingAnything(t *testing.T) {
	t.Parallel()
	srv, _ := newTestServer(t, Config{Limits: Limits{MaxChannelsPerRequest: 2}})
	user := Identity{User: "17"}
	cases := []struct {
		name    string
		id      Identity
		req     OpenRequest
		code    int
		message string
	}{
		{"no channel", system, OpenRequest{}, 400, "at least one channel"},
		{"bad char", system, OpenRequest{Channels: []string{"room 7"}}, 400, `" " at position 5`},
		{"too many", system, OpenRequest{Channels: []string{"a", "b", "c"}}, 400, "limit is 2"},
		{"bad cursor", system, OpenRequest{Channels: []string{"a"}, Cursor: "zzzz"}, 400, "cursor is not valid"},
		{"positions mismatch", system, OpenRequest{Channels: []string{"a"}, Positions: []*Position{nil, nil}}, 400, "2 positions for 1 channels"},
		{"anonymous", Identity{Anonymous: true}, OpenRequest{Channels: []string{"a"}}, 401, "credentials"},
		{"user without rules", user, OpenRequest{Channels: []string{"a"}}, 403, `channel "a"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := srv.Transport("test").Open(context.Background(), tc.id, tc.req)
			e := AsError(err)
			if err == nil || e.Code != tc.code || !strings.Contains(e.Message, tc.message) {
				t.Fatalf("err = %v (code %d), want %d containing %q", err, e.Code, tc.code, tc.message)
			}
		})
	}
	if n := srv.Sessions(); n != 0 {
		t.Fatalf("%d sessions left after refused opens", n)
	}
}

func TestShutdownClosesSessionsWithReconnect(t *testing.T) {
	t.Parallel()
	srv, _ := newTestServer(t, Config{})
	sess, _ := openSession(t, srv, []string{"a"}, nil, "")
	defer sess.Close(ReasonClientGone)
	srv.Shutdown()
	<-sess.Done()
	if r := sess.Reason(); r != ReasonShutdown || !r.Reconnect() {
		t.Fatalf("reason %s", r)
	}
	if _, _, err := srv.Transport("test").Open(context.Background(), system, OpenRequest{Channels: []string{"a"}}); AsError(err).Code != 503 {
		t.Fatalf("open during shutdown: %v", err)
	}
}

// TestSinceZeroReadsFromTheOldestKept: since 0 asks for everything kept,
// so a trimmed channel answers it without a reset — on history reads and
// on subscriptions. A position the client holds (since ≥ 1, or 0 of a
// known epoch: it saw the channel empty) that the history no longer
// reaches still gets one.
func TestSinceZeroReadsFromTheOldestKept(t *testing.T) {
	t.Parallel()
	srv, st := newTestServer(t, Config{})
	ctx := context.Background()
	publishN(t, srv, "trimmed", 1, 10)
	if _, err := st.Trim(ctx, "trimmed", store.Retention{MaxCount: 4}); err != nil {
		t.Fatal(err)
	}
	page, err := srv.History(ctx, system, HistoryRequest{Channel: "trimmed", Since: 0, Limit: limitOf(100)})
	if err != nil || page.Reset || len(page.Messages) != 4 || page.Next != 10 || !strings.Contains(string(page.Messages[0]), `"offset":7,`) {
		t.Fatalf("history since 0: reset %v, %d messages, next %d, %v; want offsets 7..10 without reset", page.Reset, len(page.Messages), page.Next, err)
	}
	epoch := page.Epoch
	for _, tc := range []struct {
		name  string
		from  Position
		reset bool
	}{
		{"since 0", Position{Since: 0}, false},
		{"since 0 of the current epoch", Position{Since: 0, Epoch: epoch}, true},
		{"since 1", Position{Since: 1}, true},
		{"since 2 of the current epoch", Position{Since: 2, Epoch: epoch}, true},
		{"since 6, the last trimmed", Position{Since: 6}, false},
	} {
		sess, _ := openSession(t, srv, []string{"trimmed"}, []*Position{&tc.from}, "")
		items := collect(t, sess).waitFor(t, "the kept messages", countOffsets("trimmed", 4))
		if got := items[0].Kind == KindReset; got != tc.reset {
			t.Errorf("%s: first item %s, reset %v, want %v", tc.name, items[0].Msg.Raw, got, tc.reset)
		}
		assertRange(t, offsets(items)["trimmed"], 7, 10)
		sess.Close(ReasonClientGone)
	}
}

// TestSubscribeReplyKeepsItsPlaceAmongReplies: a subscribe's reply (its
// Ack) is sent in op order — after the frames queued before it, before
// those queued after it — and before every message of its subscription,
// even while an earlier subscription is still catching up.
func TestSubscribeReplyKeepsItsPlaceAmongReplies(t *testing.T) {
	t.Parallel()
	srv, _ := newTestServer(t, Config{CatchUpPage: 2})
	publishN(t, srv, "earlier", 1, 9)
	publishN(t, srv, "room", 1, 5)
	sess, err := srv.Transport("test").NewSession(system, "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close(ReasonClientGone)
	ctx := context.Background()
	subscribe := func(channel string, since uint64, ack string) {
		t.Helper()
		if _, err := srv.Subscribe(ctx, sess, SubscribeRequest{Channel: channel, From: &Position{Since: since},
			Ack: func(SubscribeResult) []byte { return []byte(ack) }}); err != nil {
			t.Fatal(err)
		}
	}
	sess.Send([]byte("reply 1"))
	subscribe("earlier", 0, "ack 2")
	subscribe("room", 2, "ack 3")
	sess.Send([]byte("reply 4"))
	publishN(t, srv, "room", 6, 6)
	sess.Send([]byte("reply 5"))

	// Drain as a transport's writer does, until everything is out.
	var items []Item
	deadline := time.After(10 * time.Second)
	for {
		items = sess.Drain(items)
		if got := offsets(items); len(got["earlier"]) == 9 && len(got["room"]) == 4 {
			break
		}
		select {
		case <-sess.Ready():
		case <-deadline:
			t.Fatalf("drained %d items, not everything: %v", len(items), offsets(items))
		}
	}
	var frames []string
	first := map[string]int{} // channel → index of its first message
	at := map[string]int{}    // frame → index
	for i, it := range items {
		switch it.Kind {
		case KindFrame:
			frames = append(frames, string(it.Raw))
			at[string(it.Raw)] = i
		case KindMessage, KindReset:
			if _, ok := first[it.Msg.Channel]; !ok {
				first[it.Msg.Channel] = i
			}
		}
	}
	if got := strings.Join(frames, ", "); got != "reply 1, ack 2, ack 3, reply 4, reply 5" {
		t.Fatalf("frames in the order %s, want reply 1, ack 2, ack 3, reply 4, reply 5", got)
	}
	if at["ack 2"] > first["earlier"] || at["ack 3"] > first["room"] {
		t.Fatalf("a subscription's message came before its reply: acks at %d and %d, first messages at %v", at["ack 2"], at["ack 3"], first)
	}
	assertRange(t, offsets(items)["earlier"], 1, 9)
	assertRange(t, offsets(items)["room"], 3, 6)
}

// readCounter is an engine that counts its reads.
type readCounter struct {
	*store.Store
	reads atomic.Int64
}

func (r *readCounter) Read(ctx context.Context, channel string, after uint64, limit int) (store.Page, error) {
	r.reads.Add(1)
	return r.Store.Read(ctx, channel, after, limit)
}

// A subscription from now reads nothing from the engine: the head, read
// after registration, is where it starts, and what follows arrives live.
// On a remote engine a read costs round trips, and a thousand clients
// connecting at once would otherwise queue behind them.
func TestSubscribeFromNowReadsNoHistory(t *testing.T) {
	t.Parallel()
	var eng *readCounter
	srv := newServerOver(t, func(st *store.Store) store.Engine { eng = &readCounter{Store: st}; return eng })
	publishN(t, srv, "room", 1, 3)
	sess, err := srv.Transport("test").NewSession(system, "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close(ReasonClientGone)
	if _, err := srv.Subscribe(context.Background(), sess, SubscribeRequest{Channel: "room"}); err != nil {
		t.Fatal(err)
	}
	c := collect(t, sess)
	publishN(t, srv, "room", 4, 6)
	assertRange(t, offsets(c.waitFor(t, "offsets 4..6", countOffsets("room", 3)))["room"], 4, 6)
	if n := eng.reads.Load(); n != 0 {
		t.Fatalf("a subscription from now read the engine %d times, want none", n)
	}
}
