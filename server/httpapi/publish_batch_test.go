package httpapi

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/heraldrt/herald/protocol"
	"github.com/heraldrt/herald/server"
)

// history returns the data of every stored message of channel.
func history(t *testing.T, f *apiFixture, channel string) []string {
	t.Helper()
	var page server.HistoryPage
	f.call(t, "GET", "/api/history?channel="+channel, testAPIKey, "", &page)
	var out []string
	for _, m := range page.Messages {
		var env struct {
			Offset uint64          `json:"offset"`
			Data   json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(m, &env); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%d:%s", env.Offset, env.Data))
	}
	return out
}

func TestBatchPublishAnswersEachMessageInOrder(t *testing.T) {
	t.Parallel()
	f := newAPI(t, server.Config{Rules: []server.RuleConfig{
		{Pattern: "open_*", Publish: []string{"authenticated"}, Subscribe: []string{"authenticated"}},
		{Pattern: "slow", Publish: []string{"authenticated"}, RateLimit: &server.RateLimitConfig{Limit: 1, Window: time.Hour}},
	}})
	user, _ := server.MintToken(testSecret, server.Claims{RegisteredClaims: registered("17")})
	body := `{"messages":[
		{"channel":"open_a","data":1},
		{"channel":"open_b","event":"e","data":{"n":2}},
		{"channel":"open_a","data":3,"idempotency_key":"k"},
		{"channel":"bad#","data":4},
		{"channel":"closed","data":5},
		{"channel":"open_a","data":6,"idempotency_key":"k"},
		{"channel":"slow","data":7},
		{"channel":"slow","data":8},
		{"channel":"open_b","data":9,"ephemeral":true},
		{"channel":"open_a","data":10}
	]}`
	var resp protocol.BatchPublishResponse
	code, _, raw := f.call(t, "POST", "/api/publish", user, body, &resp)
	if code != 200 || len(resp.Results) != 10 {
		t.Fatalf("%d %s", code, raw)
	}
	type want struct {
		offset    uint64
		duplicate bool
		ephemeral bool
		code      int
		message   string
	}
	wants := []want{
		{offset: 1}, {offset: 1}, {offset: 2}, {code: 400, message: `"#" at position 4`},
		{code: 403, message: `not allowed to publish to channel "closed"`}, {offset: 2, duplicate: true},
		{offset: 1}, {code: 429, message: `publishing to channel "slow" is limited to 1 per`}, {ephemeral: true}, {offset: 3},
	}
	for i, w := range wants {
		r := resp.Results[i]
		if w.code != 0 {
			if r.Error == nil || r.Error.Code != w.code || !strings.Contains(r.Error.Message, w.message) || r.Offset != 0 || r.ID != "" {
				t.Errorf("message %d: %+v, want error %d containing %q", i, r, w.code, w.message)
			}
			if w.code == 429 && r.Error.RetryAfter == 0 {
				t.Errorf("message %d: a 429 without retry_after", i)
			}
			continue
		}
		if r.Error != nil || r.Offset != w.offset || r.Duplicate != w.duplicate || r.Ephemeral != w.ephemeral || !strings.HasPrefix(r.ID, "m_") {
			t.Errorf("message %d: %+v, want offset %d duplicate %v ephemeral %v", i, r, w.offset, w.duplicate, w.ephemeral)
		}
	}
	if resp.Failed != 3 {
		t.Errorf("failed %d, want 3", resp.Failed)
	}
	if resp.Results[5].ID != resp.Results[2].ID {
		t.Errorf("the repeated idempotency key answered id %s, the first was %s", resp.Results[5].ID, resp.Results[2].ID)
	}
	for ch, stored := range map[string][]string{"open_a": {"1:1", "2:3", "3:10"}, "open_b": {`1:{"n":2}`}, "slow": {"1:7"}} {
		if got := history(t, f, ch); fmt.Sprint(got) != fmt.Sprint(stored) {
			t.Errorf("channel %s stores %v, want %v", ch, got, stored)
		}
	}
}

func TestBatchPublishRefusesABadRequestAsAWhole(t *testing.T) {
	t.Parallel()
	f := newAPI(t, server.Config{Limits: server.Limits{MaxBatchMessages: 3, MaxBodyBytes: 2000, MaxDataBytes: 1000}})
	cases := []struct {
		name, body string
		code       int
		msg        string
	}{
		{"no message", `{"messages":[]}`, 400, "messages is empty"},
		{"too many", `{"messages":[{"channel":"a"},{"channel":"a"},{"channel":"a"},{"channel":"a"}]}`, 413, "4 messages in one request, the limit is 3 (limits.max_batch_messages)"},
		{"both forms", `{"channel":"a","data":1,"messages":[{"channel":"a"}]}`, 400, `"messages" and the fields of one message`},
		{"not a list", `{"messages":{"channel":"a"}}`, 400, `"messages"`},
		{"unknown field in a message", `{"messages":[{"channel":"a","colour":"red"}]}`, 400, "colour"},
		{"body too large", `{"messages":[{"channel":"a","data":"` + strings.Repeat("x", 3000) + `"}]}`, 413, "2000 byte limit"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var e apiError
			code, _, raw := f.call(t, "POST", "/api/publish", testAPIKey, tc.body, &e)
			if code != tc.code || e.Error.Code != tc.code || !strings.Contains(e.Error.Message, tc.msg) {
				t.Fatalf("got %d %s, want %d containing %q", code, raw, tc.code, tc.msg)
			}
		})
	}
	if got := history(t, f, "a"); len(got) != 0 {
		t.Fatalf("refused batches stored %v", got)
	}
}

// A batch's stored messages reach a subscriber as one run per channel, in
// order, right after each other.
func TestBatchPublishIsDeliveredInOrder(t *testing.T) {
	t.Parallel()
	f := newAPI(t, server.Config{})
	sess := openSession(t, f.srv, []string{"feed"})
	defer sess.Close(server.ReasonClientGone)
	var msgs []string
	for i := range 50 {
		msgs = append(msgs, fmt.Sprintf(`{"channel":"feed","data":%d}`, i))
	}
	var resp protocol.BatchPublishResponse
	if code, _, raw := f.call(t, "POST", "/api/publish", testAPIKey, `{"messages":[`+strings.Join(msgs, ",")+`]}`, &resp); code != 200 || resp.Failed != 0 {
		t.Fatalf("%d %s", code, raw)
	}
	var got []uint64
	deadline := time.After(10 * time.Second)
	for len(got) < 50 {
		select {
		case <-sess.Ready():
		case <-deadline:
			t.Fatalf("received %d of 50 messages", len(got))
		}
		for _, it := range sess.Drain(nil) {
			if it.Kind == server.KindMessage {
				got = append(got, it.Msg.Offset)
			}
		}
	}
	assertRange(t, got, 1, 50)
}
