package client

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/heraldrt/herald/protocol"
)

// The tracker is a subscription's resume state and its judge, the same
// for every transport: each channel's position (epoch and last offset
// handed out), against which every message is checked (message), and, for
// SSE and long polling, the stream's cursor. Each transport turns its
// frames into calls: SSE events go through handle; the WebSocket
// subscriber calls message for message, batch and reset pushes, skip for
// skip pushes, atHead for subscribe replies and resumeFrom for the since
// and epoch of each subscribe; the poller calls message for each
// envelope of an answer. It is used by the subscription's loop alone.

// streamEvent is one SSE event as the tracker sees it.
type streamEvent struct {
	name  string // the event: field ("" when absent)
	data  []byte
	id    string
	hasID bool // the event carried its own id: line
}

type verdict int

const (
	verdictIgnore     verdict = iota // nothing to hand out (retry:, empty events)
	verdictDeliver                   // hand out the event
	verdictDuplicate                 // a message already handed out, replayed: drop it
	verdictConnected                 // herald.connected: the stream is good
	verdictDisconnect                // herald.disconnect: the server ends the stream
	verdictBroken                    // protocol violation: abandon, resume from our position
)

// outcome is the tracker's judgement of one event.
type outcome struct {
	verdict   verdict
	event     Event  // verdictDeliver
	err       error  // verdictBroken, verdictDisconnect: why the stream ends
	reconnect bool   // verdictDisconnect
	note      string // logged at Debug, with attrs
	attrs     []any
	// moved: the channel's position moved (a stored message, a reset, a
	// skip); on SSE the event's own id then becomes the cursor.
	moved bool
}

// chanPos is the subscriber's position on one channel: the last offset
// handed out and the epoch it belongs to.
type chanPos struct {
	epoch  string
	offset uint64
	known  bool
	// opaque: the position is inside a cursor we cannot read; the
	// channel's first message sets it.
	opaque bool
	// passed: the server said it passed over messages excluded for this
	// session (an SSE event with only an id: line, a poll answer with no
	// message and a new cursor) without saying which: the channel's next
	// message may follow a gap.
	passed bool
}

// gap is where a channel's messages jumped: the offset expected and the
// one that came.
type gap struct {
	channel, epoch string
	want, got      uint64
}

// tracker holds the subscription's resume state — each channel's
// position, the session and, on SSE and long polling, the cursor of the
// last event it accepted — and judges each message against it.
type tracker struct {
	channels []string
	index    map[string]int
	pos      []chanPos
	session  string
	cursor   string
	// seq counts the state's changes, for snapshots.
	seq uint64
	// suspect is the last gap that broke a connection. The same gap met
	// again right after resuming is the server's truth — messages it
	// passed over because they were excluded for this session — and is
	// taken.
	suspect gap
	// inAnswer is set while the poller hands out a poll answer's messages:
	// until the answer's last one, no cursor resumes exactly after the
	// message handed out; with the last one, answerCursor does.
	inAnswer     bool
	lastInAnswer bool
	answerCursor string
}

func newTracker(opts SubscribeOptions) *tracker {
	t := &tracker{
		channels: opts.Channels,
		index:    make(map[string]int, len(opts.Channels)),
		pos:      make([]chanPos, len(opts.Channels)),
		cursor:   opts.Cursor,
		session:  opts.Session,
	}
	for i, ch := range opts.Channels {
		t.index[ch] = i
		p := chanPos{opaque: opts.Cursor != ""}
		if from, ok := opts.Positions[ch]; ok {
			p = chanPos{known: true, offset: from.Offset, epoch: from.Epoch}
		}
		t.pos[i] = p
	}
	return t
}

// at returns the position of channel, nil for a channel not subscribed.
func (t *tracker) at(channel string) *chanPos {
	i, ok := t.index[channel]
	if !ok {
		return nil
	}
	return &t.pos[i]
}

// snapshot is the tracker's resume state as the caller sees it: what
// Cursor, Positions and Session return.
type snapshot struct {
	seq     uint64
	cursor  string
	session string
	pos     []chanPos
}

// snapshot returns the state after the last change, with the cursor that
// resumes exactly there ("" when there is none: mid poll answer with every
// position known, the positions resume; else the older cursor, which
// replays what the tracker of a new subscription then drops).
func (t *tracker) snapshot() *snapshot {
	t.seq++
	cursor := t.cursor
	if t.inAnswer {
		switch {
		case t.lastInAnswer:
			cursor = t.answerCursor
		case t.allKnown():
			cursor = ""
		}
	}
	return &snapshot{seq: t.seq, cursor: cursor, session: t.session, pos: append([]chanPos(nil), t.pos...)}
}

