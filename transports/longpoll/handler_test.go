package longpoll

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/julienschmidt/httprouter"

	"github.com/heraldrt/herald/server"
	"github.com/heraldrt/herald/server/servertest"
	"github.com/heraldrt/herald/store"
)

const (
	apiKey = "poll-test-api-key-0123456789"
	secret = "poll-test-jwt-secret-0123456789abcdef01"
)

type fixture struct {
	srv  *server.Server
	st   *store.Store
	http *httptest.Server
	h    *Handler
}

func newFixture(t testing.TB, cfg server.Config, opts Options) *fixture {
	t.Helper()
	cfg.APIKey, cfg.JWTSecret = apiKey, secret
	var h *Handler
	f := servertest.Start(t, cfg, store.Options{}, func(srv *server.Server, r *httprouter.Router) func(context.Context) error {
		var err error
		if h, err = New(srv, opts); err != nil {
			t.Fatal(err)
		}
		r.Handler(http.MethodGet, "/poll", h)
		r.Handler(http.MethodPost, "/poll", h)
		return h.Wait
	})
	return &fixture{srv: f.Srv, st: f.Store, http: f.HTTP, h: h}
}

type answerBody struct {
	Messages []json.RawMessage `json:"messages"`
	Cursor   string            `json:"cursor"`
	Session  string            `json:"session"`
}

type envelope struct {
	Channel string          `json:"channel"`
	Offset  uint64          `json:"offset"`
	Event   string          `json:"event"`
	Data    json.RawMessage `json:"data"`
}

func (a answerBody) envelopes(t *testing.T) []envelope {
	t.Helper()
	out := make([]envelope, len(a.Messages))
	for i, m := range a.Messages {
		if err := json.Unmarshal(m, &out[i]); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// poll sends a GET /poll and decodes the answer (status 200 expected
// unless want says otherwise).
func (f *fixture) poll(t *testing.T, tok string, q url.Values) (answerBody, *http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, f.http.URL+"/poll?"+q.Encode(), nil)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := f.http.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var a answerBody
	if resp.StatusCode == 200 {
		if err := json.Unmarshal(raw, &a); err != nil {
			t.Fatalf("answer %s: %v", raw, err)
		}
	}
	return a, resp, string(raw)
}

func (f *fixture) publish(t *testing.T, channel string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if _, err := f.srv.Publish(context.Background(), server.Identity{System: true}, server.PublishRequest{Channel: channel, Data: json.RawMessage(`1`)}); err != nil {
			t.Fatal(err)
		}
	}
}

func offsets(envs []envelope) string {
	var s []string
	for _, e := range envs {
		s = append(s, fmt.Sprint(e.Offset))
	}
	return strings.Join(s, ",")
}

func TestPollWaitsFromTheHeadAndResumesByCursor(t *testing.T) {
	t.Parallel()
	f := newFixture(t, server.Config{}, Options{})
	f.publish(t, "news", 3) // before the first poll: not delivered
	first, resp, _ := f.poll(t, apiKey, url.Values{"channel": {"news"}, "timeout": {"0"}})
	if len(first.Messages) != 0 || first.Cursor == "" || !strings.HasPrefix(first.Session, "s_") {
		t.Fatalf("first poll %+v", first)
	}
	if resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("headers %v", resp.Header)
	}
	// Published while no poll waits: the session kept it.
	f.publish(t, "news", 2)
	a, _, _ := f.poll(t, apiKey, url.Values{"channel": {"news"}, "cursor": {first.Cursor}, "session": {first.Session}, "timeout": {"5"}})
	if got := offsets(a.envelopes(t)); got != "4,5" || a.Session != first.Session {
		t.Fatalf("second poll: %s (session %s)", got, a.Session)
	}
	// A poll that waits gets what is published meanwhile.
	done := make(chan answerBody)
	go func() {
		b, _, _ := f.poll(t, apiKey, url.Values{"channel": {"news"}, "cursor": {a.Cursor}, "session": {a.Session}, "timeout": {"10"}})
		done <- b
	}()
	f.publish(t, "news", 1)
	if b := <-done; offsets(b.envelopes(t)) != "6" {
		t.Fatalf("waiting poll got %s", offsets(b.envelopes(t)))
	}
	// Without the session, the cursor alone resumes the session it names
	// (from the store: it is an older cursor than the last answer's).
	c, _, _ := f.poll(t, apiKey, url.Values{"channel": {"news"}, "cursor": {first.Cursor}, "timeout": {"0"}})
	if got := offsets(c.envelopes(t)); got != "4,5,6" || c.Session != first.Session {
		t.Fatalf("cursor-only poll: %s session %s", got, c.Session)
	}
}

