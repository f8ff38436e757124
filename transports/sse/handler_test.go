package sse

import (
	"bufio"
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

	"github.com/julienschmidt/httprouter"

	"github.com/heraldrt/herald/protocol"
	"github.com/heraldrt/herald/server"
	"github.com/heraldrt/herald/server/servertest"
	"github.com/heraldrt/herald/store"
)

const apiKey = "sse-test-api-key-0123456789"

type event struct {
	name, data, id string
	comments       int
}

type fixture struct {
	srv  *server.Server
	http *httptest.Server
}

func newFixture(t *testing.T, cfg server.Config, opts Options) *fixture {
	t.Helper()
	cfg.APIKey = apiKey
	f := servertest.Start(t, cfg, store.Options{}, func(srv *server.Server, r *httprouter.Router) func(context.Context) error {
		h, err := New(srv, opts)
		if err != nil {
			t.Fatal(err)
		}
		r.Handler(http.MethodGet, "/sse", h)
		return h.Wait
	})
	return &fixture{srv: f.Srv, http: f.HTTP}
}

func (f *fixture) publish(t *testing.T, channel string, data string) {
	t.Helper()
	if _, err := f.srv.Publish(context.Background(), server.Identity{System: true}, server.PublishRequest{
		Channel: channel, Data: json.RawMessage(data),
	}); err != nil {
		t.Fatal(err)
	}
}

// testStream is an open SSE response read event by event.
type testStream struct {
	t    *testing.T
	resp *http.Response
	rd   *bufio.Reader
	ch   chan event
}

func (f *fixture) open(t *testing.T, query string, header http.Header) *testStream {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, f.http.URL+"/sse?"+query, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	if req.Header.Get("Authorization") == "" {
		req.Header.Set("Authorization", "Bearer "+apiKey)
	}
	resp, err := f.http.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	s := &testStream{t: t, resp: resp, rd: bufio.NewReader(resp.Body), ch: make(chan event, 1024)}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode == http.StatusOK {
		go s.read()
	}
	return s
}

// read parses events until the body ends; comments become events with no
// name and data.
func (s *testStream) read() {
	defer close(s.ch)
	var cur event
	var data []string
	for {
		line, err := s.rd.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "":
			if data != nil || cur.comments > 0 || cur.id != "" {
				cur.data = strings.Join(data, "\n")
				s.ch <- cur
			}
			cur, data = event{}, nil
		case strings.HasPrefix(line, ":"):
			cur.comments++
		default:
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "event":
				cur.name = value
			case "data":
				data = append(data, value)
			case "id":
				cur.id = value
			}
		}
	}
}

// next returns the next event that is not a heartbeat.
func (s *testStream) next() event {
	s.t.Helper()
	for {
		select {
		case ev, ok := <-s.ch:
			if !ok {
				s.t.Fatal("stream ended")
			}
			if ev.name == "" && ev.data == "" && ev.id == "" {
				continue // heartbeat
			}
			return ev
		case <-time.After(10 * time.Second):
			s.t.Fatal("no event within 10s")
		}
	}
}

type envelope struct {
	Channel string          `json:"channel"`
	Offset  uint64          `json:"offset"`
	Epoch   string          `json:"epoch"`
	Event   string          `json:"event"`
	Data    json.RawMessage `json:"data"`
}

func (s *testStream) message() (envelope, string) {
	s.t.Helper()
	ev := s.next()
	var env envelope
	if err := json.Unmarshal([]byte(ev.data), &env); err != nil {
		s.t.Fatalf("event %+v: %v", ev, err)
	}
	if env.Event != ev.name {
		s.t.Fatalf("SSE event %q carries envelope event %q", ev.name, env.Event)
	}
	return env, ev.id
}

