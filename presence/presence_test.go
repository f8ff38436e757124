package presence

import (
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

func kinds(evs []Event) string {
	var s []string
	for _, e := range evs {
		x := e.Kind.String() + ":" + e.Member.User
		if e.Kind == StateChanged {
			x += "=" + string(e.Member.State)
		}
		s = append(s, x)
	}
	return strings.Join(s, ",")
}

// step is one moment of a scenario: an action at a time, and the events
// expected from it (and from Advance at that time).
type step struct {
	at   time.Duration
	do   func(tr *Tracker, now time.Time) []Event
	want string
}

func join(user, sess string) func(*Tracker, time.Time) []Event {
	return func(tr *Tracker, now time.Time) []Event { return tr.Join(now, "room", user, sess, nil) }
}

func leave(user, sess string) func(*Tracker, time.Time) []Event {
	return func(tr *Tracker, now time.Time) []Event { tr.Leave(now, "room", user, sess); return nil }
}

func state(user, s string, ttl time.Duration) func(*Tracker, time.Time) []Event {
	return func(tr *Tracker, now time.Time) []Event {
		evs, err := tr.SetState(now, "room", user, json.RawMessage(s), ttl)
		if err != nil {
			panic(err)
		}
		return evs
	}
}

func tick(*Tracker, time.Time) []Event { return nil }

func TestJoinLeaveDebounceAndState(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		steps []step
	}{
		{"join and leave", []step{
			{0, join("17", "a"), "join:17"},
			{time.Second, leave("17", "a"), ""},
			{5*time.Second + time.Second - time.Millisecond, tick, ""},
			{6 * time.Second, tick, "leave:17"},
		}},
		{"quick reconnect does not flap", []step{
			{0, join("17", "a"), "join:17"},
			{time.Second, leave("17", "a"), ""},
			{3 * time.Second, join("17", "b"), ""},
			{20 * time.Second, tick, ""},
		}},
		{"two tabs are one member", []step{
			{0, join("17", "tab1"), "join:17"},
			{0, join("17", "tab2"), ""},
			{time.Second, leave("17", "tab1"), ""},
			{10 * time.Second, tick, ""},
			{11 * time.Second, leave("17", "tab2"), ""},
			{16 * time.Second, tick, "leave:17"},
		}},
		{"leave, come back, leave again: one leave, timed from the last", []step{
			{0, join("17", "a"), "join:17"},
			{time.Second, leave("17", "a"), ""},
			{2 * time.Second, join("17", "a"), ""},
			{3 * time.Second, leave("17", "a"), ""},
			{6 * time.Second, tick, ""},
			{8 * time.Second, tick, "leave:17"},
		}},
		{"typing expires by itself", []step{
			{0, join("17", "a"), "join:17"},
			{time.Second, state("17", `{"typing":true}`, 3*time.Second), `state:17={"typing":true}`},
			{2 * time.Second, state("17", `{"typing":true}`, 3*time.Second), ""}, // refresh: no event
			{4 * time.Second, tick, ""},          // the first ttl, refreshed
			{5 * time.Second, tick, "state:17="}, // expired
		}},
		{"typing cleared", []step{
			{0, join("17", "a"), "join:17"},
			{0, state("17", `{"typing":true}`, 3*time.Second), `state:17={"typing":true}`},
			{time.Second, state("17", `null`, 0), "state:17="},
			{10 * time.Second, tick, ""},
		}},
		{"a leaving member's state goes with it", []step{
			{0, join("17", "a"), "join:17"},
			{0, state("17", `{"typing":true}`, 30*time.Second), `state:17={"typing":true}`},
			{time.Second, leave("17", "a"), ""},
			{6 * time.Second, tick, "leave:17"},
			{60 * time.Second, tick, ""},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tr := New(Options{})
			for i, s := range tc.steps {
				now := at(s.at)
				evs := append(tr.Advance(now), s.do(tr, now)...)
				if got := kinds(evs); got != s.want {
					t.Fatalf("step %d at %s: events %q, want %q", i, s.at, got, s.want)
				}
			}
		})
	}
}

func TestLeaveIsTimedFromTheLastSessionLeaving(t *testing.T) {
	t.Parallel()
	tr := New(Options{Grace: 2 * time.Second})
	tr.Join(at(0), "room", "17", "a", map[string]string{"name": "Ada"})
	tr.Leave(at(time.Second), "room", "17", "a")
	evs := tr.Advance(at(10 * time.Second))
	if len(evs) != 1 || evs[0].Kind != Left || !evs[0].At.Equal(at(time.Second)) || evs[0].Member.Attrs["name"] != "Ada" {
		t.Fatalf("events %+v", evs)
	}
	if m := tr.Members("room"); len(m) != 0 {
		t.Fatalf("members after leave %+v", m)
	}
}

