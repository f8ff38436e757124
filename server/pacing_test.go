package server

import (
	"context"
	"testing"
	"time"
)

func TestPacingIsDueAtTheHoldOrTheSize(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	batch := Pacing{Hold: 100 * time.Millisecond, Size: 5}
	coalesce := Pacing{Hold: 5 * time.Millisecond}
	cases := []struct {
		name   string
		p      Pacing
		from   time.Time
		ready  int
		now    time.Time
		due    bool
		waited time.Duration
	}{
		{"just written: hold", batch, t0, 1, t0, false, 100 * time.Millisecond},
		{"within the hold", batch, t0, 4, t0.Add(40 * time.Millisecond), false, 60 * time.Millisecond},
		{"size reached", batch, t0, 5, t0.Add(time.Millisecond), true, 0},
		{"hold over", batch, t0, 1, t0.Add(100 * time.Millisecond), true, 0},
		{"after a quiet spell", batch, time.Time{}, 1, t0, true, 0},
		{"coalescing, no size", coalesce, t0, 1000, t0.Add(time.Millisecond), false, 4 * time.Millisecond},
		{"coalescing over", coalesce, t0, 1, t0.Add(5 * time.Millisecond), true, 0},
		{"no hold", Pacing{}, t0, 0, t0, true, 0},
	}
	for _, tc := range cases {
		due, wait := tc.p.Due(tc.from, tc.ready, tc.now)
		if due != tc.due || wait != tc.waited {
			t.Errorf("%s: due %v, wait %s; want %v, %s", tc.name, due, wait, tc.due, tc.waited)
		}
	}
}

func TestPacingFollowsTheBatchRulesOfEveryChannel(t *testing.T) {
	t.Parallel()
	srv, _ := newTestServer(t, Config{Rules: []RuleConfig{
		{Pattern: "fast_*", Subscribe: []string{"everyone"}, Batch: &BatchConfig{Size: 10, Timeout: 50 * time.Millisecond}},
		{Pattern: "slow_*", Subscribe: []string{"everyone"}, Batch: &BatchConfig{Size: 4, Timeout: time.Second}},
		{Pattern: "plain_*", Subscribe: []string{"everyone"}},
	}})
	const fallback = 5 * time.Millisecond
	cases := []struct {
		channels []string
		want     Pacing
	}{
		{[]string{"fast_1"}, Pacing{Hold: 50 * time.Millisecond, Size: 10}},
		{[]string{"slow_1"}, Pacing{Hold: time.Second, Size: 4}},
		// The smallest hold and the smallest size of them all.
		{[]string{"fast_1", "slow_1"}, Pacing{Hold: 50 * time.Millisecond, Size: 4}},
		// A channel without a batch rule wants its messages now.
		{[]string{"fast_1", "plain_1"}, Pacing{Hold: fallback}},
		{[]string{"plain_1"}, Pacing{Hold: fallback}},
	}
	for _, tc := range cases {
		sess, _, err := srv.Transport("test").Open(context.Background(), Identity{Anonymous: true}, OpenRequest{Channels: tc.channels})
		if err != nil {
			t.Fatal(err)
		}
		if got := sess.Pacing(fallback); got != tc.want {
			t.Errorf("%v: %+v, want %+v", tc.channels, got, tc.want)
		}
		sess.Close(ReasonClientGone)
	}
}
