package app

import (
	"bufio"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/natstest"
)

// natsConfig is a server on a free loopback port whose engine is the
// NATS server at url.
func natsConfig(url string) Config {
	c := testConfig()
	c.Store.InMemory = false
	c.Engine.NATS = &NATSConfig{URLs: []string{url}, ConnectTimeout: 10 * time.Second}
	return c
}

// Two Apps on one NATS server are two nodes of one cluster: a stream on
// one gets what is published on the other, offsets run on across them,
// and a cursor minted by one is taken by the other. /readyz answers 503
// naming the engine while NATS is away and ready once it is back, and
// publishing works again.
func TestTwoNodesShareOneNATS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ns := natstest.Start(t, dir, -1)
	t.Cleanup(func() { ns.Shutdown() }) // after the nodes' own shutdown
	url, port := ns.ClientURL(), ns.Addr().(*net.TCPAddr).Port
	logger := slog.New(slog.NewTextHandler(t.Output(), nil))
	a, err := New(natsConfig(url), logger)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown()
	b, err := New(natsConfig(url), logger)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Shutdown()
	baseA, baseB := "http://"+a.Addr(), "http://"+b.Addr()

	req, _ := http.NewRequest(http.MethodGet, baseB+"/sse?channel=news", nil)
	req.Header.Set("Authorization", "Bearer "+testKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /sse on B: %v %v", resp, err)
	}
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	nextID := func(event string) string {
		t.Helper()
		id, match := "", false
		for lines.Scan() { // an event's lines, then a blank one
			switch l := lines.Text(); {
			case l == "event: "+event:
				match = true
			case strings.HasPrefix(l, "id: "):
				id = l[4:]
			case l == "" && match:
				return id
			}
		}
		t.Fatalf("B's stream ended before %s: %v", event, lines.Err())
		return ""
	}
	nextID("herald.connected")
	cursor := ""
	for i, base := range []string{baseA, baseB, baseA} {
		code, body := apiRequest(t, http.MethodPost, base+"/api/publish", fmt.Sprintf(`{"channel":"news","event":"story","data":%d}`, i))
		if code != 200 || !strings.Contains(body, fmt.Sprintf(`"offset":%d`, i+1)) {
			t.Fatalf("publish %d: %d %s, want offset %d", i, code, body, i+1)
		}
		cursor = nextID("story")
	}
	// B's cursor resumes on A: only what came after it.
	req, _ = http.NewRequest(http.MethodGet, baseA+"/sse?channel=news", nil)
	req.Header.Set("Authorization", "Bearer "+testKey)
	req.Header.Set("Last-Event-ID", cursor)
	resp2, err := http.DefaultClient.Do(req)
	if err != nil || resp2.StatusCode != 200 {
		t.Fatalf("resume on A: %v %v", resp2, err)
	}
	defer resp2.Body.Close()
	if code, body := apiRequest(t, http.MethodPost, baseB+"/api/publish", `{"channel":"news","event":"late","data":5}`); code != 200 {
		t.Fatalf("publish: %d %s", code, body)
	}
	resumed := bufio.NewScanner(resp2.Body)
	var events []string
	for resumed.Scan() && !strings.HasSuffix(strings.Join(events, ","), "late") {
		if l := resumed.Text(); strings.HasPrefix(l, "event: ") && l != "event: herald.connected" {
			events = append(events, l[7:])
		}
	}
	if strings.Join(events, ",") != "late" {
		t.Fatalf("resumed on A with B's cursor %q: %v, want only late", cursor, events)
	}

	// NATS away: both nodes say they cannot serve; back: ready again.
	ns.Shutdown()
	ns.WaitForShutdown()
	waitReady(t, baseA, http.StatusServiceUnavailable, `"engine":"not connected to NATS`)
	ns = natstest.Start(t, dir, port)
	waitReady(t, baseA, http.StatusOK, `"status":"ready"`)
	if code, body := apiRequest(t, http.MethodPost, baseA+"/api/publish", `{"channel":"news","event":"story","data":9}`); code != 200 || !strings.Contains(body, `"offset":5`) {
		t.Fatalf("publish after NATS came back: %d %s, want offset 5", code, body)
	}
	var page struct {
		Messages []struct {
			Offset uint64 `json:"offset"`
		} `json:"messages"`
	}
	_, body := apiRequest(t, http.MethodGet, baseB+"/api/history?channel=news", "")
	if err := json.Unmarshal([]byte(body), &page); err != nil || len(page.Messages) != 5 || page.Messages[4].Offset != 5 {
		t.Fatalf("history on B: %s", body)
	}
}

// waitReady polls GET /readyz until it answers code with a body holding
// want (a status is polled: there is no event to await).
func waitReady(t *testing.T, base string, code int, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			var b strings.Builder
			_, _ = bufio.NewReader(resp.Body).WriteTo(&b)
			resp.Body.Close()
			if resp.StatusCode == code && strings.Contains(b.String(), want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("GET /readyz: %d %s, want %d with %s", resp.StatusCode, b.String(), code, want)
			}
		} else if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A node whose NATS does not answer within engine.nats.connect_timeout
// does not start, and says which servers it tried.
func TestNoNATSNoStart(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "nats://" + ln.Addr().String()
	ln.Close() // nothing listens there now
	c := natsConfig(url)
	c.Engine.NATS.ConnectTimeout = 500 * time.Millisecond
	a, err := New(c, slog.New(slog.NewTextHandler(t.Output(), nil)))
	if err == nil {
		a.Shutdown()
		t.Fatal("a node started without NATS")
	}
	if want := "engine nats: jetstream: no NATS server answers at " + url; !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("err = %v, want it to start with %q", err, want)
	}
}
