package e2e

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"testing"
	"time"
)

// --- 5. broadcast ---

// broadcastAnswer is the answer of POST /api/broadcast.
type broadcastAnswer struct {
	Results []struct {
		Channel string    `json:"channel"`
		Offset  uint64    `json:"offset"`
		Epoch   string    `json:"epoch"`
		ID      string    `json:"id"`
		Error   *apiError `json:"error"`
	} `json:"results"`
}

// broadcast posts body with the API key; it must be a 200 that reaches
// exactly the channels want, each at offset 1 more than before.
func broadcast(t testing.TB, base string, body map[string]any, want map[string]uint64) {
	t.Helper()
	var ans broadcastAnswer
	code, raw := apiCall(t, http.MethodPost, base+"/api/broadcast", apiKey, body, &ans)
	if code != 200 {
		t.Fatalf("POST /api/broadcast %v: %d %s", body, code, raw)
	}
	got := map[string]uint64{}
	for _, r := range ans.Results {
		if r.Error != nil || r.Epoch == "" || r.ID == "" {
			t.Fatalf("POST /api/broadcast %v: result %+v in %s", body, r, raw)
		}
		got[r.Channel] = r.Offset
	}
	if !maps.Equal(got, want) {
		t.Fatalf("POST /api/broadcast %v reached %v, want %v (%s)", body, got, want, raw)
	}
}

// expectNotice receives the next message of c: event notice on channel at
// offset, with data.
func expectNotice(t testing.TB, who string, c conn, channel string, offset uint64, data string) {
	t.Helper()
	e, err := c.recv(20 * time.Second)
	if err != nil {
		t.Fatalf("%s: waiting for %s offset %d: %v", who, channel, offset, err)
	}
	if e.Event != "notice" || e.Channel != channel || e.Offset != offset || string(e.Data) != data {
		t.Fatalf("%s: got %s %s offset %d %s, want notice %s offset %d %s", who, e.Event, e.Channel, e.Offset, e.Data, channel, offset, data)
	}
}

