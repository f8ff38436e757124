package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/heraldrt/herald/server"
)

// streamEvent is one SSE event as the tracker sees it.
type streamEvent struct {
	name  string // the event: field ("" when absent)
	data  []byte
	id    string
	hasID bool // the event carried its own id: line
}

type verdict int

const (
	verdictIgnore     verdict = iota // nothing to print (retry:, empty events)
	verdictPrint                     // print line
	verdictDuplicate                 // a message already printed, replayed: drop it
	verdictConnected                 // herald.connected: the stream is good
	verdictDisconnect                // herald.disconnect: the server ends the stream
	verdictBroken                    // protocol violation: abandon, resume from our cursor
)

// outcome is the tracker's judgement of one event.
type outcome struct {
	verdict   verdict
	line      []byte // verdictPrint
	err       error  // verdictBroken, verdictDisconnect: why the stream ends
	reconnect bool   // verdictDisconnect
	note      string // for --verbose
}

// chanPos is the subscriber's position on one channel: the last offset
// printed and the epoch it belongs to.
type chanPos struct {
	epoch  string
	offset uint64
	known  bool
	// opaque: the position is inside a cursor we cannot read (--cursor);
	// the channel's first message sets it.
	opaque bool
}

// tracker holds the subscriber's own resume state — the cursor of the last
// event it accepted and each channel's position — and judges each event
// against it.
type tracker struct {
	channels []string
	since    []string // sent until there is a cursor
	epochs   []string
	pos      map[string]*chanPos
	cursor   string
	session  string
}

func newTracker(opts subscribeOptions) *tracker {
	t := &tracker{
		channels: opts.channels,
		since:    opts.since,
		epochs:   opts.epochs,
		pos:      make(map[string]*chanPos, len(opts.channels)),
		cursor:   opts.cursor,
	}
	for i, ch := range opts.channels {
		p := &chanPos{opaque: opts.cursor != ""}
		if i < len(opts.since) && opts.since[i] != "" {
			n, err := strconv.ParseUint(opts.since[i], 10, 64)
			if err == nil {
				p.known, p.offset = true, n
				if i < len(opts.epochs) {
					p.epoch = opts.epochs[i]
				}
			}
		}
		t.pos[ch] = p
	}
	return t
}

