package server

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// roomServer is a server whose "room" channel every user may use.
func roomServer(t *testing.T) *Server {
	t.Helper()
	srv, _ := newTestServer(t, Config{Rules: []RuleConfig{{Pattern: "room", Subscribe: []string{"authenticated"}, Publish: []string{"authenticated"}}}})
	return srv
}

// kinds lists the stored messages and skips among items with their
// offsets: "skip:1 msg:2 msg:3".
func kinds(items []Item) string {
	var out []string
	for _, it := range items {
		switch it.Kind {
		case KindSkip:
			out = append(out, fmt.Sprintf("skip:%d", it.Msg.Offset))
		case KindMessage:
			out = append(out, fmt.Sprintf("msg:%d", it.Msg.Offset))
		}
	}
	return strings.Join(out, " ")
}

func TestExclusionFollowsTheSessionAcrossReconnects(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// Each way a client comes back after its connection dropped right
	// after the publish, from a position before the excluded message: the
	// message never comes, its position is passed over, the others come.
	for _, tc := range []struct {
		name      string
		keepOld   bool // the old connection is not yet seen to be gone
		reconnect func(t *testing.T, srv *Server, old *Session, cursor string) *Session
	}{
		{"by the cursor (SSE Last-Event-ID, poll cursor)", false, func(t *testing.T, srv *Server, _ *Session, cursor string) *Session {
			sess, _, err := srv.Transport("test").Open(ctx, user("17"), OpenRequest{Channels: []string{"room"}, Cursor: cursor})
			if err != nil {
				t.Fatal(err)
			}
			return sess
		}},
		{"by the session and a since (a client that kept offsets)", false, func(t *testing.T, srv *Server, old *Session, _ string) *Session {
			sess, _, err := srv.Transport("test").Open(ctx, user("17"), OpenRequest{Channels: []string{"room"}, Session: old.ID, Positions: []*Position{{Since: 0}}})
			if err != nil {
				t.Fatal(err)
			}
			return sess
		}},
		{"by the session on a socket (WebSocket ?session= and since)", false, func(t *testing.T, srv *Server, old *Session, _ string) *Session {
			sess, err := srv.Transport("ws").NewSession(user("17"), "", old.ID)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := srv.Subscribe(ctx, sess, SubscribeRequest{Channel: "room", From: &Position{Since: 0}}); err != nil {
				t.Fatal(err)
			}
			return sess
		}},
		{"by the cursor while the old connection still looks open", true, func(t *testing.T, srv *Server, _ *Session, cursor string) *Session {
			sess, _, err := srv.Transport("test").Open(ctx, user("17"), OpenRequest{Channels: []string{"room"}, Cursor: cursor})
			if err != nil {
				t.Fatal(err)
			}
			return sess
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := roomServer(t)
			old, _, err := srv.Transport("test").Open(ctx, user("17"), OpenRequest{Channels: []string{"room"}, Positions: []*Position{{Since: 0}}})
			if err != nil {
				t.Fatal(err)
			}
			before := old.Cursor() // where the client stands: nothing received yet
			if _, err := srv.Publish(ctx, user("17"), PublishRequest{Channel: "room", Data: json.RawMessage(`"mine"`), Session: old.ID, ExcludeSender: true}); err != nil {
				t.Fatal(err)
			}
			publishN(t, srv, "room", 2, 3)
			if !tc.keepOld {
				old.Close(ReasonClientGone) // the connection dropped before anything was written
			}
			again := tc.reconnect(t, srv, old, before)
			if again.ID != old.ID {
				t.Fatalf("reconnected as %s, want the same session %s", again.ID, old.ID)
			}
			if tc.keepOld {
				select {
				case <-old.Done():
				default:
					t.Fatal("the old connection of the session is still open")
				}
				if old.Reason() != ReasonReplaced {
					t.Fatalf("old connection closed as %s, want replaced", old.Reason())
				}
			}
			if n := srv.Sessions(); n != 1 {
				t.Fatalf("%d sessions open, want 1", n)
			}
			got := collect(t, again).waitFor(t, "the replay", countOffsets("room", 2))
			if k := kinds(got); k != "skip:1 msg:2 msg:3" {
				t.Fatalf("replay %q, want skip:1 msg:2 msg:3", k)
			}
		})
	}
}

func TestASessionOfSomeoneElseIsNotContinued(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := roomServer(t)
	theirs, _, err := srv.Transport("test").Open(ctx, user("18"), OpenRequest{Channels: []string{"room"}, Positions: []*Position{{Since: 0}}})
	if err != nil {
		t.Fatal(err)
	}
	cursor := theirs.Cursor()
	publishN(t, srv, "room", 1, 2)
	// User 17 brings user 18's cursor: the positions apply (a cursor only
	// moves one's own stream), the session does not.
	mine, _, err := srv.Transport("test").Open(ctx, user("17"), OpenRequest{Channels: []string{"room"}, Cursor: cursor})
	if err != nil {
		t.Fatal(err)
	}
	if mine.ID == theirs.ID {
		t.Fatal("user 17 took over user 18's session")
	}
	select {
	case <-theirs.Done():
		t.Fatal("user 18's session was closed by user 17's connection")
	default:
	}
	got := collect(t, mine).waitFor(t, "the replay", countOffsets("room", 2))
	assertRange(t, offsets(got)["room"], 1, 2)
	// Nor on a socket.
	ws, err := srv.Transport("ws").NewSession(user("17"), "", theirs.ID)
	if err != nil {
		t.Fatal(err)
	}
	if ws.ID == theirs.ID {
		t.Fatal("a socket of user 17 took over user 18's session")
	}
}