func TestStreamOpensWithHeadersAndConnectedEvent(t *testing.T) {
	t.Parallel()
	f := newFixture(t, server.Config{}, Options{})
	f.publish(t, "chat_room_7", `{"text":"before"}`)
	s := f.open(t, "channel=chat_room_7&channel=user_17_notifications", nil)
	if s.resp.StatusCode != 200 {
		t.Fatalf("status %d", s.resp.StatusCode)
	}
	for k, want := range map[string]string{
		"Content-Type":      "text/event-stream; charset=utf-8",
		"Cache-Control":     "no-cache",
		"X-Accel-Buffering": "no",
	} {
		if got := s.resp.Header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	ev := s.next()
	if ev.name != protocol.EventConnected || ev.id == "" {
		t.Fatalf("first event %+v, want herald.connected with an id", ev)
	}
	var info struct {
		Session  string `json:"session"`
		Channels []struct {
			Channel string `json:"channel"`
			Epoch   string `json:"epoch"`
			Offset  uint64 `json:"offset"`
		} `json:"channels"`
	}
	if err := json.Unmarshal([]byte(ev.data), &info); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(info.Session, "s_") || len(info.Channels) != 2 ||
		info.Channels[0].Channel != "chat_room_7" || info.Channels[0].Offset != 1 || len(info.Channels[0].Epoch) != 12 ||
		info.Channels[1].Channel != "user_17_notifications" || info.Channels[1].Offset != 0 {
		t.Fatalf("connected data %s", ev.data)
	}
	f.publish(t, "user_17_notifications", `{"n":1}`)
	env, id := s.message()
	if env.Channel != "user_17_notifications" || env.Offset != 1 || id == "" || id == ev.id {
		t.Fatalf("message %+v id %q", env, id)
	}
}

func TestNewlinesInDataNeverBreakFraming(t *testing.T) {
	t.Parallel()
	f := newFixture(t, server.Config{}, Options{})
	s := f.open(t, "channel=notes", nil)
	s.next() // connected
	f.publish(t, "notes", "{\n  \"text\": \"line 1\\nline 2\\r\\n\\n event: x\"\n}")
	f.publish(t, "notes", `"second"`)
	env, _ := s.message()
	var data struct{ Text string }
	if err := json.Unmarshal(env.Data, &data); err != nil || data.Text != "line 1\nline 2\r\n\n event: x" {
		t.Fatalf("data %s (%v)", env.Data, err)
	}
	env2, _ := s.message()
	if env2.Offset != 2 || string(env2.Data) != `"second"` {
		t.Fatalf("second %+v", env2)
	}
}

func TestResumeWithLastEventIDHasNoGapOrDuplicate(t *testing.T) {
	t.Parallel()
	f := newFixture(t, server.Config{}, Options{})
	for _, header := range []bool{true, false} {
		ch := fmt.Sprintf("resume_%v", header)
		s := f.open(t, "channel="+ch, nil)
		s.next()
		for i := 1; i <= 3; i++ {
			f.publish(t, ch, fmt.Sprint(i))
		}
		var last string
		for i := 1; i <= 3; i++ {
			env, id := s.message()
			if env.Offset != uint64(i) {
				t.Fatalf("offset %d, want %d", env.Offset, i)
			}
			last = id
		}
		s.resp.Body.Close()
		f.publish(t, ch, "4")
		f.publish(t, ch, "5")
		var s2 *testStream
		if header {
			s2 = f.open(t, "channel="+ch, http.Header{"Last-Event-Id": {last}})
		} else {
			s2 = f.open(t, "channel="+ch+"&cursor="+url.QueryEscape(last), nil)
		}
		s2.next()
		for i := 4; i <= 5; i++ {
			if env, _ := s2.message(); env.Offset != uint64(i) {
				t.Fatalf("after resume: offset %d, want %d", env.Offset, i)
			}
		}
		f.publish(t, ch, "6")
		if env, _ := s2.message(); env.Offset != 6 {
			t.Fatalf("live after resume: offset %d", env.Offset)
		}
	}
}

func TestPerChannelOffsetsOnFirstConnect(t *testing.T) {
	t.Parallel()
	f := newFixture(t, server.Config{}, Options{})
	for i := 1; i <= 5; i++ {
		f.publish(t, "a", fmt.Sprint(i))
		f.publish(t, "b", fmt.Sprint(i))
	}
	s := f.open(t, "channel=a&channel=b&since=3&since=", nil)
	s.next()
	for _, want := range []uint64{4, 5} {
		if env, _ := s.message(); env.Channel != "a" || env.Offset != want {
			t.Fatalf("got %s/%d, want a/%d", env.Channel, env.Offset, want)
		}
	}
	f.publish(t, "b", "6")
	if env, _ := s.message(); env.Channel != "b" || env.Offset != 6 {
		t.Fatalf("got %s/%d, want b/6 (b starts at its head)", env.Channel, env.Offset)
	}
}

func TestErrorsAnswerBeforeAnyStreamStarts(t *testing.T) {
	t.Parallel()
	f := newFixture(t, server.Config{JWTSecret: "sse-test-jwt-secret-0123456789abcdef"}, Options{})
	user, _ := server.MintToken("sse-test-jwt-secret-0123456789abcdef", func() server.Claims {
		var c server.Claims
		c.Subject = "17"
		return c
	}())
	cases := []struct {
		name   string
		query  string
		header http.Header
		status int
		msg    string
	}{
		{"bad channel", "channel=a%20b", nil, 400, `" " at position 2`},
		{"no channel", "", nil, 400, "at least one channel"},
		{"bad cursor", "channel=a", http.Header{"Last-Event-Id": {"garbage!"}}, 400, "cursor is not valid"},
		{"bad since", "channel=a&since=x", nil, 400, `since "x"`},
		{"no credentials", "channel=a", http.Header{"Authorization": {"Basic x"}}, 401, "Bearer"},
		{"bad token", "channel=a", http.Header{"Authorization": {"Bearer nope"}}, 401, "neither the API key nor"},
		{"malformed jwt", "channel=a", http.Header{"Authorization": {"Bearer a.b.c"}}, 401, "malformed"},
		{"user denied", "channel=user_18_notifications", http.Header{"Authorization": {"Bearer " + user}}, 403, "user_18_notifications"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := f.open(t, tc.query, tc.header)
			body, _ := io.ReadAll(s.resp.Body)
			if ct := s.resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Fatalf("content type %q", ct)
			}
			var e struct {
				Error struct {
					Code    int    `json:"code"`
					Message string `json:"message"`
				} `json:"error"`
			}
			if err := json.Unmarshal(body, &e); err != nil || s.resp.StatusCode != tc.status ||
				e.Error.Code != tc.status || !strings.Contains(e.Error.Message, tc.msg) {
				t.Fatalf("status %d body %s, want %d with a message containing %q", s.resp.StatusCode, body, tc.status, tc.msg)
			}
			if tc.status == 401 && s.resp.Header.Get("WWW-Authenticate") == "" {
				t.Fatal("401 without WWW-Authenticate")
			}
		})
	}
}

