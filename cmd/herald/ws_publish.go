package main

// `herald publish --transport ws`: one connection, one publish op after
// another, each answered (durable) before the next is sent, so the
// messages are stored in the order given.

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/gorilla/websocket"

	"github.com/heraldrt/herald/server"
)

// wsPublisher is the connection of `herald publish --transport ws`.
type wsPublisher struct {
	c           *wsConn
	excludeSelf bool
}

// dialWSPublisher connects and waits for the connected push, so bad
// credentials fail before anything is sent.
func dialWSPublisher(ctx context.Context, opts publishOptions) (*wsPublisher, error) {
	c, err := dialWS(ctx, opts.wsDialer, opts.base, opts.token, maxErrorBody)
	if err != nil {
		return nil, err
	}
	p := &wsPublisher{c: c, excludeSelf: opts.excludeSelf}
	if _, err := c.await(ctx, publishTimeout, func(f wsFrame) (bool, error) {
		return f.Type == "connected", disconnected(f)
	}); err != nil {
		c.close(0)
		return nil, err
	}
	return p, nil
}

// publish sends one publish op and returns its reply in the shape of the
// HTTP answer: {"channel","offset","epoch","id"} (ephemeral: "id" and
// "ephemeral":true; an idempotent repeat: "duplicate":true).
func (p *wsPublisher) publish(ctx context.Context, req server.PublishRequest) ([]byte, error) {
	id, err := p.c.send(wsOp{
		Op:             "publish",
		Channel:        req.Channel,
		Event:          req.Event,
		Data:           req.Data,
		IdempotencyKey: req.IdempotencyKey,
		ExcludeSelf:    p.excludeSelf,
		Ephemeral:      req.Ephemeral,
	})
	if err != nil {
		return nil, err
	}
	f, err := p.c.await(ctx, publishTimeout, func(f wsFrame) (bool, error) {
		return f.OK != nil && f.ID == id, disconnected(f)
	})
	if err != nil {
		return nil, err
	}
	if !*f.OK {
		return nil, replyError(f)
	}
	res := server.PublishResult{Channel: f.Channel, Offset: f.Offset, Epoch: f.Epoch, ID: f.MessageID,
		Duplicate: f.Duplicate, Ephemeral: f.Ephemeral}
	if res.Channel == "" {
		res.Channel = req.Channel
	}
	return json.Marshal(res)
}

func (p *wsPublisher) close() { p.c.close(websocket.CloseNormalClosure) }

// disconnected is the error of a disconnect push: the server is about to
// close the connection, so no reply is coming.
func disconnected(f wsFrame) error {
	if f.Type != "disconnect" {
		return nil
	}
	return fmt.Errorf("the server closed the connection: %s (close code %d)", f.Reason, f.Code)
}
