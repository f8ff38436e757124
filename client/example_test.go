package client_test

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/heraldrt/herald/client"
	"github.com/heraldrt/herald/protocol"
)

// Each example runs against a real Herald (herald_test.go): the core on a
// store in a temporary directory, its API and its three transports.

// Publish a message over HTTP; the answer comes once it is stored. A
// repeated idempotency key returns the first result and stores nothing.
func ExampleClient_Publish() {
	h := mustStartHerald()
	defer h.stop()
	c, err := client.New(h.URL(), client.Options{Token: apiKey})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	req := protocol.PublishRequest{
		Channel:        "orders",
		Event:          "order_placed",
		Data:           json.RawMessage(`{"id":7}`),
		IdempotencyKey: "order-7",
	}
	for range 2 {
		res, err := c.Publish(ctx, req)
		if err != nil {
			panic(err)
		}
		fmt.Println("offset", res.Offset, "duplicate", res.Duplicate)
	}
	// Output:
	// offset 1 duplicate false
	// offset 1 duplicate true
}

// Read a channel's history a page at a time.
func ExampleClient_History() {
	h := mustStartHerald()
	defer h.stop()
	c, err := client.New(h.URL(), client.Options{Token: apiKey})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	for i := 1; i <= 5; i++ {
		if _, err := c.Publish(ctx, protocol.PublishRequest{Channel: "orders", Data: json.RawMessage(fmt.Sprint(i))}); err != nil {
			panic(err)
		}
	}
	var since uint64
	for {
		page, err := c.History(ctx, "orders", since, 2)
		if err != nil {
			panic(err)
		}
		if len(page.Messages) == 0 {
			break
		}
		fmt.Printf("%d messages up to %d of %d\n", len(page.Messages), page.Next, page.Head)
		since = page.Next
	}
	// Output:
	// 2 messages up to 2 of 5
	// 2 messages up to 4 of 5
	// 1 messages up to 5 of 5
}

// Publish on one WebSocket connection: each publish is acknowledged
// (stored) before the next is sent, so they are stored in order.
func ExampleClient_Dial() {
	h := mustStartHerald()
	defer h.stop()
	c, err := client.New(h.URL(), client.Options{Token: apiKey})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	conn, err := c.Dial(ctx)
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	for _, text := range []string{"hi", "how are you?"} {
		data, _ := json.Marshal(map[string]string{"text": text})
		res, err := conn.Publish(ctx, protocol.PublishRequest{Channel: "chat_room_7", Event: "message_sent", Data: data})
		if err != nil {
			panic(err)
		}
		fmt.Println(res.Channel, res.Offset)
	}
	// Output:
	// chat_room_7 1
	// chat_room_7 2
}

// Subscribe over each transport, from the oldest message kept. The server
// restarts in the middle — stopped, and started again on the same data
// directory and address — and each subscription resumes by itself exactly
// where it was: nothing lost, nothing twice.
func ExampleClient_Subscribe() {
	h := mustStartHerald()
	defer h.stop()
	c, err := client.New(h.URL(), client.Options{Token: apiKey})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	publish := func(channel, text string) {
		data, _ := json.Marshal(text)
		if _, err := c.Publish(ctx, protocol.PublishRequest{Channel: channel, Data: data}); err != nil {
			panic(err)
		}
	}
	for _, tr := range []client.Transport{client.SSE, client.WebSocket, client.LongPoll} {
		channel := "news_" + string(tr)
		publish(channel, "before the restart")
		sub, err := c.Subscribe(ctx, client.SubscribeOptions{
			Transport: tr,
			Channels:  []string{channel},
			Positions: map[string]client.Position{channel: {}}, // everything kept
		})
		if err != nil {
			panic(err)
		}
		next := func() {
			ev, err := sub.Next(ctx)
			if err != nil {
				panic(err)
			}
			fmt.Println(tr, ev.Kind, ev.Envelope.Offset, string(ev.Envelope.Data))
		}
		next()
		if err := h.restart(); err != nil {
			panic(err)
		}
		publish(channel, "after the restart")
		next()
		sub.Close()
	}
	// Output:
	// sse message 1 "before the restart"
	// sse message 2 "after the restart"
	// ws message 1 "before the restart"
	// ws message 2 "after the restart"
	// poll message 1 "before the restart"
	// poll message 2 "after the restart"
}

// Keep a subscription's positions to resume after the subscriber's own
// restart — here on another transport: positions mean the same on all.
func ExampleSubscription_Positions() {
	h := mustStartHerald()
	defer h.stop()
	c, err := client.New(h.URL(), client.Options{Token: apiKey})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	for i := 1; i <= 3; i++ {
		if _, err := c.Publish(ctx, protocol.PublishRequest{Channel: "orders", Data: json.RawMessage(fmt.Sprint(i))}); err != nil {
			panic(err)
		}
	}
	from := map[string]client.Position{"orders": {}}
	for _, tr := range []client.Transport{client.SSE, client.LongPoll, client.WebSocket} {
		sub, err := c.Subscribe(ctx, client.SubscribeOptions{Transport: tr, Channels: []string{"orders"}, Positions: from})
		if err != nil {
			panic(err)
		}
		ev, err := sub.Next(ctx)
		if err != nil {
			panic(err)
		}
		from = sub.Positions() // persist these
		sub.Close()
		fmt.Printf("%s: %s, then resume after %d\n", tr, ev.Envelope.Data, from["orders"].Offset)
	}
	// Output:
	// sse: 1, then resume after 1
	// poll: 2, then resume after 2
	// ws: 3, then resume after 3
}