func TestHeartbeatCommentsKeepTheLineBusy(t *testing.T) {
	t.Parallel()
	f := newFixture(t, server.Config{}, Options{Heartbeat: 100 * time.Millisecond})
	s := f.open(t, "channel=quiet", nil)
	s.next()
	for i := 0; i < 2; i++ {
		select {
		case ev := <-s.ch:
			if ev.comments == 0 || ev.name != "" {
				t.Fatalf("got %+v, want a comment", ev)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no heartbeat")
		}
	}
}

func TestShutdownTellsClientsToReconnect(t *testing.T) {
	t.Parallel()
	f := newFixture(t, server.Config{}, Options{})
	s := f.open(t, "channel=a", nil)
	s.next()
	f.srv.Shutdown()
	ev := s.next()
	if ev.name != protocol.EventDisconnect || ev.data != `{"reason":"shutdown","reconnect":true}` || ev.id != "" {
		t.Fatalf("got %+v", ev)
	}
	if _, ok := <-s.ch; ok {
		t.Fatal("stream goes on after the disconnect event")
	}
}

func TestCORSLetsAllowedOriginsOpenAStream(t *testing.T) {
	t.Parallel()
	f := newFixture(t, server.Config{CORS: server.CORSConfig{AllowedOrigins: []string{"https://app.example.com"}}}, Options{})
	pre, _ := http.NewRequest(http.MethodOptions, f.http.URL+"/sse?channel=a", nil)
	pre.Header.Set("Origin", "https://app.example.com")
	pre.Header.Set("Access-Control-Request-Method", "GET")
	pre.Header.Set("Access-Control-Request-Headers", "last-event-id")
	resp, err := f.http.Client().Do(pre)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 204 || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" ||
		!strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Last-Event-ID") {
		t.Fatalf("preflight: %d %v", resp.StatusCode, resp.Header)
	}
	s := f.open(t, "channel=a", http.Header{"Origin": {"https://app.example.com"}})
	if s.resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" {
		t.Fatalf("stream headers %v", s.resp.Header)
	}
	other := f.open(t, "channel=a", http.Header{"Origin": {"https://evil.example"}})
	if other.resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatal("a foreign origin was allowed")
	}
}

func TestExcludedMessageMovesTheCursorWithAnIDOnlyEvent(t *testing.T) {
	t.Parallel()
	f := newFixture(t, server.Config{Dev: true}, Options{})
	s := f.open(t, "channel=room", nil)
	var info struct{ Session string }
	if err := json.Unmarshal([]byte(s.next().data), &info); err != nil {
		t.Fatal(err)
	}
	if _, err := f.srv.Publish(context.Background(), server.Identity{System: true}, server.PublishRequest{
		Channel: "room", Data: json.RawMessage(`"mine"`), ExcludeSession: info.Session,
	}); err != nil {
		t.Fatal(err)
	}
	f.publish(t, "room", `"theirs"`)
	skip := s.next()
	if skip.name != "" || skip.data != "" || skip.id == "" {
		t.Fatalf("got %+v, want an id-only event", skip)
	}
	env, id := s.message()
	if env.Offset != 2 || id == skip.id {
		t.Fatalf("next message %+v id %q", env, id)
	}
	// The skip's id resumes after the excluded message.
	s2 := f.open(t, "channel=room", http.Header{"Last-Event-Id": {skip.id}})
	s2.next()
	if env, _ := s2.message(); env.Offset != 2 {
		t.Fatalf("resume from the skip replayed offset %d", env.Offset)
	}
}
