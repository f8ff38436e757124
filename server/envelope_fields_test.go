package server

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/heraldrt/herald/protocol"
)

func TestParseStoredReadsWhatEncodePayloadWrote(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 12, 5, 9, 30, 0, 0, time.UTC)
	cases := []struct {
		name    string
		data    string
		from    *protocol.Sender
		exclude string
	}{
		{"object", `{"text":"hi, \"from\":{}","n":[1,2]}`, nil, ""},
		{"string with a quote", `"say \"time\""`, &protocol.Sender{User: "17", Session: "s_1"}, ""},
		{"number, excluding a session", `42`, &protocol.Sender{User: "ada"}, "s_2"},
		{"null", `null`, nil, "s_3"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, err := encodePayload("m_01ABC", "message_sent", json.RawMessage(tc.data), at, tc.from, tc.exclude)
			if err != nil {
				t.Fatal(err)
			}
			f, err := ParseStored(p)
			if err != nil {
				t.Fatal(err)
			}
			if f.ID != "m_01ABC" || f.Event != "message_sent" || string(f.Data) != tc.data {
				t.Fatalf("parsed %+v", f)
			}
			if (f.From == nil) != (tc.from == nil) || (f.From != nil && *f.From != *tc.from) {
				t.Fatalf("from %+v, want %+v", f.From, tc.from)
			}
		})
	}
	for _, bad := range [][]byte{nil, {payloadV1, 3, 'a', 'b', 'c'}, append([]byte{payloadV1, 1, 'e'}, `"id":"x","event":"f","data":1}`...)} {
		if _, err := ParseStored(bad); err == nil {
			t.Errorf("ParseStored(%q) accepted it", bad)
		}
	}
}
