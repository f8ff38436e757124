package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/heraldrt/herald/internal/cli"
	"github.com/heraldrt/herald/server"
)

// publishServer records every publish request, checks its framing, and
// answers with answer(n, req) for the n-th request (1-based).
type publishServer struct {
	t      *testing.T
	path   string
	answer func(n int, req server.PublishRequest) (int, string)

	mu   sync.Mutex
	reqs []server.PublishRequest
	auth []string
}

func (ps *publishServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != ps.path {
		ps.t.Errorf("request %s %s, want POST %s", r.Method, r.URL.Path, ps.path)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		ps.t.Errorf("Content-Type %q, want application/json", ct)
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields() // as the server does
	var req server.PublishRequest
	if err := dec.Decode(&req); err != nil {
		ps.t.Errorf("request body: %v", err)
	}
	ps.mu.Lock()
	ps.reqs = append(ps.reqs, req)
	ps.auth = append(ps.auth, r.Header.Get("Authorization"))
	n := len(ps.reqs)
	ps.mu.Unlock()
	code, body := ps.answer(n, req)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	io.WriteString(w, body)
}

func okAnswer(n int, req server.PublishRequest) (int, string) {
	return 200, fmt.Sprintf("{\"channel\": %q, \"offset\": %d, \"epoch\": \"e1\", \"id\": \"m_%d\"}\n", req.Channel, n, n)
}

func TestPublish(t *testing.T) {
	cases := []struct {
		name     string
		args     []string
		env      map[string]string
		stdin    string
		prefix   string // server URL path prefix
		answer   func(int, server.PublishRequest) (int, string)
		wantReqs []string // request bodies, as JSON
		wantAuth string
		wantOut  string
		wantErr  string
	}{
		{
			name:     "basic",
			args:     []string{"--channel", "chat_room_7", "--event", "message_sent", "--data", `{"text": "hi"}`},
			env:      map[string]string{cli.EnvAPIKey: "key"},
			wantReqs: []string{`{"channel":"chat_room_7","event":"message_sent","data":{"text":"hi"}}`},
			wantAuth: "Bearer key",
			wantOut:  `{"channel":"chat_room_7","offset":1,"epoch":"e1","id":"m_1"}` + "\n",
		},
		{
			name: "every field, token flag beats env",
			args: []string{"--channel", "c", "--data", "42", "--idempotency-key", "k1", "--exclude-session", "s_1", "--token", "flagtok"},
			env:  map[string]string{cli.EnvToken: "envtok", cli.EnvAPIKey: "key"},
			wantReqs: []string{
				`{"channel":"c","data":42,"idempotency_key":"k1","exclude_session":"s_1"}`,
			},
			wantAuth: "Bearer flagtok",
			wantOut:  `{"channel":"c","offset":1,"epoch":"e1","id":"m_1"}` + "\n",
		},
		{
			name:     "ephemeral, HERALD_TOKEN beats HERALD_API_KEY, server under a path",
			args:     []string{"--channel", "c", "--event", "typing", "--ephemeral"},
			env:      map[string]string{cli.EnvToken: "envtok", cli.EnvAPIKey: "key"},
			prefix:   "/herald/",
			wantReqs: []string{`{"channel":"c","event":"typing","data":null,"ephemeral":true}`},
			wantAuth: "Bearer envtok",
			wantOut:  `{"channel":"c","offset":1,"epoch":"e1","id":"m_1"}` + "\n",
		},
		{
			name:     "data from stdin",
			args:     []string{"--channel", "c", "--data", "-"},
			stdin:    "{\n  \"text\": \"from stdin\"\n}\n",
			wantReqs: []string{`{"channel":"c","data":{"text":"from stdin"}}`},
			wantOut:  `{"channel":"c","offset":1,"epoch":"e1","id":"m_1"}` + "\n",
		},
		{
			name: "count with placeholder",
			args: []string{"--channel", "c", "--data", `{"n":{{i}}}`, "--count", "3", "--idempotency-key", "k-{{i}}"},
			wantReqs: []string{
				`{"channel":"c","data":{"n":1},"idempotency_key":"k-1"}`,
				`{"channel":"c","data":{"n":2},"idempotency_key":"k-2"}`,
				`{"channel":"c","data":{"n":3},"idempotency_key":"k-3"}`,
			},
			wantOut: `{"channel":"c","offset":1,"epoch":"e1","id":"m_1"}` + "\n" +
				`{"channel":"c","offset":2,"epoch":"e1","id":"m_2"}` + "\n" +
				`{"channel":"c","offset":3,"epoch":"e1","id":"m_3"}` + "\n",
		},
		{
			name: "403 answer",
			args: []string{"--channel", "team_3_x", "--data", `"hi"`},
			answer: func(int, server.PublishRequest) (int, string) {
				return 403, `{"error":{"code":403,"message":"not allowed to publish to channel \"team_3_x\"","channel":"team_3_x"}}`
			},
			wantReqs: []string{`{"channel":"team_3_x","data":"hi"}`},
			wantErr:  `server answered 403 Forbidden: not allowed to publish to channel "team_3_x"`,
		},
		{
			name: "error on the second of three stops there",
			args: []string{"--channel", "c", "--count", "3"},
			answer: func(n int, req server.PublishRequest) (int, string) {
				if n == 2 {
					return 429, `{"error":{"code":429,"message":"rate limit: 60 per 1m","retry_after":3}}`
				}
				return okAnswer(n, req)
			},
			wantReqs: []string{`{"channel":"c","data":null}`, `{"channel":"c","data":null}`},
			wantOut:  `{"channel":"c","offset":1,"epoch":"e1","id":"m_1"}` + "\n",
			wantErr:  "message 2 of 3: server answered 429 Too Many Requests: rate limit: 60 per 1m",
		},
		{
			name: "non-JSON error page",
			args: []string{"--channel", "c"},
			answer: func(int, server.PublishRequest) (int, string) {
				return 502, "<html>\n<body>Bad Gateway</body>\n</html>"
			},
			wantReqs: []string{`{"channel":"c","data":null}`},
			wantErr:  "server answered 502 Bad Gateway: <html> <body>Bad Gateway</body> </html>",
		},
		{name: "bare word is not JSON", args: []string{"--channel", "c", "--data", "hello"}, wantErr: `--data is not valid JSON: invalid character 'h' looking for beginning of value (to send a string, quote it: --data '"hello"')`},
		{name: "broken object", args: []string{"--channel", "c", "--data", `{text:"hi"}`}, wantErr: "--data is not valid JSON"},
		{name: "two values", args: []string{"--channel", "c", "--data", `1 2`}, wantErr: "--data is not valid JSON"},
		{name: "empty stdin", args: []string{"--channel", "c", "--data", "-"}, stdin: " \n", wantErr: "--data is empty"},
		{name: "no channel", args: []string{"--data", "1"}, wantErr: "--channel is required"},
		{name: "bad channel", args: []string{"--channel", "a b"}, wantErr: "position 2"},
		{name: "bad count", args: []string{"--channel", "c", "--count", "0"}, wantErr: "--count 0"},
		{name: "stray argument", args: []string{"--channel", "c", "oops"}, wantErr: `unexpected argument "oops"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			prefix := tc.prefix
			if prefix == "" {
				prefix = "/"
			}
			ps := &publishServer{t: t, path: prefix + "api/publish", answer: tc.answer}
			if ps.answer == nil {
				ps.answer = okAnswer
			}
			srv := httptest.NewServer(ps)
			defer srv.Close()
			env := map[string]string{cli.EnvURL: srv.URL + strings.TrimSuffix(prefix, "/")}
			for k, v := range tc.env {
				env[k] = v
			}
			var stdout, stderr bytes.Buffer
			err := runPublish(context.Background(), tc.args,
				cli.Env{Getenv: func(k string) string { return env[k] }, Stdin: strings.NewReader(tc.stdin)},
				srv.Client(), &stdout, &stderr)
			if tc.wantErr == "" && err != nil {
				t.Fatalf("publish: %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
			}
			if got := stdout.String(); got != tc.wantOut {
				t.Errorf("stdout %q, want %q", got, tc.wantOut)
			}
			ps.mu.Lock()
			defer ps.mu.Unlock()
			if len(ps.reqs) != len(tc.wantReqs) {
				t.Fatalf("%d requests, want %d", len(ps.reqs), len(tc.wantReqs))
			}
			for i, r := range ps.reqs {
				b, _ := json.Marshal(r)
				if string(b) != tc.wantReqs[i] {
					t.Errorf("request %d body %s, want %s", i+1, b, tc.wantReqs[i])
				}
				if ps.auth[i] != tc.wantAuth {
					t.Errorf("request %d Authorization %q, want %q", i+1, ps.auth[i], tc.wantAuth)
				}
			}
		})
	}
}

func TestPublishHelp(t *testing.T) {
	var stderr bytes.Buffer
	err := runPublish(context.Background(), []string{"-h"}, cli.Env{Getenv: func(string) string { return "secret-token" }}, nil, io.Discard, &stderr)
	if err == nil || err.Error() != "flag: help requested" {
		t.Fatalf("err = %v, want flag.ErrHelp", err)
	}
	if strings.Contains(stderr.String(), "secret-token") {
		t.Errorf("help output shows the token from the environment:\n%s", stderr.String())
	}
	if !strings.Contains(stderr.String(), "--idempotency-key") && !strings.Contains(stderr.String(), "-idempotency-key") {
		t.Errorf("help output lacks the flags:\n%s", stderr.String())
	}
}

func TestPublishTransportFlags(t *testing.T) {
	t.Parallel()
	cases := []struct {
		args    []string
		wantErr string
	}{
		{[]string{"--channel", "c", "--exclude-self"}, "--exclude-self is for --transport ws only"},
		{[]string{"--channel", "c", "--transport", "ws", "--exclude-session", "s_1"}, "--exclude-session is for --transport http only"},
		{[]string{"--channel", "c", "--transport", "sse"}, `--transport "sse" is unknown`},
	}
	for _, tc := range cases {
		_, err := parsePublishFlags(tc.args, cli.Env{Getenv: func(string) string { return "" }}, nil, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%q: err = %v, want %q", tc.args, err, tc.wantErr)
		}
	}
}

// TestPublishOverWebSocket publishes with --transport ws against a real
// server: one connection, each message acknowledged before the next,
// printed like the HTTP answers.
func TestPublishOverWebSocket(t *testing.T) {
	t.Parallel()
	url := subTestServer(t)
	env := map[string]string{cli.EnvURL: url, cli.EnvAPIKey: subTestKey}
	var stdout bytes.Buffer
	err := runPublish(context.Background(), []string{"--transport", "ws", "--channel", "c", "--data", `{"n":{{i}}}`, "--count", "3", "--exclude-self"},
		cli.Env{Getenv: func(k string) string { return env[k] }}, nil, &stdout, io.Discard)
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("stdout:\n%s\nwant three acknowledgements", stdout.String())
	}
	for i, l := range lines {
		var res server.PublishResult
		if err := json.Unmarshal([]byte(l), &res); err != nil || res.Channel != "c" || res.Offset != uint64(i+1) || res.Epoch == "" || !strings.HasPrefix(res.ID, "m_") {
			t.Errorf("line %d: %s (%v), want offset %d", i+1, l, err, i+1)
		}
	}
}
