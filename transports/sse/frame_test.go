package sse

import (
	"bufio"
	"bytes"
	"strings"
	"testing"

	"github.com/heraldrt/herald/server"
)

// parseEvents is a minimal SSE parser after the WHATWG rules: it returns
// every dispatched event.
func parseEvents(t testing.TB, raw []byte) []event {
	t.Helper()
	sc := bufio.NewScanner(bytes.NewReader(raw))
	var out []event
	var cur event
	var data []string
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			if data != nil {
				cur.data = strings.Join(data, "\n")
				out = append(out, cur)
			}
			cur, data = event{}, nil
			continue
		}
		if strings.HasPrefix(line, ":") {
			cur.comments++
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "event":
			cur.name = value
		case "data":
			data = append(data, value)
		case "id":
			cur.id = value
		}
	}
	return out
}

func TestEventFramingKeepsEveryPayloadInOneEvent(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		data string
		want string // what a client reassembles
	}{
		{"plain json", `{"a":1}`, `{"a":1}`},
		{"lf", "a\nb", "a\nb"},
		{"crlf", "a\r\nb", "a\nb"},
		{"cr", "a\rb", "a\nb"},
		{"blank line inside", "a\n\nevent: evil\nid: 9\n\nb", "a\n\nevent: evil\nid: 9\n\nb"},
		{"trailing newline", "a\n", "a\n"},
		{"empty", "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw := appendEvent(nil, "message", []byte(tc.data), "CUR")
			raw = appendEvent(raw, "next", []byte("x"), "CUR2")
			evs := parseEvents(t, raw)
			if len(evs) != 2 {
				t.Fatalf("got %d events from %q, want 2", len(evs), raw)
			}
			if evs[0].name != "message" || evs[0].data != tc.want || evs[0].id != "CUR" {
				t.Fatalf("event = %+v, want data %q id CUR", evs[0], tc.want)
			}
			if evs[1].name != "next" || evs[1].id != "CUR2" {
				t.Fatalf("second event = %+v", evs[1])
			}
		})
	}
}

func TestFieldOrderPutsIDLast(t *testing.T) {
	t.Parallel()
	got := string(appendEvent(nil, "message", []byte(`{"x":1}`), "abc"))
	if want := "event: message\ndata: {\"x\":1}\nid: abc\n\n"; got != want {
		t.Fatalf("frame %q, want %q", got, want)
	}
	if got := string(appendEvent(nil, "e\r\nvil", []byte("d"), "i\nd")); got != "event: evil\ndata: d\nid: id\n\n" {
		t.Fatalf("line breaks in event or id not dropped: %q", got)
	}
}

func FuzzEventFraming(f *testing.F) {
	f.Add([]byte("a\nb"), "message")
	f.Add([]byte("\r\r\n\n"), "x")
	f.Fuzz(func(t *testing.T, data []byte, name string) {
		raw := appendEvent(nil, name, data, "ID")
		evs := parseEvents(t, raw)
		if len(evs) != 1 {
			t.Fatalf("%q framed as %d events", data, len(evs))
		}
		norm := strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace(string(data))
		if evs[0].data != norm || evs[0].id != "ID" {
			t.Fatalf("data %q came back as %q (id %q)", norm, evs[0].data, evs[0].id)
		}
	})
}

// TestCachedEventHeadFramesLikeAppendEvent: a message's event head is
// encoded once, cached in the message by the transport's frame slot, and
// frames every delivery exactly as appendEvent does.
func TestCachedEventHeadFramesLikeAppendEvent(t *testing.T) {
	t.Parallel()
	f := newFixture(t, server.Config{}, Options{})
	sse := f.srv.Transport("sse")
	built := 0
	head := func(m *server.Message) []byte {
		return sse.Frame(m, func(m *server.Message) []byte { built++; return eventHead(m) })
	}
	m := &server.Message{Channel: "a", Offset: 1, Event: "message_sent", Raw: []byte(`{"channel":"a","offset":1}`)}
	for _, cursor := range []string{"CUR", ""} {
		items := []server.Item{{Kind: server.KindMessage, Msg: m, Cursor: cursor}, {Kind: server.KindMessage, Msg: m, Cursor: cursor}}
		got := string(appendItems(nil, items, head))
		one := string(appendEvent(nil, m.Event, m.Raw, cursor))
		if got != one+one {
			t.Fatalf("cursor %q: cached framing %q, want %q", cursor, got, one+one)
		}
	}
	if built != 1 {
		t.Fatalf("the event head was built %d times for four deliveries, want once", built)
	}
}
