package longpoll

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldrt/herald/server"
)

// waitCount waits until c (the handler's parks or left) reaches n.
func (f *fixture) waitCount(t *testing.T, what string, c *atomic.Uint64, n uint64) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for c.Load() < n {
		select {
		case <-f.h.changed:
		case <-deadline:
			t.Fatalf("%d polls %s, want %d", c.Load(), what, n)
		}
	}
}

// waitParked waits until n polls have been parked.
func (f *fixture) waitParked(t *testing.T, n uint64) {
	t.Helper()
	f.waitCount(t, "parked", &f.h.parks, n)
}

// rawPoll writes a GET /poll on conn.
func rawPoll(t *testing.T, conn net.Conn, q url.Values, extra string) {
	t.Helper()
	fmt.Fprintf(conn, "GET /poll?%s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n%s\r\n", q.Encode(), apiKey, extra)
}

func readAnswer(t *testing.T, br *bufio.Reader) (answerBody, *http.Response) {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading an answer: %v", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var a answerBody
	if err := json.Unmarshal(raw, &a); err != nil {
		t.Fatalf("answer %d %q: %v", resp.StatusCode, raw, err)
	}
	return a, resp
}

func TestParkedPollsAreAnsweredOnTheirOwnKeepAliveConnection(t *testing.T) {
	t.Parallel()
	f := newFixture(t, server.Config{CORS: server.CORSConfig{AllowedOrigins: []string{"https://app.example"}}}, Options{})
	// One connection for every poll: count the dials.
	var dials atomic.Int32
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}}}
	first, _, _ := f.poll(t, apiKey, url.Values{"channel": {"k"}, "timeout": {"0"}})
	cursor := first.Cursor
	for i := 1; i <= 5; i++ {
		got := make(chan *http.Response, 1)
		body := make(chan answerBody, 1)
		go func() {
			req, _ := http.NewRequest(http.MethodGet, f.http.URL+"/poll?"+url.Values{"channel": {"k"}, "cursor": {cursor}, "timeout": {"30"}}.Encode(), nil)
			req.Header.Set("Authorization", "Bearer "+apiKey)
			req.Header.Set("Origin", "https://app.example")
			resp, err := client.Do(req)
			if err != nil {
				t.Error(err)
				got <- nil
				return
			}
			defer resp.Body.Close()
			var a answerBody
			if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
				t.Error(err)
			}
			got <- resp
			body <- a
		}()
		f.waitParked(t, uint64(i))
		f.publish(t, "k", 1)
		resp := <-got
		if resp == nil {
			t.FailNow()
		}
		a := <-body
		if envs := a.envelopes(t); offsets(envs) != fmt.Sprint(i) {
			t.Fatalf("poll %d got offsets %s", i, offsets(envs))
		}
		for h, want := range map[string]string{
			"Content-Type":                "application/json",
			"Cache-Control":               "no-store",
			"Access-Control-Allow-Origin": "https://app.example",
		} {
			if got := resp.Header.Get(h); got != want {
				t.Errorf("poll %d: %s %q, want %q", i, h, got, want)
			}
		}
		if resp.Header.Get("Date") == "" || resp.ContentLength <= 0 {
			t.Errorf("poll %d: Date %q, Content-Length %d", i, resp.Header.Get("Date"), resp.ContentLength)
		}
		cursor = a.Cursor
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("%d connections for 5 polls, want one kept alive", n)
	}
	// A parked poll that nothing answers ends at its timeout, empty.
	a, _, _ := f.poll(t, apiKey, url.Values{"channel": {"k"}, "cursor": {cursor}, "timeout": {"1"}})
	if len(a.Messages) != 0 || a.Cursor != cursor {
		t.Errorf("timed out poll: %d messages, cursor changed %v", len(a.Messages), a.Cursor != cursor)
	}
}

func TestAClientThatLeavesAParkedPollMissesNothing(t *testing.T) {
	t.Parallel()
	f := newFixture(t, server.Config{}, Options{})
	first, _, _ := f.poll(t, apiKey, url.Values{"channel": {"l"}, "timeout": {"0"}})
	conn, err := net.Dial("tcp", strings.TrimPrefix(f.http.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	rawPoll(t, conn, url.Values{"channel": {"l"}, "cursor": {first.Cursor}, "timeout": {"30"}}, "")
	f.waitParked(t, 1)
	conn.Close()                         // the client leaves while its poll waits
	f.waitCount(t, "left", &f.h.left, 1) // the watcher has seen it go
	f.publish(t, "l", 2)
	// The next poll, from the cursor it had, gets both messages.
	a, _, _ := f.poll(t, apiKey, url.Values{"channel": {"l"}, "cursor": {first.Cursor}, "timeout": {"0"}})
	if got := offsets(a.envelopes(t)); got != "1,2" {
		t.Fatalf("after leaving a parked poll: offsets %q, want 1,2", got)
	}
}

func TestPipelinedPollsAreAnsweredInOrder(t *testing.T) {
	t.Parallel()
	f := newFixture(t, server.Config{}, Options{})
	first, _, _ := f.poll(t, apiKey, url.Values{"channel": {"p"}, "timeout": {"0"}})
	for _, whileParked := range []bool{false, true} {
		t.Run(fmt.Sprintf("sent while parked=%v", whileParked), func(t *testing.T) {
			conn, err := net.Dial("tcp", strings.TrimPrefix(f.http.URL, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			br := bufio.NewReader(conn)
			parks := f.h.parks.Load()
			waiting := url.Values{"channel": {"p"}, "cursor": {first.Cursor}, "timeout": {"30"}}
			second := url.Values{"channel": {"q"}, "timeout": {"0"}}
			if whileParked {
				rawPoll(t, conn, waiting, "")
				f.waitParked(t, parks+1)
				rawPoll(t, conn, second, "")
			} else {
				// Both in one write: the second waits in net/http's buffer.
				var b strings.Builder
				fmt.Fprintf(&b, "GET /poll?%s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", waiting.Encode(), apiKey)
				fmt.Fprintf(&b, "GET /poll?%s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", second.Encode(), apiKey)
				conn.Write([]byte(b.String()))
			}
			f.publish(t, "p", 1)
			a, _ := readAnswer(t, br)
			if len(a.Messages) != 1 {
				t.Fatalf("the waiting poll got %d messages", len(a.Messages))
			}
			first = a
			if b, _ := readAnswer(t, br); b.Session == "" || b.Session == a.Session {
				t.Fatalf("the pipelined poll: %+v", b)
			}
		})
	}
}
