package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
)

// publishReply answers a publish op as the server does once it is stored.
func publishReply(c *wsTestConn, op wsOp, offset int) {
	c.reply(op.ID, fmt.Sprintf(`"channel":%q,"offset":%d,"epoch":"e1","message_id":"m_%d"`, op.Channel, offset, offset))
}

func TestWSPublish(t *testing.T) {
	type sent struct {
		op     wsOp
		fields map[string]json.RawMessage
	}
	cases := []struct {
		name    string
		args    []string
		conn    func(c *wsTestConn, got *[]sent)
		wantOps []string // the ops, as the client sent them
		wantOut string
		wantErr string
	}{
		{
			name: "count, idempotency key, exclude-self; pushes and stray replies ignored",
			args: []string{"--channel", "c", "--event", "message_sent", "--data", `{"n": {{i}}}`, "--count", "3", "--idempotency-key", "k-{{i}}", "--exclude-self"},
			conn: func(c *wsTestConn, got *[]sent) {
				c.connected()
				for i := 1; i <= 3; i++ {
					op, fields := c.expect("publish")
					*got = append(*got, sent{op, fields})
					c.send(msgPush(envelopeJSON("c", "e1", 99)), `{"id":999,"ok":true}`)
					if err := c.conn().WriteMessage(websocket.PingMessage, nil); err != nil {
						t.Errorf("ping: %v", err)
					}
					publishReply(c, op, i)
				}
			},
			wantOps: []string{
				`{"id":1,"op":"publish","channel":"c","event":"message_sent","data":{"n":1},"idempotency_key":"k-1","exclude_self":true}`,
				`{"id":2,"op":"publish","channel":"c","event":"message_sent","data":{"n":2},"idempotency_key":"k-2","exclude_self":true}`,
				`{"id":3,"op":"publish","channel":"c","event":"message_sent","data":{"n":3},"idempotency_key":"k-3","exclude_self":true}`,
			},
			wantOut: `{"channel":"c","offset":1,"epoch":"e1","id":"m_1"}` + "\n" +
				`{"channel":"c","offset":2,"epoch":"e1","id":"m_2"}` + "\n" +
				`{"channel":"c","offset":3,"epoch":"e1","id":"m_3"}` + "\n",
		},
		{
			name: "ephemeral and null data",
			args: []string{"--channel", "c", "--event", "typing", "--ephemeral"},
			conn: func(c *wsTestConn, got *[]sent) {
				c.connected()
				op, fields := c.expect("publish")
				*got = append(*got, sent{op, fields})
				c.reply(op.ID, `"message_id":"m_x","ephemeral":true`)
			},
			wantOps: []string{`{"id":1,"op":"publish","channel":"c","event":"typing","data":null,"ephemeral":true}`},
			wantOut: `{"channel":"c","id":"m_x","ephemeral":true}` + "\n",
		},
		{
			name: "error reply on the second of three stops there",
			args: []string{"--channel", "c", "--count", "3"},
			conn: func(c *wsTestConn, got *[]sent) {
				c.connected()
				op, fields := c.expect("publish")
				*got = append(*got, sent{op, fields})
				publishReply(c, op, 1)
				op, fields = c.expect("publish")
				*got = append(*got, sent{op, fields})
				c.send(fmt.Sprintf(`{"id":%d,"ok":false,"error":{"code":429,"message":"rate limit: 60 per 1m","retry_after":3}}`, op.ID))
			},
			wantOps: []string{`{"id":1,"op":"publish","channel":"c","data":null}`, `{"id":2,"op":"publish","channel":"c","data":null}`},
			wantOut: `{"channel":"c","offset":1,"epoch":"e1","id":"m_1"}` + "\n",
			wantErr: "message 2 of 3: server answered 429 Too Many Requests: rate limit: 60 per 1m",
		},
		{
			name: "403 reply",
			args: []string{"--channel", "team_3_x", "--data", `"hi"`},
			conn: func(c *wsTestConn, got *[]sent) {
				c.connected()
				op, fields := c.expect("publish")
				*got = append(*got, sent{op, fields})
				c.replyError(op.ID, 403, `not allowed to publish to channel "team_3_x"`)
			},
			wantOps: []string{`{"id":1,"op":"publish","channel":"team_3_x","data":"hi"}`},
			wantErr: `server answered 403 Forbidden: not allowed to publish to channel "team_3_x"`,
		},
		{
			name:    "unauthorized at connect",
			args:    []string{"--channel", "c"},
			conn:    func(c *wsTestConn, _ *[]sent) { c.closeWith(4001, "token is expired") },
			wantErr: "4001 unauthorized: token is expired",
		},
		{
			name:    "upgrade refused",
			args:    []string{"--channel", "c"},
			conn:    func(c *wsTestConn, _ *[]sent) { c.refuse(401, "token signature is invalid") },
			wantErr: "server answered 401 Unauthorized: token signature is invalid",
		},
		{
			name: "connection lost before the reply",
			args: []string{"--channel", "c"},
			conn: func(c *wsTestConn, got *[]sent) {
				c.connected()
				op, fields := c.expect("publish")
				*got = append(*got, sent{op, fields})
				c.send(`{"type":"disconnect","code":1012,"reason":"shutdown","reconnect":true}`)
				c.closeWith(websocket.CloseServiceRestart, "shutdown")
			},
			wantOps: []string{`{"id":1,"op":"publish","channel":"c","data":null}`},
			wantErr: "the server closed the connection: shutdown (close code 1012)",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got []sent
			srv, sc := newWSServer(t, "/herald", func(c *wsTestConn) { tc.conn(c, &got) })
			env := map[string]string{envURL: srv.URL + "/herald/", envToken: "tok"}
			var stdout, stderr bytes.Buffer
			err := runPublish(context.Background(), append([]string{"--transport", "ws"}, tc.args...),
				clientEnv{getenv: func(k string) string { return env[k] }}, nil, &stdout, &stderr)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("publish: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
			}
			if out := stdout.String(); out != tc.wantOut {
				t.Errorf("stdout:\n%s\nwant:\n%s", out, tc.wantOut)
			}
			reqs := sc.requests() // the script is done: got is complete
			if len(reqs) != 1 || reqs[0].auth != "Bearer tok" {
				t.Errorf("connections %+v, want one with Bearer tok", reqs)
			}
			if len(got) != len(tc.wantOps) {
				t.Fatalf("%d publish ops, want %d", len(got), len(tc.wantOps))
			}
			for i, s := range got {
				b, _ := json.Marshal(s.op)
				if string(b) != tc.wantOps[i] {
					t.Errorf("op %d: %s, want %s", i+1, b, tc.wantOps[i])
				}
			}
		})
	}
}

func TestPublishTransportFlags(t *testing.T) {
	cases := []struct {
		args    []string
		wantErr string
	}{
		{[]string{"--channel", "c", "--exclude-self"}, "--exclude-self is for --transport ws only"},
		{[]string{"--channel", "c", "--transport", "ws", "--exclude-session", "s_1"}, "--exclude-session is for --transport http only"},
		{[]string{"--channel", "c", "--transport", "sse"}, `--transport "sse" is unknown`},
	}
	for _, tc := range cases {
		_, err := parsePublishFlags(tc.args, clientEnv{getenv: func(string) string { return "" }}, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%q: err = %v, want %q", tc.args, err, tc.wantErr)
		}
	}
}