func TestALostAnswerIsDeliveredAgain(t *testing.T) {
	t.Parallel()
	f := newFixture(t, server.Config{}, Options{})
	a, _, _ := f.poll(t, apiKey, url.Values{"channel": {"room"}, "timeout": {"0"}})
	f.publish(t, "room", 2)
	b, _, _ := f.poll(t, apiKey, url.Values{"channel": {"room"}, "cursor": {a.Cursor}, "session": {a.Session}, "timeout": {"5"}})
	if offsets(b.envelopes(t)) != "1,2" {
		t.Fatal(offsets(b.envelopes(t)))
	}
	// The client never got b: it polls again with a's cursor.
	f.publish(t, "room", 1)
	again, _, _ := f.poll(t, apiKey, url.Values{"channel": {"room"}, "cursor": {a.Cursor}, "session": {a.Session}, "timeout": {"5"}})
	if got := offsets(again.envelopes(t)); got != "1,2,3" || again.Session != a.Session {
		t.Fatalf("after a lost answer: %s (session %s, want %s)", got, again.Session, a.Session)
	}
}

func TestAnswersAreBoundedAndInOrder(t *testing.T) {
	t.Parallel()
	f := newFixture(t, server.Config{CatchUpPage: 7}, Options{MaxMessages: 10})
	f.publish(t, "feed", 25)
	q := url.Values{"channel": {"feed"}, "since": {"0"}, "timeout": {"0"}}
	var got []string
	for i := 0; i < 3; i++ {
		a, _, _ := f.poll(t, apiKey, q)
		if len(a.Messages) > 10 {
			t.Fatalf("answer of %d messages", len(a.Messages))
		}
		got = append(got, offsets(a.envelopes(t)))
		q = url.Values{"channel": {"feed"}, "cursor": {a.Cursor}, "session": {a.Session}, "timeout": {"0"}}
	}
	want := "1,2,3,4,5,6,7,8,9,10|11,12,13,14,15,16,17,18,19,20|21,22,23,24,25"
	if strings.Join(got, "|") != want {
		t.Fatalf("got %s", strings.Join(got, "|"))
	}
}

func TestPollWithManyChannelsByPOSTAndResetAmongMessages(t *testing.T) {
	t.Parallel()
	f := newFixture(t, server.Config{}, Options{})
	f.publish(t, "a", 10)
	f.publish(t, "b", 2)
	if _, err := f.st.Trim(context.Background(), "a", store.Retention{MaxCount: 3}); err != nil {
		t.Fatal(err)
	}
	body := `{"channels":["a","b"],"since":["2","1"],"timeout":0}`
	req, _ := http.NewRequest(http.MethodPost, f.http.URL+"/poll", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+apiKey)
	resp, err := f.http.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var a answerBody
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		t.Fatal(err)
	}
	envs := a.envelopes(t)
	var kinds []string
	for _, e := range envs {
		kinds = append(kinds, fmt.Sprintf("%s/%s/%d", e.Channel, e.Event, e.Offset))
	}
	got := strings.Join(kinds, " ")
	if !strings.Contains(got, "a/herald.reset/0 a/message/8 a/message/9 a/message/10") || !strings.Contains(got, "b/message/2") {
		t.Fatalf("messages %s", got)
	}
}