func TestOnlineOfflineAcrossSessions(t *testing.T) {
	t.Parallel()
	tr := New(Options{})
	if got := kinds(tr.Connect(at(0), "17", "a")); got != "online:17" {
		t.Fatal(got)
	}
	if got := kinds(tr.Connect(at(0), "17", "b")); got != "" {
		t.Fatal(got)
	}
	tr.Disconnect(at(time.Second), "17", "a")
	if on, n := tr.User("17"); !on || n != 1 {
		t.Fatalf("online %v sessions %d", on, n)
	}
	tr.Disconnect(at(2*time.Second), "17", "b")
	tr.Connect(at(3*time.Second), "17", "c") // back within the grace
	if got := kinds(tr.Advance(at(time.Minute))); got != "" {
		t.Fatalf("flapped: %s", got)
	}
	tr.Disconnect(at(2*time.Minute), "17", "c")
	evs := tr.Advance(at(3 * time.Minute))
	if kinds(evs) != "offline:17" || !evs[0].At.Equal(at(2*time.Minute)) {
		t.Fatalf("events %+v", evs)
	}
	if on, _ := tr.User("17"); on {
		t.Fatal("still online")
	}
}

func TestStateNeedsMembershipAndBounds(t *testing.T) {
	t.Parallel()
	tr := New(Options{MaxStateBytes: 16, MaxStateTTL: 10 * time.Second})
	if _, err := tr.SetState(at(0), "room", "17", json.RawMessage(`{"typing":true}`), time.Second); !errors.Is(err, ErrNotMember) {
		t.Fatalf("non-member: %v", err)
	}
	tr.Join(at(0), "room", "17", "a", nil)
	if _, err := tr.SetState(at(0), "room", "17", json.RawMessage(`{"typing":true,"x":1}`), time.Second); !errors.Is(err, ErrStateLarge) {
		t.Fatalf("large: %v", err)
	}
	for _, ttl := range []time.Duration{0, -time.Second, time.Minute} {
		if _, err := tr.SetState(at(0), "room", "17", json.RawMessage(`1`), ttl); !errors.Is(err, ErrBadTTL) {
			t.Fatalf("ttl %s: %v", ttl, err)
		}
	}
}

func TestNextTellsWhenToAdvance(t *testing.T) {
	t.Parallel()
	tr := New(Options{Grace: 5 * time.Second})
	if _, ok := tr.Next(); ok {
		t.Fatal("empty tracker has a deadline")
	}
	tr.Join(at(0), "room", "17", "a", nil)
	tr.Leave(at(time.Second), "room", "17", "a")
	if next, ok := tr.Next(); !ok || !next.Equal(at(6*time.Second)) {
		t.Fatalf("next %v %v", next, ok)
	}
}

func TestChurnKeepsNothingBehind(t *testing.T) {
	t.Parallel()
	tr := New(Options{Grace: time.Second})
	for i := 0; i < 1000; i++ {
		user, sess := fmt.Sprint(i%50), fmt.Sprint(i)
		tr.Join(at(time.Duration(i)*time.Millisecond), fmt.Sprintf("room_%d", i%7), user, sess, nil)
		tr.Connect(at(time.Duration(i)*time.Millisecond), user, sess)
		tr.Leave(at(time.Duration(i)*time.Millisecond), fmt.Sprintf("room_%d", i%7), user, sess)
		tr.Disconnect(at(time.Duration(i)*time.Millisecond), user, sess)
	}
	tr.Advance(at(time.Hour))
	if len(tr.channels) != 0 || len(tr.users) != 0 || tr.due.Len() != 0 {
		t.Fatalf("left behind: %d channels, %d users, %d deadlines", len(tr.channels), len(tr.users), tr.due.Len())
	}
}

// TestMemoryOf10000Members measures what 10,000 members of one channel
// cost (each with one session and two attributes).
func TestMemoryOf10000Members(t *testing.T) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	tr := New(Options{})
	for i := 0; i < 10000; i++ {
		u := fmt.Sprintf("user_%d", i)
		tr.Join(t0, "big_room", u, "s_"+u, map[string]string{"name": "User " + u, "avatar": "https://cdn.example.com/a/" + u + ".png"})
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc) / 10000
	t.Logf("10,000 members in one channel: %.0f bytes each (%.1f MiB)", per, per*10000/(1<<20))
	if m, s := tr.Stats("big_room"); m != 10000 || s != 10000 {
		t.Fatalf("stats %d %d", m, s)
	}
	runtime.KeepAlive(tr)
}