// allKnown reports whether the tracker knows every channel's position.
func (t *tracker) allKnown() bool {
	for i := range t.pos {
		if !t.pos[i].known {
			return false
		}
	}
	return true
}

// streamQuery is the query of an SSE stream: the channels and, until
// there is a cursor (which goes as Last-Event-ID and names the session),
// the positions (since and epoch, one per channel, "" for the head) and
// the session to continue.
func (t *tracker) streamQuery() url.Values {
	q := url.Values{"channel": t.channels}
	if t.cursor == "" {
		if since, epochs := t.positionLists(); since != nil {
			q["since"] = since
			if epochs != nil {
				q["epoch"] = epochs
			}
		}
		if t.session != "" {
			q["session"] = []string{t.session}
		}
	}
	return q
}

// positionLists are the since and epoch lists of a stream or poll
// without a cursor: each channel's position ("" = from its head), the
// epochs only when one is known; nil when no position is known.
func (t *tracker) positionLists() (since, epochs []string) {
	known, anyEpoch := false, false
	for _, ch := range t.channels {
		off, epoch, ok := t.resumeFrom(ch)
		s := ""
		if ok {
			known, s = true, strconv.FormatUint(off, 10)
		}
		anyEpoch = anyEpoch || epoch != ""
		since, epochs = append(since, s), append(epochs, epoch)
	}
	if !known {
		return nil, nil
	}
	if !anyEpoch {
		epochs = nil
	}
	return since, epochs
}

// handle judges one SSE event and moves the tracker's state (positions
// and cursor) when it is accepted.
func (t *tracker) handle(ev streamEvent) outcome {
	switch ev.name {
	case protocol.EventConnected:
		return t.connected(ev)
	case protocol.EventDisconnect:
		var d protocol.DisconnectData
		if err := json.Unmarshal(ev.data, &d); err != nil {
			return outcome{verdict: verdictDisconnect, reconnect: true, err: errStreamEnded,
				note: "herald.disconnect with unreadable data"}
		}
		return disconnectOutcome(d.Reason, d.Reconnect)
	}
	if len(ev.data) == 0 {
		if ev.hasID && ev.id != "" && ev.name == "" {
			// Only an id: line: the server passed over a message
			// excluded for this session, and the cursor moves past it.
			t.take(ev)
			t.passOver()
			return outcome{verdict: verdictIgnore, moved: true, note: "passed over a message excluded for this session", attrs: []any{"cursor", t.cursor}}
		}
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
		note: "disconnected by the server", attrs: []any{"reason", reason, "reconnect", reconnect}}
	if reconnect {
		o.err = fmt.Errorf("the server closed the stream: %s", reason)
	} else {
		o.err = &DisconnectError{Reason: reason}
	}
	return o
}

// skip judges a WebSocket skip push: a message this connection excluded
// itself from. Nothing is handed out; the position moves past it as if it
// had been, with the same gap and replay checks.
func (t *tracker) skip(channel, epoch string, offset uint64) outcome {
	p := t.at(channel)
	switch {
	case p == nil:
		return outcome{verdict: verdictIgnore, note: "ignored a skip for a channel this stream did not ask for", attrs: []any{"channel", channel}}
	case p.known && p.epoch != "" && epoch != p.epoch:
		return brokenOutcome("channel %q: a skip of epoch %q while at epoch %q, without herald.reset", channel, epoch, p.epoch)
	case p.known && offset <= p.offset:
		return outcome{verdict: verdictDuplicate, note: "dropped a replayed skip", attrs: []any{"channel", channel, "position", posString(epoch, offset)}}
	case p.known && offset != p.offset+1:
		return brokenOutcome("channel %q: gap, expected offset %d, skip of %d", channel, p.offset+1, offset)
	}
	*p = chanPos{epoch: epoch, offset: offset, known: true}
	return outcome{verdict: verdictIgnore, moved: true, note: "passed over own message", attrs: []any{"channel", channel, "position", posString(epoch, offset)}}
}

