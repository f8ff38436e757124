package app

import (
	"bufio"
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/heraldrt/herald/store"
)

const testKey = "app-test-api-key-0123456789"

// testConfig is a server on a free loopback port with its data in memory.
func testConfig() Config {
	var c Config
	c.Addr = "127.0.0.1:0"
	c.Server.APIKey = testKey
	c.Store.InMemory = true
	return c
}

func apiRequest(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+testKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// The App wires engine, core, API and transports from one Config: a
// message published through the API reaches an SSE stream; Shutdown
// tells the stream to reconnect, closes the listener and the engine.
func TestAppServesAndStopsInOrder(t *testing.T) {
	t.Parallel()
	a, err := New(testConfig(), slog.New(slog.NewTextHandler(t.Output(), nil)))
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + a.Addr()
	req, _ := http.NewRequest(http.MethodGet, base+"/sse?channel=news", nil)
	req.Header.Set("Authorization", "Bearer "+testKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /sse: %v %v", resp, err)
	}
	defer resp.Body.Close()
	events := bufio.NewScanner(resp.Body)
	next := func(want string) {
		t.Helper()
		for events.Scan() {
			if strings.HasPrefix(events.Text(), "event: "+want) {
				return
			}
		}
		t.Fatalf("the stream ended before event %s: %v", want, events.Err())
	}
	next("herald.connected")
	if code, body := apiRequest(t, http.MethodPost, base+"/api/publish", `{"channel":"news","event":"story","data":1}`); code != 200 {
		t.Fatalf("publish: %d %s", code, body)
	}
	next("story")

	if err := a.Shutdown(); err != nil {
		t.Fatal(err)
	}
	next("herald.disconnect")
	if _, err := net.DialTimeout("tcp", a.Addr(), time.Second); err == nil {
		t.Fatal("the listener still accepts after Shutdown")
	}
	if _, err := a.engine.Append(context.Background(), "news", store.Record{Payload: []byte("x")}); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("append after Shutdown: %v, want the engine closed", err)
	}
	if err := a.Shutdown(); err != nil {
		t.Fatalf("a second Shutdown: %v", err)
	}
}

func TestRunStopsWhenItsContextEnds(t *testing.T) {
	t.Parallel()
	a, err := New(testConfig(), slog.New(slog.NewTextHandler(t.Output(), nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	if code, body := apiRequest(t, http.MethodGet, "http://"+a.Addr()+"/readyz", ""); code != 200 {
		t.Fatalf("readyz: %d %s", code, body)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

func TestNewRefusesABadConfigAndOpensNothing(t *testing.T) {
	t.Parallel()
	c := testConfig()
	c.Server.APIKey = "short"
	c.Store.InMemory = false
	c.Store.Dir = t.TempDir() + "/never"
	if _, err := New(c, nil); err == nil || !strings.Contains(err.Error(), "api_key is 5 characters long") {
		t.Fatalf("New: %v, want the short key named", err)
	}
	if _, err := os.Stat(c.Store.Dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the data folder exists after a refused start: %v", err)
	}
}
