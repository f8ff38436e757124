package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// Secrets never reach a log or an answer: a server at debug level is used
// with every kind of secret — the API key, the JWT secret, a webhook's
// signing secret and the password in its URL, user tokens in headers and
// in ?token= on all three transports, a forged token, a wrong API key —
// through successful and refused requests, a webhook delivery, failed
// deliveries to an endpoint that is down, and a shutdown. Then neither its log nor any answer body holds any of them,
// nor a token's signature.
func TestSecretsNeverReachLogsOrAnswers(t *testing.T) {
	t.Parallel()
	rcv := startReceiver(t, receiverMode{})
	const urlPassword = "pw-hunter2-0123456789"
	hookURL := strings.Replace(rcv.url("/hook"), "http://", "http://ops:"+urlPassword+"@", 1)
	srv := startServer(t, "--config", writeConfig(t, `channels:
  - pattern: "vault_*"
    subscribe: [authenticated]
  - pattern: "staff_*"
    subscribe: [role:staff]
webhooks:
`+webhookEndpoint("audit", hookURL, "    events: [message]\n")+
		webhookEndpoint("down", "http://ops:"+urlPassword+"@"+freeAddr(t)+"/down", "    events: [message]\n    retry: {initial: 100ms, max: 200ms}\n")))
	good, err := permMint("--sub", "alice")
	if err != nil {
		t.Fatal(err)
	}
	forged, err := permMint("--sub", "mallory", "--secret", "not-the-servers-secret-0123456789abcdef")
	if err != nil {
		t.Fatal(err)
	}
	const wrongKey = "e2e-api-key-WRONG-9876543210"
	secrets := map[string]string{
		"API key": apiKey, "JWT secret": jwtSecret, "webhook secret": hookSecret,
		"webhook secret's key": strings.TrimPrefix(hookSecret, "whsec_"), "webhook URL password": urlPassword,
		"user token": good, "user token's signature": good[strings.LastIndex(good, ".")+1:],
		"forged token": forged, "forged token's signature": forged[strings.LastIndex(forged, ".")+1:],
		"wrong API key": wrongKey,
	}
	base := srv.url()
	var answers []string
	keep := func(what string, status int, body []byte) {
		answers = append(answers, fmt.Sprintf("%s (%d): %s", what, status, body))
	}
	get := func(what, path, bearer string, want int) {
		t.Helper()
		resp, body := permReq(t, http.MethodGet, base+path, bearer, nil)
		if resp.StatusCode != want {
			t.Fatalf("%s: %d %s, want %d", what, resp.StatusCode, body, want)
		}
		keep(what, resp.StatusCode, body)
	}
	// A stream opened with ?token=: its first event is enough.
	stream := func(what, path string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			body, _ := io.ReadAll(resp.Body)
			t.Fatalf("%s: %d %s", what, resp.StatusCode, body)
		}
		line, _ := bufio.NewReader(resp.Body).ReadString('\n')
		keep(what, resp.StatusCode, []byte(line))
	}
	q := url.QueryEscape
	stream("SSE with ?token=", "/sse?channel=vault_1&token="+q(good))
	get("long poll with ?token=", "/poll?channel=vault_1&timeout=0&token="+q(good), "", 200)
	ws, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(base, "http")+"/ws?token="+q(good), nil)
	if err != nil {
		t.Fatalf("WebSocket with ?token=: %v", err)
	}
	resp.Body.Close()
	_, first, err := ws.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	keep("WebSocket with ?token=", 101, first)
	ws.Close()

	get("SSE with a forged ?token=", "/sse?channel=vault_1&token="+q(forged), "", 401)
	get("long poll with a forged bearer token", "/poll?channel=vault_1&timeout=0", forged, 401)
	get("SSE to a channel the token does not allow", "/sse?channel=staff_1&token="+q(good), "", 403)
	get("history with a wrong API key", "/api/history?channel=vault_1", wrongKey, 401)
	get("the metrics", "/metrics", "", 200)
	resp2, body := permReq(t, http.MethodPost, base+"/api/publish", wrongKey, map[string]any{"channel": "vault_1", "data": map[string]any{"a": 1}})
	keep("publish with a wrong API key", resp2.StatusCode, body)
	publishN(t, base, "vault_1", 3)
	rcv.waitFor(time.Minute, "the three messages at the webhook", allDelivered("vault_1", 3, "/hook"))
	st := waitWebhook(t, base, "down", "a failed delivery to the endpoint that is down", time.Minute,
		func(st webhookStatus) bool { return st.LastError != nil })
	if !strings.Contains(st.URL, "ops:") || !strings.Contains(st.LastError.Message, "refused") {
		t.Fatalf("endpoint down: %+v, want its URL (password hidden) and a refused connection", st)
	}
	get("the webhooks' status", "/api/webhooks", apiKey, 200)
	resp3, body := permReq(t, http.MethodPost, base+"/api/webhooks/audit/test", apiKey, nil)
	keep("a webhook test", resp3.StatusCode, body)
	if err := srv.terminate(); err != nil {
		t.Fatal(err)
	}

	log := srv.log.String()
	if !strings.Contains(log, "stopped") {
		t.Fatalf("the server's log does not reach its end:\n%s", log)
	}
	for what, secret := range secrets {
		if strings.Contains(log, secret) {
			t.Errorf("the server's log holds the %s", what)
		}
		for _, a := range answers {
			if strings.Contains(a, secret) {
				t.Errorf("an answer holds the %s: %s", what, abbreviate([]byte(a), 300))
			}
		}
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("server log:\n%s", log)
	}
}