// streamURL is the stream's URL: its channels, and the --since positions
// until the tracker holds a cursor (which then goes as Last-Event-ID).
func (t *tracker) streamURL(base *url.URL) string {
	u := apiEndpoint(base, "sse")
	q := url.Values{"channel": t.channels}
	if t.cursor == "" && len(t.since) > 0 {
		q["since"] = t.since
		if len(t.epochs) > 0 {
			q["epoch"] = t.epochs
		}
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// envelopeHead is what the tracker reads of a message envelope.
type envelopeHead struct {
	Channel string          `json:"channel"`
	Offset  uint64          `json:"offset"`
	Epoch   string          `json:"epoch"`
	Event   string          `json:"event"`
	Data    json.RawMessage `json:"data"`
}

// handle judges one event and moves the tracker's state when it is
// accepted.
func (t *tracker) handle(ev streamEvent) outcome {
	switch ev.name {
	case server.EventConnected:
		return t.connected(ev)
	case server.EventDisconnect:
		var d struct {
			Reason    string `json:"reason"`
			Reconnect bool   `json:"reconnect"`
		}
		if err := json.Unmarshal(ev.data, &d); err != nil {
			return outcome{verdict: verdictDisconnect, reconnect: true, err: errStreamEnded,
				note: "herald.disconnect with unreadable data"}
		}
		o := outcome{verdict: verdictDisconnect, reconnect: d.Reconnect,
			note: fmt.Sprintf("disconnected by the server: %s (reconnect: %t)", d.Reason, d.Reconnect)}
		if d.Reconnect {
			o.err = fmt.Errorf("the server closed the stream: %s", d.Reason)
		} else {
			o.err = fmt.Errorf("the server closed the stream for good: %s", d.Reason)
		}
		return o
	}
	if len(ev.data) == 0 {
		return outcome{verdict: verdictIgnore} // retry:, or an event without data
	}
	var env envelopeHead
	if err := json.Unmarshal(ev.data, &env); err != nil {
		return brokenOutcome("event %q: data is not a JSON envelope: %v", ev.name, err)
	}
	p := t.pos[env.Channel]
	if p == nil {
		return outcome{verdict: verdictIgnore, note: fmt.Sprintf("ignored a message for channel %q, which this stream did not ask for", env.Channel)}
	}
	line := oneLine(ev.data)
	if env.Event == server.EventReset || ev.name == server.EventReset {
		var d struct {
			ResumeAfter *uint64 `json:"resume_after"`
			Epoch       string  `json:"epoch"`
			Reason      string  `json:"reason"`
		}
		if err := json.Unmarshal(env.Data, &d); err != nil || d.ResumeAfter == nil {
			return brokenOutcome("herald.reset for %q without resume_after", env.Channel)
		}
		epoch := env.Epoch
		if epoch == "" {
			epoch = d.Epoch
		}
		*p = chanPos{epoch: epoch, offset: *d.ResumeAfter, known: true}
		t.take(ev)
		return outcome{verdict: verdictPrint, line: line,
			note: fmt.Sprintf("reset on %s (%s): resuming after %s", env.Channel, d.Reason, posString(epoch, *d.ResumeAfter))}
	}
	if env.Offset == 0 {
		return outcome{verdict: verdictPrint, line: line} // ephemeral: live only, no position
	}
	switch {
	case !p.known:
		// First message of a channel whose position we cannot know.
	case p.epoch != "" && env.Epoch != p.epoch:
		return brokenOutcome("channel %q: a message of epoch %q while at epoch %q, without herald.reset", env.Channel, env.Epoch, p.epoch)
	case env.Offset <= p.offset:
		return outcome{verdict: verdictDuplicate,
			note: fmt.Sprintf("dropped a replayed message %s on %s (at %d)", posString(env.Epoch, env.Offset), env.Channel, p.offset)}
	case env.Offset != p.offset+1:
		return brokenOutcome("channel %q: gap, expected offset %d, got %d", env.Channel, p.offset+1, env.Offset)
	}
	*p = chanPos{epoch: env.Epoch, offset: env.Offset, known: true}
	t.take(ev)
	return outcome{verdict: verdictPrint, line: line}
}

// connected handles herald.connected: it fixes the start of channels that
// begin at the head and takes the cursor at connect, so a reconnect before
// any message resumes from the right place.
func (t *tracker) connected(ev streamEvent) outcome {
	var info struct {
		Session  string `json:"session"`
		Channels []struct {
			Channel string `json:"channel"`
			Epoch   string `json:"epoch"`
			Offset  uint64 `json:"offset"`
		} `json:"channels"`
	}
	if err := json.Unmarshal(ev.data, &info); err != nil {
		return brokenOutcome("herald.connected: data is not valid: %v", err)
	}
	t.session = info.Session
	var heads []string
	for _, c := range info.Channels {
		heads = append(heads, c.Channel+"@"+posString(c.Epoch, c.Offset))
		p := t.pos[c.Channel]
		switch {
		case p == nil:
		case !p.known && !p.opaque:
			*p = chanPos{epoch: c.Epoch, offset: c.Offset, known: true}
		case p.known && p.epoch == "":
			p.epoch = c.Epoch // --since without --epoch counts in the current epoch
		}
	}
	t.take(ev)
	return outcome{verdict: verdictConnected,
		note: fmt.Sprintf("connected: session %s, heads %s, cursor %s", info.Session, strings.Join(heads, " "), t.cursor)}
}

// take makes an accepted event's own id the resume cursor.
func (t *tracker) take(ev streamEvent) {
	if ev.hasID && ev.id != "" {
		t.cursor = ev.id
	}
}

func brokenOutcome(format string, args ...any) outcome {
	return outcome{verdict: verdictBroken, err: fmt.Errorf(format, args...)}
}

func posString(epoch string, offset uint64) string {
	return epoch + ":" + strconv.FormatUint(offset, 10)
}

// oneLine returns data on one line: SSE joins several data: lines with
// LF, and a JSON line must not contain one.
func oneLine(data []byte) []byte {
	if bytes.IndexAny(data, "\r\n") < 0 {
		return data
	}
	var buf bytes.Buffer
	if json.Compact(&buf, data) != nil {
		return bytes.ReplaceAll(bytes.ReplaceAll(data, []byte("\r"), nil), []byte("\n"), nil)
	}
	return buf.Bytes()
}
