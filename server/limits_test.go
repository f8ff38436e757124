package server

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heraldrt/herald/store"
)

func TestPublishRateLimitFromTheRule(t *testing.T) {
	t.Parallel()
	clk := newClock()
	srv, _ := newTestServer(t, Config{Now: clk.Now, Rules: []RuleConfig{{Pattern: "chat_room_{id}",
		Subscribe: []string{"authenticated"}, Publish: []string{"authenticated"},
		RateLimit: &RateLimitConfig{Limit: 3, Window: time.Minute}}}})
	ctx := context.Background()
	pub := func(id Identity, ch string) error {
		_, err := srv.Publish(ctx, id, PublishRequest{Channel: ch, Data: json.RawMessage(`1`)})
		return err
	}
	ada, bo := userWith("17"), userWith("18")
	for i := 0; i < 3; i++ {
		if err := pub(ada, "chat_room_1"); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	err := pub(ada, "chat_room_1")
	e := AsError(err)
	if e.Code != 429 || e.RetryAfter < 19*time.Second || e.RetryAfter > 21*time.Second || e.Channel != "chat_room_1" ||
		!strings.Contains(e.Message, "limited to 3 per 1m0s") {
		t.Fatalf("fourth publish: %v (retry %s)", err, e.RetryAfter)
	}
	if err := pub(bo, "chat_room_1"); err != nil {
		t.Fatalf("another user is not limited by ada: %v", err)
	}
	if err := pub(ada, "chat_room_2"); err != nil {
		t.Fatalf("another room is not limited by the first: %v", err)
	}
	for i := 0; i < 10; i++ {
		if err := pub(system, "chat_room_1"); err != nil {
			t.Fatalf("the API key is limited: %v", err)
		}
	}
	clk.Advance(20 * time.Second) // one token back
	if err := pub(ada, "chat_room_1"); err != nil {
		t.Fatalf("after the refill: %v", err)
	}
	if err := pub(ada, "chat_room_1"); AsError(err).Code != 429 {
		t.Fatalf("a refill of one token served two: %v", err)
	}
	// Nothing refused was stored.
	page, _ := srv.History(ctx, system, HistoryRequest{Channel: "chat_room_1", Since: 0, Limit: limitOf(100)})
	if page.Head != 15 {
		t.Fatalf("head %d, want 15 (3 + 1 + 10 + 1)", page.Head)
	}
}

func TestNewSessionsPerIPAreRateLimited(t *testing.T) {
	t.Parallel()
	clk := newClock()
	srv, _ := newTestServer(t, Config{Dev: true, Now: clk.Now, Limits: Limits{ConnectsPerSecond: 1, ConnectsBurst: 2}})
	open := func(addr string) error {
		sess, _, err := srv.Transport("test").Open(context.Background(), system, OpenRequest{Channels: []string{"a"}, RemoteAddr: addr})
		if err == nil {
			sess.Close(ReasonClientGone)
		}
		return err
	}
	for i := 0; i < 2; i++ {
		if err := open("203.0.113.7:4000"); err != nil {
			t.Fatal(err)
		}
	}
	if err := open("203.0.113.7:4001"); AsError(err).Code != 429 || !strings.Contains(err.Error(), "203.0.113.7") {
		t.Fatalf("third connection: %v", err)
	}
	if err := open("203.0.113.8:4000"); err != nil {
		t.Fatalf("another address: %v", err)
	}
	for i := 0; i < 10; i++ {
		if err := open("127.0.0.1:5000"); err != nil {
			t.Fatalf("loopback is exempt: %v", err)
		}
	}
	clk.Advance(time.Second)
	if err := open("203.0.113.7:4002"); err != nil {
		t.Fatalf("after a second: %v", err)
	}
}

func TestSubscriberAndSessionCaps(t *testing.T) {
	t.Parallel()
	srv, _ := newTestServer(t, Config{Rules: []RuleConfig{
		{Pattern: "small", Subscribe: []string{"authenticated"}, MaxSubscribers: 2},
		{Pattern: "big", Subscribe: []string{"authenticated"}},
	}, Limits: Limits{MaxSessionsPerUser: 2, OnConnectionLimit: CloseOldest}})
	a := openAs(t, srv, userWith("1"), "small")
	defer a.Close(ReasonClientGone)
	b := openAs(t, srv, userWith("2"), "small")
	defer b.Close(ReasonClientGone)
	_, _, err := srv.Transport("test").Open(context.Background(), userWith("3"), OpenRequest{Channels: []string{"small"}})
	if e := AsError(err); e.Code != 429 || !strings.Contains(e.Message, `channel "small" has 2 subscribers, the limit is 2`) {
		t.Fatalf("third subscriber: %v", err)
	}
	// close_oldest: a user's third session replaces the first.
	first := openAs(t, srv, userWith("9"), "big")
	second := openAs(t, srv, userWith("9"), "big")
	defer second.Close(ReasonClientGone)
	third := openAs(t, srv, userWith("9"), "big")
	defer third.Close(ReasonClientGone)
	select {
	case <-first.Done():
	default:
		t.Fatal("the oldest session is still open")
	}
	if r := first.Reason(); r != ReasonReplaced || r.Reconnect() {
		t.Fatalf("reason %s", r)
	}
	if second.Context().Err() != nil || third.Context().Err() != nil {
		t.Fatal("a newer session was closed")
	}
}

func TestBanAndDisconnect(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	clk := newClock()
	open := func() (*Server, *store.Store) {
		srv, st, err := Open(Config{APIKey: testAPIKey, JWTSecret: testSecret, Dev: true, Now: clk.Now}, store.Options{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		return srv, st
	}
	srv, st := open()
	tok, _ := MintToken(testSecret, Claims{RegisteredClaims: registered("17")})
	a := openAs(t, srv, userWith("17"), "room")
	b := openAs(t, srv, userWith("17"), "room")
	other := openAs(t, srv, userWith("18"), "room")
	defer other.Close(ReasonClientGone)
	if n, err := srv.Moderation().Disconnect("17"); err != nil || n != 2 {
		t.Fatalf("disconnected %d sessions", n)
	}
	<-a.Done()
	<-b.Done()
	if r := a.Reason(); r != ReasonKicked || r.String() != "disconnected" || r.Reconnect() {
		t.Fatalf("reason %s", r)
	}
	a.Close(ReasonClientGone)
	b.Close(ReasonClientGone)
	if other.Context().Err() != nil {
		t.Fatal("another user was disconnected")
	}

	c := openAs(t, srv, userWith("17"), "room")
	until, err := srv.Moderation().Ban(context.Background(), "17", time.Hour)
	if err != nil || !until.Equal(clk.Now().Add(time.Hour)) {
		t.Fatalf("ban: %v %v", until, err)
	}
	<-c.Done()
	if c.Reason() != ReasonBanned {
		t.Fatalf("reason %s", c.Reason())
	}
	c.Close(ReasonClientGone)
	if _, err := srv.Identify(tok); AsError(err).Code != 403 || !strings.Contains(err.Error(), "banned until") {
		t.Fatalf("banned token: %v", err)
	}
	srv.Shutdown()
	st.Close()

	srv, st = open() // the ban is stored
	defer st.Close()
	defer srv.Shutdown()
	if _, err := srv.Identify(tok); AsError(err).Code != 403 {
		t.Fatalf("ban lost across a restart: %v", err)
	}
	clk.Advance(time.Hour)
	if _, err := srv.Identify(tok); err != nil {
		t.Fatalf("after the ban: %v", err)
	}
	if _, err := srv.Moderation().Ban(context.Background(), "17", 0); AsError(err).Code != 400 {
		t.Fatalf("a ban of 0: %v", err)
	}
}

func TestBroadcastToChannelsAndToUsers(t *testing.T) {
	t.Parallel()
	srv, _ := newTestServer(t, Config{Dev: true})
	ctx := context.Background()
	res, err := srv.Broadcast(ctx, system, BroadcastRequest{Channels: []string{"a", "b", "bad channel"}, Event: "maintenance", Data: json.RawMessage(`{"in":"10m"}`)})
	if err != nil || len(res.Results) != 3 || res.Results[0].Offset != 1 || res.Results[1].Offset != 1 ||
		res.Results[2].Error == nil || res.Results[2].Error.Code != 400 {
		t.Fatalf("broadcast to channels: %+v %v", res, err)
	}
	active := userWith("17", "status", "active")
	idle := userWith("18", "status", "idle")
	sa := openAs(t, srv, active, UserChannel("17"))
	si := openAs(t, srv, idle, UserChannel("18"))
	ca, ci := collect(t, sa), collect(t, si)
	res, err = srv.Broadcast(ctx, system, BroadcastRequest{Users: true, Filter: map[string]string{"status": "active"}, Event: "notice", Data: json.RawMessage(`"hi"`)})
	if err != nil || len(res.Results) != 1 || res.Results[0].Channel != "herald.user.17" {
		t.Fatalf("broadcast to users: %+v %v", res, err)
	}
	got := ca.waitFor(t, "the notice", countOffsets("herald.user.17", 1))
	if !strings.Contains(string(got[len(got)-1].Msg.Raw), `"event":"notice"`) {
		t.Fatalf("got %s", got[len(got)-1].Msg.Raw)
	}
	publishN(t, srv, "herald.user.18", 1, 1) // a marker: the idle user got nothing before it
	if items := ci.waitFor(t, "the marker", countOffsets("herald.user.18", 1)); len(offsets(items)["herald.user.18"]) != 1 {
		t.Fatal("the idle user got the broadcast")
	}
	// A user reads only their own system channel; nobody but the API key
	// writes to one.
	if err := authorizeOn(srv, active, ActionSubscribe, "herald.user.18"); AsError(err).Code != 403 {
		t.Fatalf("another user's channel: %v", err)
	}
	if err := authorizeOn(srv, active, ActionPublish, "herald.user.17"); AsError(err).Code != 403 {
		t.Fatalf("publish to one's own system channel: %v", err)
	}
	if _, err := srv.Broadcast(ctx, active, BroadcastRequest{Users: true, Data: json.RawMessage(`1`)}); AsError(err).Code != 403 {
		t.Fatalf("a user broadcasting to users: %v", err)
	}
	if UserChannel("auth0|abc") == "herald.user.auth0|abc" || ValidateChannel(UserChannel("auth0|abc")) != nil {
		t.Fatalf("user channel of an odd id: %q", UserChannel("auth0|abc"))
	}
}

// TestEveryRefusalWith429SaysWhenToRetry walks every cap and rate that
// answers 429: each carries a retry time, which the HTTP answer turns into
// Retry-After and retry_after.
func TestEveryRefusalWith429SaysWhenToRetry(t *testing.T) {
	t.Parallel()
	clk := newClock()
	srv, _ := newTestServer(t, Config{Now: clk.Now,
		Rules: []RuleConfig{{Pattern: "capped", Subscribe: []string{"authenticated"}, Publish: []string{"authenticated"},
			Presence: true, MaxSubscribers: 1, RateLimit: &RateLimitConfig{Limit: 1, Window: time.Minute}}}, Limits: Limits{MaxSessionsPerUser: 1, OpsPerSecond: 1, OpsBurst: 1, ConnectsPerSecond: 1, ConnectsBurst: 1}, Presence: PresenceConfig{SignalRate: 1, SignalBurst: 1}})
	ctx := context.Background()
	ada := userWith("17")
	held := openAs(t, srv, ada, "capped") // ada's one session, the channel's one subscriber
	defer held.Close(ReasonClientGone)
	twice := func(f func() error) error {
		if err := f(); err != nil {
			return err
		}
		return f()
	}
	cases := []struct {
		name  string
		err   error
		retry time.Duration // exact when set
	}{
		{"subscribers per channel", func() error {
			_, _, err := srv.Transport("test").Open(ctx, userWith("18"), OpenRequest{Channels: []string{"capped"}})
			return err
		}(), subscriberRetryAfter},
		{"sessions per user", func() error {
			_, err := srv.Transport("test").NewSession(ada, "", "")
			return err
		}(), 0},
		{"requests in flight", func() error {
			for range maxInflightPerUser {
				if _, err := srv.EnterUser(ada); err != nil {
					return err
				}
			}
			_, err := srv.EnterUser(ada)
			return err
		}(), 0},
		{"ops per connection", twice(func() error { return srv.AllowOp(held) }), 0},
		{"connections per IP", twice(func() error { return srv.limits.allowConnect("203.0.113.9:5000", srv.now()) }), 0},
		{"publishes per user", twice(func() error {
			_, err := srv.Publish(ctx, ada, PublishRequest{Channel: "capped", Data: json.RawMessage(`1`)})
			return err
		}), 0},
		{"signals per member", twice(func() error {
			return srv.Signal(ada, SignalRequest{Channel: "capped", State: json.RawMessage(`{"typing":true}`)})
		}), 0},
	}
	for _, tc := range cases {
		e := AsError(tc.err)
		if e.Code != 429 || e.RetryAfter <= 0 || (tc.retry > 0 && e.RetryAfter != tc.retry) {
			t.Errorf("%s: %d %q, retry after %s", tc.name, e.Code, e.Message, e.RetryAfter)
			continue
		}
		rec := httptest.NewRecorder()
		WriteError(rec, httptest.NewRequest("GET", "/", nil), tc.err, srv.logger)
		var body struct {
			Error struct {
				RetryAfter int `json:"retry_after"`
			} `json:"error"`
		}
		secs := int((e.RetryAfter + time.Second - 1) / time.Second)
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Error.RetryAfter != secs ||
			rec.Header().Get("Retry-After") != strconv.Itoa(secs) {
			t.Errorf("%s: answered %d %s with Retry-After %q, want %d s in both", tc.name, rec.Code, rec.Body, rec.Header().Get("Retry-After"), secs)
		}
	}
}

// Concurrent callers read the clock before they reach the limiter, so
// their times arrive slightly out of order. An earlier time must not
// make the bucket credit the same interval again: the burst, then the
// rate, whatever the order.
func TestLimiterHoldsWhenTimesArriveOutOfOrder(t *testing.T) {
	t.Parallel()
	l := newLimiterSet(1, 1, 10) // 1 per second, burst 1
	t0 := time.Unix(1_000_000, 0)
	if ok, _ := l.allow("k", t0.Add(time.Second)); !ok {
		t.Fatal("the first request is refused")
	}
	accepted := 0
	for i := 0; i < 10; i++ {
		// An older request, then one at the same latest time: no time
		// passed beyond t0+1s, so nothing more may pass.
		if ok, _ := l.allow("k", t0.Add(500*time.Millisecond)); ok {
			accepted++
		}
		if ok, _ := l.allow("k", t0.Add(time.Second)); ok {
			accepted++
		}
	}
	if accepted != 0 {
		t.Fatalf("%d more requests accepted with no time passing beyond the first", accepted)
	}
	if ok, _ := l.allow("k", t0.Add(2*time.Second)); !ok {
		t.Fatal("a request a second later is refused")
	}
}

// Bad credentials from one IP are limited before they are checked: past
// the burst, a request from that IP that brings credentials — even good
// ones — gets 429 with the time to wait, until the bucket refills. Good
// credentials never use it up, another IP is not concerned, loopback is
// exempt, and a request without credentials is not refused.
func TestBadCredentialsPerIPAreRateLimited(t *testing.T) {
	t.Parallel()
	clk := newClock()
	srv, _ := newTestServer(t, Config{APIKey: testAPIKey, Now: clk.Now, Limits: Limits{AuthFailuresPerSecond: 1, AuthFailuresBurst: 3}})
	auth := func(addr, tok string) error {
		r := httptest.NewRequest(http.MethodGet, "/sse?channel=a", nil)
		r.RemoteAddr = addr
		if tok != "" {
			r.Header.Set("Authorization", "Bearer "+tok)
		}
		_, err := srv.Authenticate(r)
		return err
	}
	const attacker, other = "203.0.113.7:4000", "203.0.113.8:4000"
	for range 5 {
		if err := auth(attacker, testAPIKey); err != nil {
			t.Fatalf("the API key: %v", err)
		}
	}
	for i := range 3 {
		if err := auth(attacker, "forged.token.sig"); AsError(err).Code != 401 {
			t.Fatalf("bad token %d: %v, want 401", i, err)
		}
	}
	err := auth(attacker, testAPIKey)
	if e := AsError(err); e.Code != 429 || e.RetryAfter != time.Second || !strings.Contains(err.Error(), "203.0.113.7") {
		t.Fatalf("past the burst: %v (retry after %v), want 429 naming the IP, retry after 1s", err, e.RetryAfter)
	}
	if err := auth(attacker, ""); err != nil {
		t.Fatalf("no credentials: %v, want anonymous", err)
	}
	if err := auth(other, testAPIKey); err != nil {
		t.Fatalf("another IP: %v", err)
	}
	for i := range 10 {
		if err := auth("127.0.0.1:5000", "forged.token.sig"); AsError(err).Code != 401 {
			t.Fatalf("loopback, bad token %d: %v, want 401 (exempt)", i, err)
		}
	}
	clk.Advance(time.Second)
	if err := auth(attacker, testAPIKey); err != nil {
		t.Fatalf("a second later: %v", err)
	}
}
