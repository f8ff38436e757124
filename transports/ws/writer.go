package ws

import (
	"io"
	"time"

	"github.com/gorilla/websocket"

	"github.com/heraldrt/herald/protocol"
	"github.com/heraldrt/herald/server"
	"github.com/heraldrt/herald/transports/internal/writer"
)

// turn is one writer turn (writer.Pump); the pump's writer is the only
// goroutine that writes data frames. It writes the queued items as
// frames, a ping on a heartbeat turn, or — when the session has closed —
// the last items, a disconnect push and the close frame. It returns the
// items written, or -1 when the connection is over.
func (c *conn) turn(kind writer.TurnKind) int {
	if kind == writer.TurnClose {
		reason := c.sess.Reason()
		if code, tell := closeCode(reason); tell {
			c.items = c.sess.Drain(c.items[:0])
			_ = c.writeItems(c.items)
			_ = c.writeFrame(encode(protocol.DisconnectPush{Type: protocol.PushDisconnect, Code: code, Reason: reason.String(), Reconnect: reason.Reconnect()}))
			c.closeWith(code, reason.String())
		}
		c.ws.Close()
		return 0
	}
	if kind == writer.TurnHeartbeat {
		if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.h.opts.WriteTimeout)); err != nil {
			return c.broken(err)
		}
	}
	c.items = c.sess.Drain(c.items[:0])
	n := len(c.items)
	err := c.writeItems(c.items)
	clear(c.items) // drop message references until the next turn
	if err != nil {
		return c.broken(err)
	}
	return n
}

// broken ends a connection that could not be written to: a timed-out
// write is a slow consumer, anything else a broken connection.
func (c *conn) broken(err error) int {
	c.sess.Close(server.WriteFailed(err))
	c.ws.Close()
	return -1
}

// closeCode maps why the core closed a session to the close code sent, and
// whether the client is told at all (not when it left or cannot be
// written to).
func closeCode(r server.Reason) (int, bool) {
	switch r {
	case server.ReasonShutdown:
		return websocket.CloseServiceRestart, true
	case server.ReasonSlowConsumer:
		return protocol.CloseSlowConsumer, true
	case server.ReasonTokenExpired:
		return protocol.CloseTokenExpired, true
	case server.ReasonInternal:
		return websocket.CloseInternalServerErr, true
	case server.ReasonRevoked, server.ReasonKicked, server.ReasonBanned, server.ReasonReplaced:
		return protocol.ClosePolicy, true
	}
	return 0, false
}

// writeItems frames items in order. Consecutive messages go out as one
// batch push: one frame and one write for a whole backlog. Envelopes are
// copied into the frame as they are, never re-encoded.
func (c *conn) writeItems(items []server.Item) error {
	if len(items) == 0 {
		return nil
	}
	if err := c.ws.SetWriteDeadline(time.Now().Add(c.h.opts.WriteTimeout)); err != nil {
		return err
	}
	for i := 0; i < len(items); {
		it := &items[i]
		var err error
		switch it.Kind {
		case server.KindMessage:
			j := i + 1
			for j < len(items) && items[j].Kind == server.KindMessage && j-i < c.h.opts.MaxBatch {
				j++
			}
			err = c.writeMessages(items[i:j])
			i = j
			if err != nil {
				return err
			}
			continue
		case server.KindReset:
			err = c.writeWrapped(protocol.ResetPrefix, it.Msg.Raw)
		case server.KindPresence:
			err = c.writeWrapped(protocol.PresencePrefix, it.Msg.Raw)
		case server.KindFrame:
			err = c.writeFrame(it.Raw)
		case server.KindUnsubscribed:
			err = c.writeFrame(encode(protocol.UnsubscribedPush{Type: protocol.PushUnsubscribed, Channel: it.Msg.Channel, Reason: protocol.ReasonRevoked}))
		case server.KindSkip:
			// The client excluded itself from this message: it gets the
			// position, not the message, so a resume does not bring it back.
			m := it.Msg
			err = c.writeFrame(encode(protocol.SkipPush{Type: protocol.PushSkip, Channel: m.Channel, Offset: m.Offset, Epoch: m.Epoch}))
		}
		if err != nil {
			return err
		}
		i++
	}
	return nil
}

func (c *conn) writeMessages(run []server.Item) error {
	if len(run) == 1 {
		return c.writeWrapped(protocol.MessagePrefix, run[0].Msg.Raw)
	}
	w, err := c.ws.NextWriter(websocket.TextMessage)
	if err != nil {
		return err
	}
	_, _ = io.WriteString(w, protocol.BatchPrefix)
	for k := range run {
		if k > 0 {
			_, _ = io.WriteString(w, ",")
		}
		_, _ = w.Write(run[k].Msg.Raw)
	}
	_, _ = io.WriteString(w, "]}")
	return w.Close()
}

// writeWrapped writes prefix + raw + "}" as one frame.
func (c *conn) writeWrapped(prefix string, raw []byte) error {
	w, err := c.ws.NextWriter(websocket.TextMessage)
	if err != nil {
		return err
	}
	_, _ = io.WriteString(w, prefix)
	_, _ = w.Write(raw)
	_, _ = io.WriteString(w, "}")
	return w.Close()
}

func (c *conn) writeFrame(b []byte) error {
	if err := c.ws.SetWriteDeadline(time.Now().Add(c.h.opts.WriteTimeout)); err != nil {
		return err
	}
	return c.ws.WriteMessage(websocket.TextMessage, b)
}