func TestPublishNamesOnlyOwnSessions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := roomServer(t)
	mine, _, err := srv.Transport("test").Open(ctx, user("17"), OpenRequest{Channels: []string{"room"}})
	if err != nil {
		t.Fatal(err)
	}
	closed, _, err := srv.Transport("test").Open(ctx, user("17"), OpenRequest{Channels: []string{"room"}})
	if err != nil {
		t.Fatal(err)
	}
	closed.Close(ReasonClientGone)
	theirs, _, err := srv.Transport("test").Open(ctx, user("18"), OpenRequest{Channels: []string{"room"}})
	if err != nil {
		t.Fatal(err)
	}
	gone := srv.ids.mint(user("18")) // a session of user 18 that is not open
	pub := func(id Identity, req PublishRequest) error {
		req.Channel, req.Data = "room", json.RawMessage(`1`)
		_, err := srv.Publish(ctx, id, req)
		return err
	}
	const notYours = "exclude_session must be one of your own sessions"
	for _, tc := range []struct {
		name string
		id   Identity
		req  PublishRequest
		code int
		msg  string
	}{
		{"exclude an open session of one's own", user("17"), PublishRequest{ExcludeSession: mine.ID}, 0, ""},
		{"exclude a closed session of one's own", user("17"), PublishRequest{ExcludeSession: closed.ID}, 0, ""},
		{"exclude another user's open session", user("17"), PublishRequest{ExcludeSession: theirs.ID}, 403, notYours},
		{"exclude another user's closed session", user("17"), PublishRequest{ExcludeSession: gone}, 403, notYours},
		{"exclude a made-up session", user("17"), PublishRequest{ExcludeSession: "s_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}, 403, notYours},
		{"exclude garbage", user("17"), PublishRequest{ExcludeSession: "whatever"}, 403, notYours},
		{"the API key excludes any session", system, PublishRequest{ExcludeSession: theirs.ID}, 0, ""},
		{"exclude_sender without session", user("17"), PublishRequest{ExcludeSender: true}, 400, "exclude_sender needs session"},
		{"exclude_sender and another exclude_session", user("17"), PublishRequest{ExcludeSender: true, Session: mine.ID, ExcludeSession: closed.ID}, 400, "give one of them"},
		{"exclude_sender with another user's session", user("17"), PublishRequest{ExcludeSender: true, Session: theirs.ID}, 403, "session must be one of your own sessions"},
		{"exclude_sender with one's own session", user("17"), PublishRequest{ExcludeSender: true, Session: mine.ID}, 0, ""},
	} {
		err := pub(tc.id, tc.req)
		if tc.code == 0 {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if e := AsError(err); e.Code != tc.code || !strings.Contains(e.Message, tc.msg) {
			t.Errorf("%s: %v (code %d), want %d with %q", tc.name, err, AsError(err).Code, tc.code, tc.msg)
		}
	}
}

func TestExcludeSenderPassesOverThePublishingSessionOnly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := roomServer(t)
	tab1, _, err := srv.Transport("test").Open(ctx, user("17"), OpenRequest{Channels: []string{"room"}})
	if err != nil {
		t.Fatal(err)
	}
	tab2, _, err := srv.Transport("test").Open(ctx, user("17"), OpenRequest{Channels: []string{"room"}})
	if err != nil {
		t.Fatal(err)
	}
	c1, c2 := collect(t, tab1), collect(t, tab2)
	if _, err := srv.Publish(ctx, user("17"), PublishRequest{Channel: "room", Data: json.RawMessage(`"hi"`), Session: tab1.ID, ExcludeSender: true}); err != nil {
		t.Fatal(err)
	}
	if k := kinds(c1.waitFor(t, "a skip", func(it []Item) bool { return len(it) > 0 })); k != "skip:1" {
		t.Fatalf("sending tab got %q, want skip:1", k)
	}
	got := c2.waitFor(t, "the message", countOffsets("room", 1))
	var env struct {
		From struct{ User, Session string }
	}
	if err := json.Unmarshal(got[0].Msg.Raw, &env); err != nil || env.From.User != "17" || env.From.Session != tab1.ID {
		t.Fatalf("other tab got %s, want it from user 17, session %s", got[0].Msg.Raw, tab1.ID)
	}
}

func TestCursorOnlyPollsAreOneSession(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := roomServer(t)
	const keep = time.Minute
	first, err := srv.Transport("poll").Attach(ctx, user("17"), AttachRequest{Channels: []string{"room"}})
	if err != nil {
		t.Fatal(err)
	}
	cursor := first.Cursor()
	first.Park(cursor, keep)
	for i := 1; i <= 100; i++ {
		publishN(t, srv, "room", i, i)
		// The client keeps only the cursor: no session is passed.
		sess, err := srv.Transport("poll").Attach(ctx, user("17"), AttachRequest{Channels: []string{"room"}, Cursor: cursor})
		if err != nil {
			t.Fatalf("poll %d: %v", i, err)
		}
		if sess.ID != first.ID {
			t.Fatalf("poll %d served by session %s, want %s", i, sess.ID, first.ID)
		}
		<-sess.Ready()
		items := sess.Drain(nil)
		if o := offsets(items)["room"]; len(o) != 1 || o[0] != uint64(i) {
			t.Fatalf("poll %d got %v", i, o)
		}
		cursor = sess.Cursor()
		sess.Park(cursor, keep)
		if n := srv.Sessions(); n != 1 {
			t.Fatalf("after poll %d: %d sessions", i, n)
		}
	}
}