func TestBadPollsAreRefusedClearly(t *testing.T) {
	t.Parallel()
	f := newFixture(t, server.Config{}, Options{MaxTimeout: 30 * time.Second})
	cases := []struct {
		q    url.Values
		tok  string
		code int
		msg  string
	}{
		{url.Values{"channel": {"a"}, "timeout": {"31"}}, apiKey, 400, "timeout 31: want 0 to 30 seconds"},
		{url.Values{"channel": {"a"}, "timeout": {"-1"}}, apiKey, 400, "timeout -1"},
		{url.Values{"channel": {"a"}, "timeout": {"1.5"}}, apiKey, 400, `timeout "1.5" is not a whole number`},
		{url.Values{"channel": {"a"}, "cursor": {"broken"}}, apiKey, 400, "cursor is not valid"},
		{url.Values{"channel": {"a b"}}, apiKey, 400, `" " at position 2`},
		{url.Values{}, apiKey, 400, "at least one channel"},
		{url.Values{"channel": {"a"}}, "", 401, "credentials"},
	}
	for _, tc := range cases {
		_, resp, raw := f.poll(t, tc.tok, tc.q)
		var e struct {
			Error struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		_ = json.Unmarshal([]byte(raw), &e)
		if resp.StatusCode != tc.code || e.Error.Code != tc.code || !strings.Contains(e.Error.Message, tc.msg) {
			t.Errorf("%v: %d %s, want %d containing %q", tc.q, resp.StatusCode, raw, tc.code, tc.msg)
		}
	}
}

func TestASecondPollTakesTheSessionOver(t *testing.T) {
	t.Parallel()
	f := newFixture(t, server.Config{}, Options{})
	a, _, _ := f.poll(t, apiKey, url.Values{"channel": {"x"}, "timeout": {"0"}})
	q := url.Values{"channel": {"x"}, "cursor": {a.Cursor}, "session": {a.Session}, "timeout": {"20"}}
	// Two polls on one session: whichever attaches second preempts the
	// other, which answers at once, empty; the message then goes to the
	// poll that took over, exactly once.
	answers := make(chan answerBody, 2)
	for i := 0; i < 2; i++ {
		go func() {
			b, _, _ := f.poll(t, apiKey, q)
			answers <- b
		}()
	}
	if first := <-answers; len(first.Messages) != 0 {
		t.Fatalf("preempted poll answered %s", offsets(first.envelopes(t)))
	}
	f.publish(t, "x", 1)
	if b := <-answers; offsets(b.envelopes(t)) != "1" {
		t.Fatalf("the poll that took over got %s", offsets(b.envelopes(t)))
	}
}

func TestIdleSessionsExpireAndUsersAreBounded(t *testing.T) {
	t.Parallel()
	// The grace is what the three polls below must beat (a session polled
	// with timeout 0 expires a grace after its poll): long next to a
	// request on a busy machine.
	f := newFixture(t, server.Config{Dev: true, Limits: server.Limits{MaxSessionsPerUser: 2}}, Options{Grace: 2 * time.Second})
	tok, _ := server.MintToken(secret, server.Claims{RegisteredClaims: jwt.RegisteredClaims{Subject: "17"}})
	var sessions []string
	for i := 0; i < 2; i++ {
		a, resp, raw := f.poll(t, tok, url.Values{"channel": {"c"}, "timeout": {"0"}})
		if resp.StatusCode != 200 {
			t.Fatal(raw)
		}
		sessions = append(sessions, a.Session)
	}
	if sessions[0] == "" || sessions[0] == sessions[1] {
		t.Fatalf("two polls without a session got sessions %q: want two distinct ones", sessions)
	}
	_, resp, raw := f.poll(t, tok, url.Values{"channel": {"c"}, "timeout": {"0"}})
	if resp.StatusCode != 429 || !strings.Contains(raw, `user \"17\" has 2 open sessions, the limit is 2`) {
		t.Fatalf("third session: %d %s", resp.StatusCode, raw)
	}
	// Polled with timeout 0, the sessions expire after the grace.
	deadline := time.Now().Add(20 * time.Second)
	for f.srv.Sessions() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions still open", f.srv.Sessions())
		}
		time.Sleep(10 * time.Millisecond) // polling a state with no event to wait on
	}
	if _, resp, raw := f.poll(t, tok, url.Values{"channel": {"c"}, "timeout": {"0"}}); resp.StatusCode != 200 {
		t.Fatalf("after expiry: %d %s", resp.StatusCode, raw)
	}
}

func TestExcludedMessageMovesThePollCursor(t *testing.T) {
	t.Parallel()
	f := newFixture(t, server.Config{}, Options{})
	a, _, _ := f.poll(t, apiKey, url.Values{"channel": {"r"}, "timeout": {"0"}})
	if _, err := f.srv.Publish(context.Background(), server.Identity{System: true}, server.PublishRequest{
		Channel: "r", Data: json.RawMessage(`1`), ExcludeSession: a.Session}); err != nil {
		t.Fatal(err)
	}
	f.publish(t, "r", 1)
	b, _, _ := f.poll(t, apiKey, url.Values{"channel": {"r"}, "cursor": {a.Cursor}, "session": {a.Session}, "timeout": {"5"}})
	if got := offsets(b.envelopes(t)); got != "2" {
		t.Fatalf("got %s, want only 2", got)
	}
	// The cursor covers 1: a cursor-only poll does not bring it back.
	c, _, _ := f.poll(t, apiKey, url.Values{"channel": {"r"}, "cursor": {b.Cursor}, "timeout": {"0"}})
	if len(c.Messages) != 0 {
		t.Fatalf("replayed %s", offsets(c.envelopes(t)))
	}
}

