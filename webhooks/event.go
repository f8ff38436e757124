package webhooks

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Event is one thing an endpoint is told about.
type Event struct {
	// ID is the event's stable id, the webhook-id a receiver dedupes on:
	// a message's id for a message, one given when queued otherwise.
	ID string
	// Type is one of EventTypes.
	Type string
	// Time is when it happened: a message's commit, a life event's moment.
	Time time.Time
	// Channel, Name (a message's event name), User and Session say where
	// and who, when they apply.
	Channel, Name, User, Session string
	// Data is the event's JSON: for a message, its envelope as subscribers
	// get it; for a life event, who, where, on which transport, and why.
	Data json.RawMessage
	// MessageData is a message's own data (its envelope's data field),
	// what a body template's {data} gives for a message.
	MessageData json.RawMessage
}

// timestampFormat writes {timestamp} and the default body's timestamp:
// RFC 3339 in UTC with milliseconds, what no-code tools parse as a date.
const timestampFormat = "2006-01-02T15:04:05.000Z07:00"

// wire is the default body of one event.
type wire struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	Timestamp string          `json:"timestamp"`
	Data      json.RawMessage `json:"data"`
}

// Render returns the request body for events: with no template, the event
// as {"id","type","timestamp","data"} (Standard Webhooks' payload, with
// the event's id so that a receiver of a batch dedupes each event), or a JSON list of them for a batch;
// with the endpoint's template, the template with each placeholder
// replaced (a list of those for a batch). {data} is JSON as it is: a
// message's own data for a message, the event's data otherwise; the other placeholders are text escaped for use inside a JSON
// string, so a template writes them in quotes: "channel":"{channel}".
func (e *Endpoint) Render(events []Event) ([]byte, error) {
	if len(events) == 0 {
		return nil, fmt.Errorf("webhooks: %s: no event to send", e.Name)
	}
	one := func(ev Event) ([]byte, error) {
		if e.EndpointConfig.Body == "" {
			return appendWire(nil, ev), nil
		}
		return []byte(render(e.EndpointConfig.Body, ev)), nil
	}
	if len(events) == 1 && e.Batch.Size == 1 {
		return one(events[0])
	}
	var b strings.Builder
	b.WriteByte('[')
	for i, ev := range events {
		if i > 0 {
			b.WriteByte(',')
		}
		body, err := one(ev)
		if err != nil {
			return nil, err
		}
		b.Write(body)
	}
	b.WriteByte(']')
	return []byte(b.String()), nil
}

// appendWire appends ev's default body, {"id","type","timestamp","data"},
// as json.Marshal of a wire would write it (Data is JSON already).
func appendWire(b []byte, ev Event) []byte {
	b = append(b, `{"id":`...)
	b = appendJSONString(b, ev.ID)
	b = append(b, `,"type":`...)
	b = appendJSONString(b, ev.Type)
	b = append(b, `,"timestamp":"`...)
	b = ev.Time.UTC().AppendFormat(b, timestampFormat)
	b = append(b, `","data":`...)
	b = append(b, dataOrNull(ev.Data)...)
	return append(b, '}')
}

// appendJSONString appends s as a JSON string: as it is when it needs no
// escaping (ids and types, always), through encoding/json otherwise.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x7f || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always marshals
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

func dataOrNull(d json.RawMessage) json.RawMessage {
	if len(d) == 0 {
		return json.RawMessage("null")
	}
	return d
}

// render fills a template's placeholders from ev.
func render(tmpl string, ev Event) string {
	return placeholderRE.ReplaceAllStringFunc(tmpl, func(m string) string {
		switch m[1 : len(m)-1] {
		case "data":
			if ev.Type == EventMessage {
				return string(dataOrNull(ev.MessageData))
			}
			return string(dataOrNull(ev.Data))
		case "type":
			return jsonText(ev.Type)
		case "channel":
			return jsonText(ev.Channel)
		case "event":
			return jsonText(ev.Name)
		case "id":
			return jsonText(ev.ID)
		case "timestamp":
			return ev.Time.UTC().Format(timestampFormat)
		case "user":
			return jsonText(ev.User)
		case "session":
			return jsonText(ev.Session)
		}
		return m // Compile refuses unknown placeholders
	})
}

// jsonText escapes s for use between the quotes of a JSON string.
func jsonText(s string) string {
	b, _ := json.Marshal(s) // a string always marshals
	return string(b[1 : len(b)-1])
}
