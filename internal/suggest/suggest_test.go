package suggest

import "testing"

func TestDistance(t *testing.T) {
	t.Parallel()
	cases := []struct {
		a, b string
		want int
	}{
		{"", "", 0},
		{"", "abc", 3},
		{"abc", "", 3},
		{"history", "history", 0},
		{"histroy", "history", 1}, // a transposition is one edit
		{"subscirbe", "subscribe", 1},
		{"everone", "everyone", 1},
		{"usr", "user", 1},
		{"admn", "admin", 1},
		{"kitten", "sitting", 3},
		{"ws", "sse", 2},
	}
	for _, tc := range cases {
		if got := Distance(tc.a, tc.b); got != tc.want {
			t.Errorf("Distance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
		if got := Distance(tc.b, tc.a); got != tc.want {
			t.Errorf("Distance(%q, %q) = %d, want %d (symmetric)", tc.b, tc.a, got, tc.want)
		}
	}
}

func TestClosest(t *testing.T) {
	t.Parallel()
	keys := []string{"addr", "data_dir", "history", "heartbeat", "max_subscribers", "presence", "ttl"}
	cases := []struct {
		word string
		want string // "" when nothing is close
	}{
		{"histroy", "history"},
		{"Addr", "addr"},
		{"adr", "addr"},
		{"presense", "presence"},
		{"heartbeat_interval", "heartbeat"}, // the key with something appended
		{"max_sub", "max_subscribers"},      // an abbreviation
		{"tt", "ttl"},
		{"frobnicate", ""},
		{"history", ""}, // the word itself is no suggestion
		{"hi", ""},      // too short to be an abbreviation of anything
	}
	for _, tc := range cases {
		got, ok := Closest(tc.word, keys)
		if ok != (tc.want != "") || got != tc.want {
			t.Errorf("Closest(%q) = %q, %v; want %q", tc.word, got, ok, tc.want)
		}
	}
	// The nearest wins over an earlier, farther candidate.
	if got, _ := Closest("grnt", []string{"grunt_x", "grant"}); got != "grant" {
		t.Errorf("Closest(grnt) = %q, want grant", got)
	}
}