func TestShutdownAnswersWaitingPolls(t *testing.T) {
	t.Parallel()
	f := newFixture(t, server.Config{}, Options{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, resp, raw := f.poll(t, apiKey, url.Values{"channel": {"s"}, "timeout": {"30"}})
		// 200 and the notice when it was waiting; 503 when the shutdown
		// caught it while it was still opening.
		want := `"messages":[{"event":"herald.disconnect","data":{"reason":"shutdown","reconnect":true}}]`
		if !(resp.StatusCode == 200 && strings.Contains(raw, want)) && resp.StatusCode != 503 {
			t.Errorf("poll during shutdown: %d %s", resp.StatusCode, raw)
		}
	}()
	for f.srv.Sessions() == 0 {
		time.Sleep(time.Millisecond) // until the poll is registered; no event marks it
	}
	f.srv.Shutdown()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a poll waiting for 30s was not answered at shutdown")
	}
}

func TestAWaitingPollIsToldWhyItsSessionEnded(t *testing.T) {
	t.Parallel()
	tok, _ := server.MintToken(secret, server.Claims{RegisteredClaims: jwt.RegisteredClaims{Subject: "17"}})
	for _, tc := range []struct {
		name string
		end  func(*server.Server) error
		want string
	}{
		{"disconnected", func(srv *server.Server) error { _, err := srv.Moderation().Disconnect("17"); return err },
			`{"reason":"disconnected","reconnect":false}`},
		{"banned", func(srv *server.Server) error {
			_, err := srv.Moderation().Ban(context.Background(), "17", time.Hour)
			return err
		},
			`{"reason":"banned","reconnect":false}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, server.Config{Dev: true}, Options{})
			got := make(chan string, 1)
			go func() {
				_, _, raw := f.poll(t, tok, url.Values{"channel": {"c"}, "timeout": {"30"}})
				got <- raw
			}()
			// Once the session exists, the poll is waiting on it or about
			// to: either way the end of the session answers it.
			for f.srv.Sessions() == 0 {
				time.Sleep(time.Millisecond) // no event marks a new poll session
			}
			if err := tc.end(f.srv); err != nil {
				t.Fatal(err)
			}
			select {
			case raw := <-got:
				want := `"messages":[{"event":"herald.disconnect","data":` + tc.want + `}]`
				if !strings.Contains(raw, want) {
					t.Fatalf("answer %s, want %s", raw, want)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the waiting poll was not answered")
			}
		})
	}
}

// TestPollAnswersCarryPositionsWhenAsked: positions=1 adds where the
// session stands on each channel — a channel with no message yet too —
// so a client can resume from them on another transport; without it the
// answer has none; a bad value is refused.
func TestPollAnswersCarryPositionsWhenAsked(t *testing.T) {
	t.Parallel()
	f := newFixture(t, server.Config{}, Options{})
	f.publish(t, "news", 3)
	f.publish(t, "quiet", 1)
	type positioned struct {
		Positions []struct {
			Channel string `json:"channel"`
			Epoch   string `json:"epoch"`
			Offset  uint64 `json:"offset"`
		} `json:"positions"`
	}
	q := url.Values{"channel": {"news", "quiet", "empty"}, "since": {"1", "", ""}, "timeout": {"0"}, "positions": {"1"}}
	_, _, raw := f.poll(t, apiKey, q)
	var a positioned
	if err := json.Unmarshal([]byte(raw), &a); err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(len(a.Positions))
	for _, p := range a.Positions {
		got += fmt.Sprintf(" %s@%d/%d", p.Channel, p.Offset, len(p.Epoch))
	}
	if want := "3 news@3/12 quiet@1/12 empty@0/12"; got != want {
		t.Fatalf("positions %s, want %s: %s", got, want, raw)
	}
	q.Del("positions")
	if _, _, raw := f.poll(t, apiKey, q); strings.Contains(raw, "positions") {
		t.Fatalf("an answer not asked for positions has them: %s", raw)
	}
	q.Set("positions", "yes")
	if _, resp, raw := f.poll(t, apiKey, q); resp.StatusCode != 400 || !strings.Contains(raw, `positions \"yes\"`) {
		t.Fatalf("positions=yes: %d %s", resp.StatusCode, raw)
	}
}
