package webhooks

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestRenderBodies(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 12, 5, 9, 30, 0, 123e6, time.FixedZone("CET", 3600))
	msg := Event{ID: "m_01", Type: EventMessage, Time: at, Channel: "orders_7", Name: `order "created"`,
		Data: json.RawMessage(`{"channel":"orders_7","offset":3,"data":{"total":12}}`), MessageData: json.RawMessage(`{"total":12}`)}
	join := Event{ID: "e_02", Type: EventJoin, Time: at, Channel: "chat_lobby", User: "17",
		Data: json.RawMessage(`{"user":"17","channel":"chat_lobby","transport":"ws"}`)}
	cases := []struct {
		name   string
		edit   func(*EndpointConfig)
		events []Event
		want   string
	}{
		{"one event", nil, []Event{msg},
			`{"id":"m_01","type":"message","timestamp":"2026-12-05T08:30:00.123Z","data":{"channel":"orders_7","offset":3,"data":{"total":12}}}`},
		{"a batch", func(c *EndpointConfig) { c.Batch.Size = 10 }, []Event{msg, join},
			`[{"id":"m_01","type":"message","timestamp":"2026-12-05T08:30:00.123Z","data":{"channel":"orders_7","offset":3,"data":{"total":12}}},` +
				`{"id":"e_02","type":"join","timestamp":"2026-12-05T08:30:00.123Z","data":{"user":"17","channel":"chat_lobby","transport":"ws"}}]`},
		{"the n8n payload", func(c *EndpointConfig) { c.Body = `{"event":"{event}","workflow_id":"wf_1","data":{data}}` }, []Event{msg},
			`{"event":"order \"created\"","workflow_id":"wf_1","data":{"total":12}}`},
		{"the Make payload", func(c *EndpointConfig) {
			c.Body = `{"source":"herald","channel":"{channel}","event":"{type}","data":{data},"timestamp":"{timestamp}","user":"{user}"}`
		}, []Event{join},
			`{"source":"herald","channel":"chat_lobby","event":"join","data":{"user":"17","channel":"chat_lobby","transport":"ws"},"timestamp":"2026-12-05T08:30:00.123Z","user":"17"}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ep := endpointFor(t, "https://example.com/h", func(c *EndpointConfig) {
				c.Events = EventTypes
				if tc.edit != nil {
					tc.edit(c)
				}
			})
			got, err := ep.Render(tc.events)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Fatalf("body\n %s\nwant\n %s", got, tc.want)
			}
			if !json.Valid(got) {
				t.Fatalf("body %s is not JSON", got)
			}
		})
	}
	ep := endpointFor(t, "https://example.com/h", nil)
	if _, err := ep.Render(nil); err == nil || !strings.Contains(err.Error(), "no event") {
		t.Errorf("no events: %v", err)
	}
}

func TestCompileRefusesATemplateThatIsNotJSON(t *testing.T) {
	t.Parallel()
	_, err := Config{Endpoints: []EndpointConfig{{Name: "h", URL: "https://example.com", Secret: specSecret, Events: []string{EventMessage},
		Body: `{"channel":{channel}}`}}}.Compile(env(nil))
	if err == nil || !strings.Contains(err.Error(), `webhooks[0]: body: with its placeholders filled it is not JSON`) || !strings.Contains(err.Error(), `{"channel":c}`) {
		t.Fatalf("Compile: %v", err)
	}
}

// TestBatchIDNamesItsEvents: a batch's webhook-id is the same for the same
// events and differs for other events, even with the same first event and
// length (a batch regrouped after a failure on a parallel endpoint).
func TestBatchIDNamesItsEvents(t *testing.T) {
	t.Parallel()
	evs := func(ids ...string) []Event {
		out := make([]Event, len(ids))
		for i, id := range ids {
			out[i] = Event{ID: id}
		}
		return out
	}
	a := batchID(evs("m_1", "m_2", "m_3"))
	if !strings.HasPrefix(a, "batch_") || a != batchID(evs("m_1", "m_2", "m_3")) {
		t.Fatalf("batchID %q: want batch_… and the same for the same events", a)
	}
	for _, other := range [][]Event{evs("m_1", "m_5", "m_9"), evs("m_1", "m_3", "m_2"), evs("m_1", "m_2"), evs("m_1", "m_2", "m_3", "m_4")} {
		if b := batchID(other); b == a {
			t.Fatalf("events %v have the id of [m_1 m_2 m_3]: %s", other, b)
		}
	}
}
