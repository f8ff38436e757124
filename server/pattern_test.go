package server

import "testing"

func TestChannelPatternMatchesAsRulesDo(t *testing.T) {
	t.Parallel()
	cases := []struct {
		pattern, channel string
		want             bool
	}{
		{"chat_{room}", "chat_lobby", true},
		{"chat_{room}", "news_lobby", false},
		{"notifications_*", "notifications_42", true},
		{"orders", "orders", true},
		{"orders", "orders_1", false},
	}
	for _, tc := range cases {
		p, err := CompileChannelPattern(tc.pattern)
		if err != nil {
			t.Fatalf("%q: %v", tc.pattern, err)
		}
		if got := p.Match(tc.channel); got != tc.want {
			t.Errorf("%q matching %q: %v, want %v", tc.pattern, tc.channel, got, tc.want)
		}
		if p.String() != tc.pattern {
			t.Errorf("String() %q, want %q", p.String(), tc.pattern)
		}
	}
	if _, err := CompileChannelPattern("chat_{"); err == nil {
		t.Error(`"chat_{" compiled`)
	}
	if (ChannelPattern{}).Match("anything") {
		t.Error("the zero pattern matched")
	}
}