// TestBroadcastToUsersIsResumable: a broadcast to every connected user
// whose token attributes match a filter lands on each such user's system
// channel — herald.user.<id>, named by herald.connected and the WebSocket
// connected push — live on every transport, in that user's history, and
// again on a resume from before it; users who do not match get nothing.
// A broadcast to named channels is stored in each channel's own log.
func TestBroadcastToUsersIsResumable(t *testing.T) {
	srv := startFlowServer(t, `channels:
  - pattern: "lobby"
    subscribe: ["authenticated"]
    publish: ["system"]
`)
	base := srv.url()
	toks := permTokens(t, map[string][]string{
		"ada": {"--sub", "ada", "--attr", "status=active"},
		"bo":  {"--sub", "bo", "--attr", "status=idle"},
	})

	// Each user learns its system channel when it connects.
	_, adaInfo, _ := openSSEStream(t, base, "channel=lobby", toks["ada"], "", 0)
	adaWS := openWS(t, base, toks["ada"], 0)
	boWS := openWS(t, base, toks["bo"], 0)
	adaCh, boCh := adaInfo.UserChannel, boWS.hello.UserChannel
	if adaCh != "herald.user.ada" || adaWS.hello.UserChannel != adaCh || boCh != "herald.user.bo" {
		t.Fatalf("user channels: herald.connected %q, connected pushes %q and %q; want herald.user.ada and herald.user.bo",
			adaCh, adaWS.hello.UserChannel, boCh)
	}
	adaWS.subscribe(adaCh, nil)
	boWS.subscribe(boCh, nil)

	// Ada listens to hers over every transport, Bo to his over SSE and
	// long polling; each keeps where it started.
	ada, adaFrom := map[string]conn{}, map[string]*mark{}
	for _, d := range drivers {
		c := mustOpen(t, d, base, toks["ada"], []string{adaCh}, nil)
		ada[d.name()], adaFrom[d.name()] = c, c.mark()
	}
	bo := map[string]conn{
		"sse":  mustOpen(t, sseDriver{}, base, toks["bo"], []string{boCh}, nil),
		"poll": mustOpen(t, pollDriver{}, base, toks["bo"], []string{boCh}, nil),
	}

	// To the active users: Ada only.
	const active, idle, everyone = `{"text":"maintenance at 5"}`, `{"text":"we miss you"}`, `{"text":"hello all"}`
	broadcast(t, base, map[string]any{"users": true, "filter": map[string]string{"status": "active"}, "event": "notice", "data": json.RawMessage(active)},
		map[string]uint64{adaCh: 1})
	for name, c := range ada {
		expectNotice(t, "ada over "+name, c, adaCh, 1, active)
	}
	f, err := adaWS.read(20 * time.Second)
	if envs, _ := f.envelopes(); err != nil || len(envs) != 1 || envs[0].Event != "notice" || envs[0].Channel != adaCh || string(envs[0].Data) != active {
		t.Fatalf("ada's raw WebSocket: %s (%v), want the notice", f.raw, err)
	}

	// To the idle users: Bo, whose first message it is — he did not get
	// Ada's.
	broadcast(t, base, map[string]any{"users": true, "filter": map[string]string{"status": "idle"}, "event": "notice", "data": json.RawMessage(idle)},
		map[string]uint64{boCh: 1})
	for name, c := range bo {
		expectNotice(t, "bo over "+name, c, boCh, 1, idle)
	}
	f, err = boWS.read(20 * time.Second)
	if envs, _ := f.envelopes(); err != nil || len(envs) != 1 || envs[0].Channel != boCh || string(envs[0].Data) != idle {
		t.Fatalf("bo's raw WebSocket: %s (%v), want his notice", f.raw, err)
	}

	// To every connected user: both.
	broadcast(t, base, map[string]any{"users": true, "event": "notice", "data": json.RawMessage(everyone)},
		map[string]uint64{adaCh: 2, boCh: 2})
	for name, c := range ada {
		expectNotice(t, "ada over "+name, c, adaCh, 2, everyone)
	}
	for name, c := range bo {
		expectNotice(t, "bo over "+name, c, boCh, 2, everyone)
	}

	// Ada's history holds hers, read with her own token; nobody else's.
	var page historyPage
	if code, raw := apiCall(t, http.MethodGet, base+"/api/history?channel="+adaCh, toks["ada"], nil, &page); code != 200 {
		t.Fatalf("ada's GET /api/history?channel=%s: %d %s", adaCh, code, raw)
	}
	var datas []string
	for _, m := range page.Messages {
		var e envelope
		_ = json.Unmarshal(m, &e)
		datas = append(datas, fmt.Sprintf("%s@%d %s", e.Event, e.Offset, e.Data))
	}
	if want := []string{"notice@1 " + active, "notice@2 " + everyone}; !slices.Equal(datas, want) {
		t.Errorf("ada's history: %v, want %v", datas, want)
	}
	for _, c := range []struct{ who, method, url string }{
		{"bo", http.MethodGet, base + "/api/history?channel=" + adaCh},
		{"ada", http.MethodGet, base + "/api/history?channel=" + boCh},
	} {
		if code, raw := apiCall(t, c.method, c.url, toks[c.who], nil, nil); code != 403 {
			t.Errorf("%s: %s %s: %d %s, want 403", c.who, c.method, c.url, code, raw)
		}
	}
	if code, raw := apiCall(t, http.MethodPost, base+"/api/publish", toks["ada"], map[string]any{"channel": adaCh, "data": 1}, nil); code != 403 {
		t.Errorf("ada publishing on her own system channel: %d %s, want 403 (only the API key publishes there)", code, raw)
	}

	// A resume from before the broadcasts brings them again.
	for _, d := range drivers {
		c := ada[d.name()]
		c.close()
		again := mustOpen(t, d, base, toks["ada"], []string{adaCh}, adaFrom[d.name()])
		expectNotice(t, "ada resuming over "+d.name(), again, adaCh, 1, active)
		expectNotice(t, "ada resuming over "+d.name(), again, adaCh, 2, everyone)
	}

	// To named channels: each stores it in its own log.
	broadcast(t, base, map[string]any{"channels": []string{"a", "b"}, "event": "notice", "data": json.RawMessage(`{"text":"to both"}`)},
		map[string]uint64{"a": 1, "b": 1})
	for _, ch := range []string{"a", "b"} {
		_, envs := history(t, base, ch)
		if len(envs) != 1 || envs[0].Event != "notice" || envs[0].Offset != 1 || string(envs[0].Data) != `{"text":"to both"}` {
			t.Errorf("history of %s: %+v, want the broadcast at offset 1", ch, envs)
		}
	}

	// Mistakes are refused with a reason.
	for _, c := range []struct {
		tok  string
		body map[string]any
		code int
	}{
		{apiKey, map[string]any{"users": true, "channels": []string{"a"}, "data": 1}, 400},
		{apiKey, map[string]any{"channels": []string{"a"}, "filter": map[string]string{"status": "idle"}, "data": 1}, 400},
		{apiKey, map[string]any{"data": 1}, 400},
		{toks["ada"], map[string]any{"users": true, "data": 1}, 403},
	} {
		code, raw := apiCall(t, http.MethodPost, base+"/api/broadcast", c.tok, c.body, nil)
		if e := errorOf(t, raw); code != c.code || e.Code != c.code || e.Message == "" {
			t.Errorf("POST /api/broadcast %v: %d %s, want %d with a message", c.body, code, raw, c.code)
		}
	}
}
