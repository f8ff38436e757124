package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/heraldrt/herald/client"
	"github.com/heraldrt/herald/protocol"
)

// batchMessages is n messages spread over two rooms, message bad (when
// in range) to a channel name the server refuses.
func batchMessages(n, bad int) []protocol.PublishRequest {
	msgs := make([]protocol.PublishRequest, n)
	for i := range msgs {
		msgs[i] = protocol.PublishRequest{Channel: fmt.Sprint("chat_room_", i%2), Event: "message_sent", Data: json.RawMessage(fmt.Sprint(i))}
	}
	if bad >= 0 && bad < n {
		msgs[bad].Channel = "bad#"
	}
	return msgs
}

// checkBatchResults checks one result per message, in order: the bad one
// refused with a 400 naming the problem, the others stored at the next
// offsets of their room, in message order.
func checkBatchResults(t *testing.T, res []protocol.BatchPublishResult, msgs []protocol.PublishRequest, bad int, next map[string]uint64) {
	t.Helper()
	if len(res) != len(msgs) {
		t.Fatalf("%d results for %d messages", len(res), len(msgs))
	}
	for i, r := range res {
		if i == bad {
			if r.Error == nil || r.Error.Code != 400 || r.Error.Message == "" || r.Offset != 0 {
				t.Fatalf("result %d (the bad channel): %+v, want a 400 error", i, r)
			}
			continue
		}
		ch := msgs[i].Channel
		if r.Error != nil || r.Channel != ch || r.Offset != next[ch] || r.ID == "" || r.Epoch == "" {
			t.Fatalf("result %d: %+v, want offset %d of %s", i, r, next[ch], ch)
		}
		next[ch]++
	}
}

// TestPublishBatchAgainstARealServer: Client.PublishBatch and
// Conn.PublishMany each publish a list of messages with one refused among
// them, and get one result per message, in order; a batch over the
// server's limit is refused whole with an *APIError.
func TestPublishBatchAgainstARealServer(t *testing.T) {
	h, err := startHerald()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := h.stop(); err != nil {
			t.Error(err)
		}
	})
	ctx := context.Background()
	backend, err := client.New(h.URL(), client.Options{Token: apiKey})
	if err != nil {
		t.Fatal(err)
	}
	next := map[string]uint64{"chat_room_0": 1, "chat_room_1": 1}

	msgs := batchMessages(9, 4)
	res, err := backend.PublishBatch(ctx, msgs)
	if err != nil {
		t.Fatalf("publish batch: %v", err)
	}
	checkBatchResults(t, res, msgs, 4, next)

	// Over the default limits.max_batch_messages (1,000): nothing published.
	var ae *client.APIError
	if _, err := backend.PublishBatch(ctx, batchMessages(1001, -1)); !errors.As(err, &ae) || ae.Status != 413 {
		t.Fatalf("a batch of 1,001: %v, want a 413", err)
	}
	if _, err := backend.PublishBatch(ctx, nil); !errors.As(err, &ae) || ae.Status != 400 {
		t.Fatalf("an empty batch: %v, want a 400", err)
	}

	// Over a WebSocket, more messages than the window: the bad one is
	// refused in its place, the others follow on from the HTTP batch.
	conn, err := backend.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msgs = batchMessages(3*client.PublishWindow+5, 100)
	res, err = conn.PublishMany(ctx, msgs)
	if err != nil {
		t.Fatalf("publish many: %v", err)
	}
	checkBatchResults(t, res, msgs, 100, next)
	// The connection goes on serving one-at-a-time publishes.
	one, err := conn.Publish(ctx, protocol.PublishRequest{Channel: "chat_room_0", Data: json.RawMessage(`1`)})
	if err != nil || one.Offset != next["chat_room_0"] {
		t.Fatalf("publish after PublishMany: %+v, %v; want offset %d", one, err, next["chat_room_0"])
	}
	if _, err := conn.PublishMany(ctx, []protocol.PublishRequest{{Channel: "chat_room_0", Session: "s_1"}}); err == nil {
		t.Error("PublishMany accepted a message naming a session")
	}
}
