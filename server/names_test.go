package server

import (
	"strings"
	"testing"

	"github.com/heraldrt/herald/protocol"
)

func TestValidateChannel(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		channel string
		wantErr string
	}{
		{"simple", "chat_room_7", ""},
		{"every allowed char", "A-z_0.9:@=/-", ""},
		{"max length", strings.Repeat("a", 255), ""},
		{"empty", "", "empty"},
		{"too long", strings.Repeat("a", 256), "256 bytes long"},
		{"space", "chat room", `" " at position 5`},
		{"star", "news*", `"*" at position 5`},
		{"newline", "a\nb", `"\n" at position 2`},
		{"unicode", "café", `"é" at position 4`},
		{"bad utf8", "a\xffb", `byte "\xff" at position 2`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateChannel(tc.channel)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || AsError(err).Code != 400 {
				t.Fatalf("err = %v, want a 400 containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestValidateEvent(t *testing.T) {
	t.Parallel()
	cases := []struct{ in, want, wantErr string }{
		{"", protocol.DefaultEvent, ""},
		{"message_sent", "message_sent", ""},
		{"a.b:c-d_e", "a.b:c-d_e", ""},
		{strings.Repeat("e", 64), strings.Repeat("e", 64), ""},
		{strings.Repeat("e", 65), "", "65 bytes"},
		{"herald.reset", "", "reserved"},
		{"bad/event", "", `"/" at position 4`},
		{"two\nlines", "", `"\n"`},
	}
	for _, tc := range cases {
		got, err := validateEvent(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: err = %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: got %q, %v", tc.in, got, err)
		}
	}
}

func FuzzValidateChannel(f *testing.F) {
	for _, s := range []string{"chat_room_7", "", "a b", "é", strings.Repeat("x", 300)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := ValidateChannel(s)
		ok := len(s) >= 1 && len(s) <= 255
		for i := 0; i < len(s); i++ {
			ok = ok && isChannelByte(s[i])
		}
		if ok != (err == nil) {
			t.Fatalf("ValidateChannel(%q) = %v, want ok=%v", s, err, ok)
		}
		if err != nil && AsError(err).Code != 400 {
			t.Fatalf("not a 400: %v", err)
		}
	})
}
