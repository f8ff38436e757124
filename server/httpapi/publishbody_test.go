package httpapi

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/heraldrt/herald/server"
)

// The bodies clients send take the fast path.
func TestParsePublishBodyTakesTheBodiesClientsSend(t *testing.T) {
	t.Parallel()
	for _, body := range []string{
		`{"channel":"chat_room_7","event":"message_sent","data":{"text":"hi"}}`,
		`{"channel":"a","data":[1,2,{"b":null}],"idempotency_key":"order-9","ephemeral":false}`,
		"{\n  \"channel\": \"a\",\n  \"data\": {\"text\": \"hé\"},\n  \"session\": \"s_1\",\n  \"exclude_sender\": true\n}\n",
		`{"messages":[{"channel":"a","data":1},{"channel":"b","event":"e","data":"x","exclude_session":"s_2"}]}`,
		`{"messages":[]}`,
	} {
		fast, ok := parsePublishBody([]byte(body))
		if !ok {
			t.Errorf("%s: not parsed", body)
			continue
		}
		var want publishBody
		if err := decodeJSON(bytes.NewReader([]byte(body)), &want); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(fast, want) {
			t.Errorf("%s:\n fast %+v\n want %+v", body, fast, want)
		}
	}
}

// FuzzParsePublishBody holds the fast path to encoding/json: whatever it
// parses, encoding/json decodes to the same request, without error.
func FuzzParsePublishBody(f *testing.F) {
	for _, s := range []string{
		`{"channel":"a","data":{"x":[1,2]}}`,
		`{"messages":[{"channel":"a","data":1},{"channel":"b","ephemeral":true}]}`,
		`{"channel":"a","channel":"b","data":1,"data":2}`,
		`{"Channel":"a"}`,
		`{"channel":"a\u0062"}`,
		`{"messages":[{"messages":[]}]}`,
		`{"channel":"\xff"}`,
		`{"data":1} x`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fast, ok := parsePublishBody(b)
		if !ok {
			return
		}
		var want publishBody
		if err := decodeJSON(bytes.NewReader(b), &want); err != nil {
			t.Fatalf("%q: parsed, but encoding/json says %v", b, err)
		}
		if !reflect.DeepEqual(fast, want) {
			t.Fatalf("%q:\n fast %+v\n want %+v", b, fast, want)
		}
	})
}

// The hand-written answer is what encoding/json writes for the same result.
func TestPublishResultIsEncodedAsEncodingJSONWould(t *testing.T) {
	t.Parallel()
	for _, res := range []server.PublishResult{
		{Channel: "chat_room_7", Offset: 42, Epoch: "b3f1c2aa0011", ID: "m_01JDXK3V7QF9ABCDEFGHJKMNPQ"},
		{Channel: "a", Offset: 1, Epoch: "b3f1c2aa0011", ID: "m_1", Duplicate: true},
		{Channel: "typing", ID: "m_2", Ephemeral: true},
	} {
		want, err := json.Marshal(res)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendPublishResult(nil, res); !bytes.Equal(got, want) {
			t.Errorf("%s, want %s", got, want)
		}
	}
}