// message judges one message envelope — stored, ephemeral or herald.reset
// (also when the transport framed it as a reset) — against its channel's
// position and moves the position when it is accepted. This is the whole
// of exactly-once and in-order, for every transport: a stored message is
// handed out only at offset last+1 of the channel's epoch; a replay
// (offset <= last) is dropped; a gap, or an epoch change without a reset,
// breaks the connection, which then resumes from the position.
func (t *tracker) message(data []byte, reset bool) outcome {
	var env protocol.Envelope
	if err := json.Unmarshal(data, &env); err != nil {
		return brokenOutcome("data is not a JSON envelope: %v", err)
	}
	if env.Event == protocol.EventDisconnect && env.Channel == "" {
		// The last element of a poll answer when the server ended the
		// session: {"event":"herald.disconnect","data":{…}}.
		var d protocol.DisconnectData
		if err := json.Unmarshal(env.Data, &d); err != nil {
			return outcome{verdict: verdictDisconnect, reconnect: true, err: errStreamEnded, note: "herald.disconnect with unreadable data"}
		}
		return disconnectOutcome(d.Reason, d.Reconnect)
	}
	p := t.at(env.Channel)
	if p == nil {
		return outcome{verdict: verdictIgnore, note: "ignored a message for a channel this stream did not ask for", attrs: []any{"channel", env.Channel}}
	}
	ev := Event{Raw: oneLine(data), Envelope: env}
	if env.Event == protocol.EventReset || reset {
		var d struct {
			protocol.ResetData
			ResumeAfter *uint64 `json:"resume_after"` // shadows ResetData's: absent is an error
		}
		if err := json.Unmarshal(env.Data, &d); err != nil || d.ResumeAfter == nil {
			return brokenOutcome("herald.reset for %q without resume_after", env.Channel)
		}
		epoch := env.Epoch
		if epoch == "" {
			epoch = d.Epoch
		}
		*p = chanPos{epoch: epoch, offset: *d.ResumeAfter, known: true}
		ev.Kind = KindReset
		return outcome{verdict: verdictDeliver, event: ev, moved: true,
			note: "reset", attrs: []any{"channel", env.Channel, "reason", d.Reason, "resume_after", posString(epoch, *d.ResumeAfter)}}
	}
	if env.Offset == 0 {
		ev.Kind = KindEphemeral
		return outcome{verdict: verdictDeliver, event: ev} // live only, no position
	}
	switch {
	case !p.known:
		// First message of a channel whose position we cannot know.
	case p.epoch != "" && env.Epoch != p.epoch:
		return brokenOutcome("channel %q: a message of epoch %q while at epoch %q, without herald.reset", env.Channel, env.Epoch, p.epoch)
	case env.Offset <= p.offset:
		return outcome{verdict: verdictDuplicate, note: "dropped a replayed message",
			attrs: []any{"channel", env.Channel, "position", posString(env.Epoch, env.Offset), "at", p.offset}}
	case env.Offset != p.offset+1 && !p.passed:
		g := gap{channel: env.Channel, epoch: env.Epoch, want: p.offset + 1, got: env.Offset}
		if g != t.suspect {
			t.suspect = g
			return brokenOutcome("channel %q: gap, expected offset %d, got %d", env.Channel, p.offset+1, env.Offset)
		}
		t.suspect = gap{}
		o := outcome{note: "the server passed over offsets again after a resume: excluded for this session",
			attrs: []any{"channel", env.Channel, "from", g.want, "to", g.got - 1}}
		*p = chanPos{epoch: env.Epoch, offset: env.Offset, known: true}
		o.verdict, o.event, o.moved = verdictDeliver, ev, true
		o.event.Kind = KindMessage
		return o
	}
	if t.suspect.channel == env.Channel && env.Offset >= t.suspect.want {
		t.suspect = gap{} // the resume filled it
	}
	*p = chanPos{epoch: env.Epoch, offset: env.Offset, known: true}
	ev.Kind = KindMessage
	return outcome{verdict: verdictDeliver, event: ev, moved: true}
}

// passOver notes that the server passed over messages excluded for this
// session, on channels it did not name.
func (t *tracker) passOver() {
	for i := range t.pos {
		t.pos[i].passed = true
	}
}

// atHead tells the tracker where a channel stands as a connection starts
// (SSE: herald.connected; WebSocket: the subscribe reply). A channel that
// starts at the head takes that head as its position; a position without
// an epoch counts in the current epoch.
func (t *tracker) atHead(channel, epoch string, head uint64) {
	p := t.at(channel)
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
	p := t.at(channel)
	if p == nil || !p.known {
		return 0, "", false
	}
	return p.offset, p.epoch, true
}

// connected handles herald.connected: it fixes the start of channels that
// begin at the head and takes the cursor at connect, so a reconnect before
// any message resumes from the right place.
func (t *tracker) connected(ev streamEvent) outcome {
	var info protocol.Connected
	if err := json.Unmarshal(ev.data, &info); err != nil {
		return brokenOutcome("herald.connected: data is not valid: %v", err)
	}
	t.session = info.Session
	var heads []string
	for _, c := range info.Channels {
		heads = append(heads, c.Channel+"@"+posString(c.Epoch, c.Head))
		t.atHead(c.Channel, c.Epoch, c.Head)
	}
	t.take(ev)
	return outcome{verdict: verdictConnected, note: "connected",
		attrs: []any{"session", info.Session, "heads", strings.Join(heads, " "), "cursor", t.cursor}}
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
