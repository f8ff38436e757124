package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/heraldrt/herald/protocol"
)

// The tracker is the subscriber's resume state and its judge, shared by
// both transports: each channel's position (epoch and last offset
// printed), against which every message is checked (message), and, for
// SSE only, the stream's cursor. Each transport turns its frames into
// calls: SSE events go through handle; the WebSocket subscriber calls
// message for message, batch and reset pushes, atHead for subscribe
// replies and resumeFrom for the since and epoch of each subscribe.

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
	// moved: the channel's position moved (a stored message or a reset);
	// on SSE the event's own id then becomes the cursor.
	moved bool
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

// tracker holds the subscriber's own resume state — each channel's
// position and, on SSE, the cursor of the last event it accepted — and
// judges each message against it.
type tracker struct {
	channels []string
	pos      map[string]*chanPos
	session  string
	// SSE only: the --since/--epoch lists, sent until there is a cursor,
	// and the cursor.
	since  []string
	epochs []string
	cursor string
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

// handle judges one SSE event and moves the tracker's state (positions
// and cursor) when it is accepted. The WebSocket subscriber calls the
// transport-neutral parts (message, atHead, disconnectOutcome) directly.
func (t *tracker) handle(ev streamEvent) outcome {
	switch ev.name {
	case protocol.EventConnected:
		return t.connected(ev)
	case protocol.EventDisconnect:
		var d struct {
			Reason    string `json:"reason"`
			Reconnect bool   `json:"reconnect"`
		}
		if err := json.Unmarshal(ev.data, &d); err != nil {
			return outcome{verdict: verdictDisconnect, reconnect: true, err: errStreamEnded,
				note: "herald.disconnect with unreadable data"}
		}
		return disconnectOutcome(d.Reason, d.Reconnect)
	}
	if len(ev.data) == 0 {
		return outcome{verdict: verdictIgnore} // retry:, or an event without data
	}
	o := t.message(ev.data, ev.name == protocol.EventReset)
	if o.verdict == verdictBroken && ev.name != "" {
		o.err = fmt.Errorf("event %q: %w", ev.name, o.err)
	}
	if o.moved {
		t.take(ev)
	}
	return o
}

// disconnectOutcome is the server's notice that it ends the stream (SSE)
// or the connection (WebSocket).
func disconnectOutcome(reason string, reconnect bool) outcome {
	o := outcome{verdict: verdictDisconnect, reconnect: reconnect,
		note: fmt.Sprintf("disconnected by the server: %s (reconnect: %t)", reason, reconnect)}
	if reconnect {
		o.err = fmt.Errorf("the server closed the stream: %s", reason)
	} else {
		o.err = fmt.Errorf("the server closed the stream for good: %s", reason)
	}
	return o
}

// message judges one message envelope — stored, ephemeral or herald.reset
// (also when the transport framed it as a reset) — against its channel's
// position and moves the position when it is accepted. This is the whole
// of exactly-once and in-order, for every transport: a stored message is
// printed only at offset last+1 of the channel's epoch; a replay (offset
// <= last) is dropped; a gap, or an epoch change without a reset, breaks
// the connection, which then resumes from the position.
// skip judges a WebSocket skip push: a message this connection excluded
// itself from. Nothing is printed; the position moves past it as if it had
// been, with the same gap and replay checks.
func (t *tracker) skip(channel, epoch string, offset uint64) outcome {
	p := t.pos[channel]
	switch {
	case p == nil:
		return outcome{verdict: verdictIgnore, note: fmt.Sprintf("ignored a skip for channel %q, which this stream did not ask for", channel)}
	case p.known && p.epoch != "" && epoch != p.epoch:
		return brokenOutcome("channel %q: a skip of epoch %q while at epoch %q, without herald.reset", channel, epoch, p.epoch)
	case p.known && offset <= p.offset:
		return outcome{verdict: verdictDuplicate, note: fmt.Sprintf("dropped a replayed skip %s on %s", posString(epoch, offset), channel)}
	case p.known && offset != p.offset+1:
		return brokenOutcome("channel %q: gap, expected offset %d, skip of %d", channel, p.offset+1, offset)
	}
	*p = chanPos{epoch: epoch, offset: offset, known: true}
	return outcome{verdict: verdictIgnore, moved: true, note: fmt.Sprintf("passed over own message %s on %s", posString(epoch, offset), channel)}
}

func (t *tracker) message(data []byte, reset bool) outcome {
	var env envelopeHead
	if err := json.Unmarshal(data, &env); err != nil {
		return brokenOutcome("data is not a JSON envelope: %v", err)
	}
	p := t.pos[env.Channel]
	if p == nil {
		return outcome{verdict: verdictIgnore, note: fmt.Sprintf("ignored a message for channel %q, which this stream did not ask for", env.Channel)}
	}
	line := oneLine(data)
	if env.Event == protocol.EventReset || reset {
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
		return outcome{verdict: verdictPrint, line: line, moved: true,
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
	return outcome{verdict: verdictPrint, line: line, moved: true}
}

// atHead tells the tracker where a channel stands as a connection starts
// (SSE: herald.connected; WebSocket: the subscribe reply). A channel that
// starts at the head takes that head as its position; a --since without
// --epoch counts in the current epoch.
func (t *tracker) atHead(channel, epoch string, head uint64) {
	p := t.pos[channel]
	switch {
	case p == nil:
	case !p.known && !p.opaque:
		*p = chanPos{epoch: epoch, offset: head, known: true}
	case p.known && p.epoch == "":
		p.epoch = epoch
	}
}

// resumeFrom is where a channel's next subscription starts: after offset
// (of epoch, "" when not known yet) when ok, else at the head.
func (t *tracker) resumeFrom(channel string) (offset uint64, epoch string, ok bool) {
	p := t.pos[channel]
	if p == nil || !p.known {
		return 0, "", false
	}
	return p.offset, p.epoch, true
}

// resumeFlags are the flags that resume every channel from its tracked
// position, for the log at exit; "" when no position is known.
func (t *tracker) resumeFlags() string {
	var since, epochs []string
	known := false
	for _, ch := range t.channels {
		off, epoch, ok := t.resumeFrom(ch)
		s := ""
		if ok {
			known, s = true, strconv.FormatUint(off, 10)
		}
		since = append(since, "--since "+strconv.Quote(s))
		epochs = append(epochs, "--epoch "+strconv.Quote(epoch))
	}
	if !known {
		return ""
	}
	return strings.Join(since, " ") + " " + strings.Join(epochs, " ")
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
		t.atHead(c.Channel, c.Epoch, c.Offset)
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
	if !bytes.ContainsAny(data, "\r\n") {
		return data
	}
	var buf bytes.Buffer
	if json.Compact(&buf, data) != nil {
		return bytes.ReplaceAll(bytes.ReplaceAll(data, []byte("\r"), nil), []byte("\n"), nil)
	}
	return buf.Bytes()
}
