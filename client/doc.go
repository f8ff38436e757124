// Package client is Herald's Go client: publish over HTTP or a WebSocket,
// read history and presence, signal, manage grants and bans, and
// subscribe to channels over SSE, WebSocket or long polling with every
// stored message handed out exactly once and in order — across network
// cuts, server restarts and the subscriber's own restarts.
//
//	c, err := client.New("http://127.0.0.1:8080", client.Options{Token: apiKey})
//	res, err := c.Publish(ctx, protocol.PublishRequest{Channel: "chat_room_7", Data: json.RawMessage(`{"text":"hi"}`)})
//
//	sub, err := c.Subscribe(ctx, client.SubscribeOptions{
//		Transport: client.WebSocket,
//		Channels:  []string{"chat_room_7"},
//		Positions: saved, // from sub.Positions() last time; nil: from now on
//	})
//	defer sub.Close()
//	for {
//		ev, err := sub.Next(ctx)
//		if err != nil { … }      // ctx done, Close, or the server refused us for good
//		handle(ev)               // ev.Kind: KindMessage, KindReset, KindEphemeral
//		save(sub.Positions())    // or sub.Cursor() on SSE and long polling
//	}
//
// The wire itself — the names and JSON shapes — is package protocol;
// what it means is transports/PROTOCOL.md. The client imports protocol,
// never the server: it speaks to a Herald over the network like any
// other client.
//
// # Exactly once, in order
//
// Every event of a subscription goes through one judge, the same for
// every transport: each channel's position (epoch and last offset handed
// out) is kept, and a stored message is handed out only when its offset
// is exactly the last one + 1 in that epoch. A replay (offset ≤ last) is
// dropped; a gap, a malformed event or an epoch change without
// herald.reset abandons the connection and resumes from the position (or
// the SSE/poll cursor, which names the same point). A herald.reset moves
// the position to where the kept history resumes. Ephemeral messages and
// presence events carry no offset and are handed out as they come.
// Messages excluded for the subscriber's session (exclude_session) are
// the one gap the server makes on purpose: a WebSocket skip push moves the
// position past one; an SSE event with only an id: line, or a poll answer
// with no message and a new cursor, says some were passed over (each
// channel's next message may then follow a gap); and a gap met again, at
// the same place, right after a resume is taken as the server's truth.
//
// A subscription reconnects by itself after any end of a connection —
// server shutdown, restart, network cut, a connection silent for
// StallTimeout — with a capped, jittered backoff (RetryMin doubling to
// RetryMax) that starts over after each connection that worked, and it
// honours Retry-After on 429 and 503. It stops for good only when
// reconnecting cannot help: a 4xx refusal (ErrRefused), a
// herald.disconnect with reconnect: false (ErrDisconnected), or streams
// that keep breaking the protocol (ErrInconsistent). On reconnect it
// continues its session (SSE and long polling through the cursor, which
// names it; WebSocket with ?session=), so messages published with
// exclude_session naming it stay passed over.
//
// Next hands events over one at a time and the subscription reads on
// only once Next took the event, so Cursor and Positions, read after
// Next returned, say exactly what was handed out: persist them to resume
// after the subscriber's own restart.
//
// # Why the SSE subscriber guards the r3labs client
//
// The SSE subscriber uses github.com/r3labs/sse/v2 (v2.10.0), which on its
// own is not exactly-once; each of its defects sits at a seam this
// package controls, so the library is kept and guarded:
//
//   - At a broken or ended stream its scanner hands out whatever is
//     buffered as if it were a whole event, and stores that event's id:
//     as Last-Event-ID. Here it never sees a half event: the response
//     body is wrapped (streamTransport, eventGuard in sse.go) in a reader
//     that releases bytes only up to the blank line that ends an event
//     and drops an unterminated tail when the stream ends. And its
//     Last-Event-ID is never sent: every connection uses a fresh client,
//     and our RoundTripper deletes the header and sets our own cursor,
//     the id of the last event we accepted.
//   - On a clean end of stream (what a killed or restarted server looks
//     like) its Subscribe returns nil and does not reconnect, and its
//     exponential backoff is never reset after a good connection (and
//     gives up after 15 minutes). So it runs one connection at a time (a
//     ReconnectStrategy that stops at once) and our loop reconnects after
//     any end, with the backoff above.
//   - It drops the body of a non-200 answer, so a ResponseValidator reads
//     the server's JSON error; its 64 KiB event limit is below the
//     envelope of a 64 KiB message, so it is raised (our guard fails
//     first, clearly). It fills an event without id: with the previous
//     id, so an event whose id equals the one before it is treated as
//     having none.
//
// The e2e tests also run the plain library, re-subscribing after a clean
// end: Herald's framing (the id: line last) keeps even that client
// exactly-once across a SIGKILL.
//
// # Concurrency
//
// A Client holds no connection and is safe for concurrent use. A
// Subscription runs one goroutine (its reconnect loop, which owns every
// connection of the subscription and the reader goroutine of a WebSocket
// connection); Close stops it and waits for it. A Conn runs one reader
// goroutine, which Close stops.
package client
