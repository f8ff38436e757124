package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// What an unauthenticated client can cost the server is bounded before
// any credential is looked at: a connection that sends its headers too
// slowly is closed after limits.read_header_timeout, headers over 64 KiB
// get 431, a 4 MiB body without credentials is refused (401 before it is
// read, or 413 at limits.max_body_bytes), and forged tokens past the per-IP rate are refused before
// their signature is checked (server test). Meanwhile a well-behaved
// client is served.
func TestUnauthenticatedAbuseIsBoundedBeforeAuthentication(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--config", writeConfig(t, "limits:\n  read_header_timeout: 1s\n  max_body_bytes: 131072\n"))
	addr := srv.addr

	// 100 connections that send half a request line and stall.
	var conns []net.Conn
	for range 100 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, "GET /sse?channel=a HTTP/1.1\r\nHost: x\r\n"); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	// A well-behaved client meanwhile.
	publishN(t, srv.url(), "ok", 3)
	var wg sync.WaitGroup
	closed := make(chan time.Duration, len(conns))
	start := time.Now()
	for _, c := range conns {
		wg.Go(func() {
			_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
			_, err := io.Copy(io.Discard, c) // ends when the server closes it
			if err != nil {
				t.Errorf("a stalled connection was not closed by the server: %v", err)
				return
			}
			closed <- time.Since(start)
		})
	}
	wg.Wait()
	close(closed)
	var slowest time.Duration
	for d := range closed {
		slowest = max(slowest, d)
	}

	// Headers over the limit: 431.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /readyz HTTP/1.1\r\nHost: x\r\nX-Pad: %s\r\n\r\n", strings.Repeat("a", 100<<10))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("headers of 100 KiB: %v %v, want 431", resp, err)
	}

	// A body over the limit, with no credentials.
	big := bytes.Repeat([]byte("x"), 4<<20)
	req, _ := http.NewRequest(http.MethodPost, srv.url()+"/api/publish", bytes.NewReader(big))
	req.Header.Set("Content-Type", "application/json")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		// The server may close the connection once it has refused the
		// body, before the client has sent it all.
		if !strings.Contains(err.Error(), "reset") && !strings.Contains(err.Error(), "broken pipe") {
			t.Fatalf("a 4 MiB body: %v", err)
		}
	} else {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge && resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("a 4 MiB body without credentials: %d %s, want 413 or 401", resp.StatusCode, body)
		}
	}
	if _, envs := history(t, srv.url(), "ok"); len(envs) != 3 {
		t.Fatalf("the well-behaved client's messages: %d, want 3", len(envs))
	}
	t.Logf("100 stalled connections closed by the server within %s (read_header_timeout 1s)", slowest.Round(10*time.Millisecond))
}
