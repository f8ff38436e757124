package httpapi

import (
	"encoding/json"
	"unicode/utf8"

	"github.com/heraldrt/herald/server"
)

// parsePublishBody decodes a POST /api/publish body the way clients write
// it — the known fields in their own spelling, strings without escapes —
// in one pass, with the data's JSON checked by server.ScanJSONValue. It
// reports false for anything else (an escape, another spelling of a key,
// an unknown field, an error), and the caller then decodes the body with
// encoding/json, whose result or error is the answer: so the fast path
// changes no answer (FuzzParsePublishBody checks it). encoding/json costs
// several microseconds of a publish's CPU; this takes a fraction of it.
func parsePublishBody(b []byte) (publishBody, bool) {
	p := bodyParser{b: b}
	var body publishBody
	p.ws()
	if !p.object(&body.PublishRequest, &body.Messages) {
		return publishBody{}, false
	}
	p.ws()
	return body, p.i == len(p.b)
}

type bodyParser struct {
	b []byte
	i int
}

func (p *bodyParser) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *bodyParser) peek(c byte) bool { return p.i < len(p.b) && p.b[p.i] == c }

// object parses one message's object into m; messages, when not nil,
// accepts the batch's "messages" key (the top level only).
func (p *bodyParser) object(m *server.PublishRequest, messages *[]server.PublishRequest) bool {
	if !p.peek('{') {
		return false
	}
	p.i++
	p.ws()
	if p.peek('}') {
		p.i++
		return true
	}
	for {
		key, ok := p.str()
		if !ok {
			return false
		}
		p.ws()
		if !p.peek(':') {
			return false
		}
		p.i++
		p.ws()
		switch key {
		case "channel":
			m.Channel, ok = p.str()
		case "event":
			m.Event, ok = p.str()
		case "idempotency_key":
			m.IdempotencyKey, ok = p.str()
		case "exclude_session":
			m.ExcludeSession, ok = p.str()
		case "session":
			m.Session, ok = p.str()
		case "ephemeral":
			m.Ephemeral, ok = p.boolean()
		case "exclude_sender":
			m.ExcludeSender, ok = p.boolean()
		case "data":
			var n int
			n, _, ok = server.ScanJSONValue(p.b[p.i:])
			if ok {
				m.Data = json.RawMessage(p.b[p.i : p.i+n : p.i+n])
				p.i += n
			}
		case "messages":
			ok = messages != nil && p.list(messages)
		default:
			return false
		}
		if !ok {
			return false
		}
		p.ws()
		switch {
		case p.peek(','):
			p.i++
			p.ws()
		case p.peek('}'):
			p.i++
			return true
		default:
			return false
		}
	}
}

// list parses the batch's array of messages.
func (p *bodyParser) list(out *[]server.PublishRequest) bool {
	if !p.peek('[') {
		return false
	}
	p.i++
	p.ws()
	list := make([]server.PublishRequest, 0, 16)
	if p.peek(']') {
		p.i++
		*out = list
		return true
	}
	for {
		var m server.PublishRequest
		if !p.object(&m, nil) {
			return false
		}
		list = append(list, m)
		p.ws()
		switch {
		case p.peek(','):
			p.i++
			p.ws()
		case p.peek(']'):
			p.i++
			*out = list
			return true
		default:
			return false
		}
	}
}

// str parses a string without escapes or control characters, in UTF-8.
func (p *bodyParser) str() (string, bool) {
	if !p.peek('"') {
		return "", false
	}
	start := p.i + 1
	ascii := true
	for i := start; i < len(p.b); i++ {
		switch c := p.b[i]; {
		case c == '"':
			if !ascii && !utf8.Valid(p.b[start:i]) {
				return "", false // encoding/json replaces bad bytes with U+FFFD
			}
			p.i = i + 1
			return string(p.b[start:i]), true
		case c == '\\' || c < 0x20:
			return "", false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return "", false
}

func (p *bodyParser) boolean() (bool, bool) {
	switch {
	case len(p.b)-p.i >= 4 && string(p.b[p.i:p.i+4]) == "true":
		p.i += 4
		return true, true
	case len(p.b)-p.i >= 5 && string(p.b[p.i:p.i+5]) == "false":
		p.i += 5
		return false, true
	}
	return false, false
}
