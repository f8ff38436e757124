package sse

import (
	"strconv"

	"github.com/heraldrt/herald/server"
)

// appendEvent appends one SSE event in the order event:, data:, id:, blank
// line. The id: comes last so that a client that dispatches a half-read
// event never records a cursor for data it did not get.
//
// data is split at every line ending (CR, LF or CRLF) into several data:
// lines, which the client joins back with LF: a payload can never end an
// event early or inject fields. The core sends JSON on one line, so this
// is a safety net, not the common path. event and id come from the core's
// checked alphabets; CR and LF are dropped from them all the same.
func appendEvent(b []byte, event string, data []byte, id string) []byte {
	if event != "" {
		b = append(b, "event: "...)
		b = appendField(b, event)
		b = append(b, '\n')
	}
	for {
		i := indexLineEnd(data)
		b = append(b, "data: "...)
		if i < 0 {
			b = append(b, data...)
			b = append(b, '\n')
			break
		}
		b = append(b, data[:i]...)
		b = append(b, '\n')
		if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
			i++
		}
		data = data[i+1:]
	}
	if id != "" {
		b = append(b, "id: "...)
		b = appendField(b, id)
		b = append(b, '\n')
	}
	return append(b, '\n')
}

// eventHead is the part of a message's SSE event that every subscriber
// shares: event: and data: lines, without the id: line and the blank line
// that end it. It is built once per message (server.Transport.Frame).
func eventHead(m *server.Message) []byte {
	ev := appendEvent(make([]byte, 0, len(m.Raw)+len(m.Event)+32), m.Event, m.Raw, "")
	return ev[:len(ev)-1] // drop the blank line; appendEvent ends with it
}

// appendComment appends a comment line and a blank line; clients ignore
// it, proxies see traffic.
func appendComment(b []byte, text string) []byte {
	b = append(b, ':')
	if text != "" {
		b = append(b, ' ')
		b = appendField(b, text)
	}
	return append(b, '\n', '\n')
}

// appendRetry sets the client's reconnection delay.
func appendRetry(b []byte, ms int64) []byte {
	b = append(b, "retry: "...)
	b = strconv.AppendInt(b, max(ms, 0), 10)
	return append(b, '\n', '\n')
}

func appendField(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c != '\r' && c != '\n' && c != 0 {
			b = append(b, c)
		}
	}
	return b
}

func indexLineEnd(b []byte) int {
	for i, c := range b {
		if c == '\n' || c == '\r' {
			return i
		}
	}
	return -1
}
