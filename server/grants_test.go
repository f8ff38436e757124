package server

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldrt/herald/store"
)

func TestGrantsAreDurable(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	open := func() (*Server, *store.Store) {
		st, err := store.Open(store.Options{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		srv, err := New(Config{APIKey: testAPIKey, Rules: seedRules()}, st)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(srv.Shutdown)
		return srv, st
	}
	srv, st := open()
	if err := srv.grants.store(context.Background(), "a/b user", "chat_room_5", 1<<ActionSubscribe|1<<ActionPublish); err != nil {
		t.Fatal(err)
	}
	st.Close()
	srv, st = open()
	defer st.Close()
	if err := authorizeOn(srv, user("a/b user"), ActionPublish, "chat_room_5"); err != nil {
		t.Fatalf("grant lost across restart: %v", err)
	}
	if err := authorizeOn(srv, user("a/b user"), ActionHistory, "chat_room_5"); err == nil {
		t.Fatal("an action that was not granted is allowed")
	}
}

func TestRevokedGrantEndsLiveSubscriptions(t *testing.T) {
	t.Parallel()
	srv, _ := newTestServer(t, Config{Rules: seedRules()})
	ctx := context.Background()
	for _, ch := range []string{"chat_room_1", "chat_room_2"} {
		if err := srv.grants.store(ctx, "21", ch, allActions); err != nil {
			t.Fatal(err)
		}
	}
	sess, _, err := srv.Transport("test").Open(ctx, user("21"), OpenRequest{Channels: []string{"chat_room_1", "chat_room_2"}})
	if err != nil {
		t.Fatal(err)
	}
	c := collect(t, sess)
	publishN(t, srv, "chat_room_1", 1, 1)
	c.waitFor(t, "the first message", countOffsets("chat_room_1", 1))

	if err := srv.grants.store(ctx, "21", "chat_room_1", 0); err != nil {
		t.Fatal(err)
	}
	items := c.waitFor(t, "the notice", func(it []Item) bool {
		return len(it) > 0 && it[len(it)-1].Kind == KindUnsubscribed
	})
	notice := items[len(items)-1].Msg
	if notice.Channel != "chat_room_1" || !strings.Contains(string(notice.Raw), `"event":"herald.unsubscribed","data":{"reason":"revoked"}`) {
		t.Fatalf("notice %s", notice.Raw)
	}
	publishN(t, srv, "chat_room_1", 2, 2)
	publishN(t, srv, "chat_room_2", 1, 1)
	items = c.waitFor(t, "room 2", countOffsets("chat_room_2", 1))
	if got := offsets(items)["chat_room_1"]; len(got) != 1 {
		t.Fatalf("revoked channel still delivered: %v", got)
	}
	// Revoking the last channel closes the session.
	if err := srv.grants.store(ctx, "21", "chat_room_2", 0); err != nil {
		t.Fatal(err)
	}
	<-sess.Done()
	if r := sess.Reason(); r != ReasonRevoked || r.Reconnect() {
		t.Fatalf("reason %s", r)
	}
}

func TestExcludedSessionSkipsButItsCursorMovesOn(t *testing.T) {
	t.Parallel()
	srv, _ := newTestServer(t, Config{Rules: []RuleConfig{{Pattern: "room", Subscribe: []string{"authenticated"}, Publish: []string{"authenticated"}}}})
	ctx := context.Background()
	me, _, err := srv.Transport("test").Open(ctx, user("17"), OpenRequest{Channels: []string{"room"}})
	if err != nil {
		t.Fatal(err)
	}
	c := collect(t, me)
	c.waitFor(t, "live", func([]Item) bool { return true })
	if _, err := srv.Publish(ctx, user("17"), PublishRequest{Channel: "room", Data: []byte(`1`), ExcludeSession: me.ID}); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Publish(ctx, user("18"), PublishRequest{Channel: "room", Data: []byte(`2`), ExcludeSession: me.ID}); AsError(err).Code != 403 {
		t.Fatalf("excluding someone else's session: %v", err)
	}
	publishN(t, srv, "room", 2, 2)
	items := c.waitFor(t, "skip and message", func(it []Item) bool { return len(it) >= 2 })
	if items[0].Kind != KindSkip || items[0].Msg.Offset != 1 || items[0].Cursor == "" {
		t.Fatalf("first item %+v, want a skip of offset 1 with a cursor", items[0])
	}
	if items[1].Kind != KindMessage || items[1].Msg.Offset != 2 {
		t.Fatalf("second item %+v", items[1])
	}
	// Resuming from the skip's cursor does not bring the message back.
	again, _, err := srv.Transport("test").Open(ctx, user("17"), OpenRequest{Channels: []string{"room"}, Cursor: items[0].Cursor})
	if err != nil {
		t.Fatal(err)
	}
	c2 := collect(t, again)
	got := c2.waitFor(t, "replay", countOffsets("room", 1))
	assertRange(t, offsets(got)["room"], 2, 2)
}

func TestSessionClosesWhenItsTokenExpires(t *testing.T) {
	t.Parallel()
	srv, _ := newTestServer(t, Config{Dev: true})
	id := user("17")
	id.Expires = srv.now().Add(50 * time.Millisecond)
	sess, _, err := srv.Transport("test").Open(context.Background(), id, OpenRequest{Channels: []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close(ReasonClientGone)
	<-sess.Done()
	if r := sess.Reason(); r != ReasonTokenExpired || !r.Reconnect() {
		t.Fatalf("reason %s", r)
	}
}

func registered(sub string) jwt.RegisteredClaims {
	return jwt.RegisteredClaims{Subject: sub}
}
