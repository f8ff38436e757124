package e2e

// Herald behind a real reverse proxy: Debian's nginx, configured as many
// deployments are — response buffering on (nginx's default), gzip, and no
// forwarding of the Upgrade and Connection headers, so WebSockets cannot
// pass. SSE and long polling must still work through it: SSE because
// Herald sends X-Accel-Buffering: no, long polling because each answer is
// a plain, complete HTTP response.
//
// The test starts its own nginx as a subprocess, with everything it
// writes inside the test's temporary folder. It needs the nginx binary
// and fails without it (it never skips): make deps (the first step of
// make test) installs it.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func TestThroughABufferingProxy(t *testing.T) {
	bin := findNginx(t) // first: without nginx, fail before starting anything
	srv := startServer(t)
	px := startNginx(t, bin, srv)

	t.Run("websocket_upgrade_fails", func(t *testing.T) {
		h := http.Header{"Authorization": {"Bearer " + apiKey}}
		dialer := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
		ws, resp, err := dialer.Dial("ws://"+px.addr+"/ws", h)
		if err == nil {
			ws.Close()
			t.Fatal("a WebSocket upgrade through a proxy that does not forward Upgrade/Connection succeeded")
		}
		status := "no answer"
		if resp != nil {
			status = resp.Status
			if resp.StatusCode == http.StatusSwitchingProtocols {
				t.Fatalf("the proxy answered %s to a WebSocket upgrade it cannot carry", status)
			}
		}
		t.Logf("through the proxy: %v (%s)", err, status)
		// Control: without the proxy the same upgrade works, so the
		// failure above is the proxy's.
		ws, _, err = dialer.Dial("ws://"+srv.addr+"/ws", h)
		if err != nil {
			t.Fatalf("a WebSocket upgrade straight to herald: %v", err)
		}
		ws.Close()
	})

	t.Run("sse_events_pass_one_by_one", func(t *testing.T) {
		// The control first: the same stream through a location that
		// ignores X-Accel-Buffering is held in nginx's buffers. Without
		// that, the lockstep below would prove nothing about buffering.
		px.expectBuffered(t, "proxy_sse_buffered")

		const ch = "proxy_sse"
		c := mustOpen(t, sseDriver{}, px.url(), apiKey, []string{ch}, nil)
		var slowest time.Duration
		for i := 1; i <= 20; i++ {
			start := time.Now()
			mustPublishRange(t, px.url(), ch, i, i)
			// A generous bound, still under the 15 s heartbeat: a
			// buffering proxy would hold the event until its buffer
			// filled or the stream ended.
			e, err := c.recv(10 * time.Second)
			if err != nil {
				t.Fatalf("message %d of 20 did not come through the proxy alone: %v", i, err)
			}
			expectRange(t, []envelope{e}, ch, uint64(i), uint64(i))
			slowest = max(slowest, time.Since(start))
		}
		if err := c.(*sseConn).in.endErr(); err != nil {
			t.Fatalf("the stream ended: %v", err)
		}
		t.Logf("20 events in lockstep; slowest publish-to-event %s", slowest.Round(time.Millisecond))

		// Reconnect through the proxy with Last-Event-ID (the SSE driver
		// resumes that way): exactly what was missed, then live ones.
		c.drop()
		mustPublishRange(t, px.url(), ch, 21, 30)
		c = resumeConn(t, sseDriver{}, px.url(), apiKey, []string{ch}, c)
		expectRange(t, collectMessages(t, c, 10), ch, 21, 30)
		mustPublish(t, px.url(), ch, `{"i":31}`)
		expectMessage(t, c, ch, 31)
	})

	t.Run("long_polling", func(t *testing.T) {
		const ch = "proxy_poll"
		// A client that waits a little between polls, so answers carry
		// several messages and the drop below falls inside one.
		d := pollDriver{pause: 20 * time.Millisecond}
		c := mustOpen(t, d, px.url(), apiKey, []string{ch}, nil)
		wait := goPublishRange(t, px.url(), ch, 1, 300)
		envs := collectMessages(t, c, 300)
		if err := wait(); err != nil {
			t.Fatal(err)
		}
		expectRange(t, envs, ch, 1, 300)

		// Drop the session halfway through the next batch; resume from
		// the cursor alone (no session) while publishing goes on.
		wait = goPublishRange(t, px.url(), ch, 301, 400)
		envs = collectMessages(t, c, 50)
		c.drop()
		m := c.mark()
		c = resumeConn(t, d, px.url(), apiKey, []string{ch}, c)
		envs = append(envs, collectMessages(t, c, 50)...)
		if err := wait(); err != nil {
			t.Fatal(err)
		}
		expectRange(t, envs, ch, 301, 400)
		t.Logf("dropped after 350 and resumed from %v", m)
		mustPublish(t, px.url(), ch, `{"i":401}`)
		expectMessage(t, c, ch, 401)
	})

	t.Run("bodies_larger_than_the_proxy_buffers", func(t *testing.T) {
		// nginx's worker writes what does not fit its memory buffers to
		// the temporary folders: a publish body over 16 kB to
		// client_body_temp_path, and an answer of ~300 kB to a client that
		// reads slowly to proxy_temp_path. Both must pass whole.
		const ch, n = "proxy_poll_big", 200
		q := url.Values{"channel": {ch}, "timeout": {"0"}}
		first := rawPoll(t, px.url(), q, 0)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for i := 1; i <= n; i++ {
			pad := strings.Repeat("x", 1200)
			if i == 1 {
				pad = strings.Repeat("x", 40<<10)
			}
			if _, _, err := publish(ctx, px.url(), ch, fmt.Sprintf(`{"i":%d,"pad":%q}`, i, pad), ""); err != nil {
				t.Fatal(err)
			}
		}
		q.Set("cursor", first.Cursor)
		q.Set("session", first.Session)
		ans := rawPoll(t, px.url(), q, 500*time.Millisecond)
		envs := make([]envelope, len(ans.Messages))
		for i, m := range ans.Messages {
			if err := json.Unmarshal(m, &envs[i]); err != nil {
				t.Fatalf("message %d: %v", i+1, err)
			}
		}
		checkExactlyOnceInOrder(t, envs, n)
		var big struct {
			Data struct{ Pad string }
		}
		if err := json.Unmarshal(ans.Messages[0], &big); err != nil || len(big.Data.Pad) != 40<<10 {
			t.Fatalf("message 1 lost its 40 kB pad (%d bytes, %v)", len(big.Data.Pad), err)
		}
		// The warnings say the temporary folders were used: otherwise this
		// test no longer covers them.
		log := px.errorLog()
		for _, what := range []string{"a client request body is buffered to a temporary file",
			"an upstream response is buffered to a temporary file"} {
			if !strings.Contains(log, what) {
				t.Errorf("nginx did not log %q:\n%s", what, lastLines(log, 20))
			}
		}
	})
}

// rawPoll sends GET /poll with the API key and decodes a 200 answer. With
// a stall, the client is a slow reader: a small socket receive buffer, and
// it reads nothing of the body for that long after the headers.
func rawPoll(t *testing.T, base string, q url.Values, stall time.Duration) pollAnswer {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/poll?"+q.Encode(), nil)
	req.Header.Set("Authorization", "Bearer "+apiKey)
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	if stall > 0 {
		dialer.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = setRcvBuf(fd, 4096)
			})
			return errors.Join(err, serr)
		}
	}
	client := &http.Client{Timeout: 40 * time.Second, Transport: &http.Transport{
		DialContext: dialer.DialContext, DisableCompression: true}}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	time.Sleep(stall)
	raw, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /poll?%s: %d %s (%v)", q.Encode(), resp.StatusCode, abbreviate(raw, 400), err)
	}
	var ans pollAnswer
	if err := json.Unmarshal(raw, &ans); err != nil || ans.Cursor == "" || ans.Session == "" {
		t.Fatalf("GET /poll answered %s (%v): want messages, a cursor and a session", abbreviate(raw, 400), err)
	}
	return ans
}

// nginxProxy is one nginx process in front of herald.
type nginxProxy struct {
	dir    string
	addr   string
	srvURL string // herald's own address, past the proxy
	cmd    *exec.Cmd
	out    *syncBuffer
	exited chan struct{}
}

func (p *nginxProxy) url() string { return "http://" + p.addr }

func (p *nginxProxy) errorLog() string {
	b, _ := os.ReadFile(filepath.Join(p.dir, "error.log"))
	return string(b)
}

// findNginx returns the nginx binary. Debian puts it in /usr/sbin, which
// is not on a normal user's PATH.
func findNginx(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
		return "/usr/sbin/nginx"
	}
	t.Fatal("nginx is not installed (not on PATH, not /usr/sbin/nginx). This test runs Herald behind a real nginx " +
		"and must not be skipped: run make deps (or make test, which runs it first) to install it.")
	return ""
}

// nginxConf is the proxy's configuration: %[1]s is the test's folder,
// %[2]s the listen address, %[3]s herald's address, %[4]s the user line.
//
// Every path nginx writes is in the test's folder: pid file, logs and the
// five temporary folders (nginx creates those at start-up), so nothing
// touches /var/lib/nginx or /var/log/nginx and parallel runs do not meet.
const nginxConf = `# Written by TestThroughABufferingProxy (e2e/proxy_test.go).
%[4]s
worker_processes 1;
daemon off;
pid "%[1]s/nginx.pid";
error_log "%[1]s/error.log" info;

events {
    worker_connections 256;
}

http {
    access_log "%[1]s/access.log";
    client_body_temp_path "%[1]s/client_body_temp";
    proxy_temp_path "%[1]s/proxy_temp";
    fastcgi_temp_path "%[1]s/fastcgi_temp";
    uwsgi_temp_path "%[1]s/uwsgi_temp";
    scgi_temp_path "%[1]s/scgi_temp";

    # Compression for the types Herald sends, as many sites set it up.
    # This is where this nginx holds SSE events: with proxy_buffering on,
    # the body goes to the gzip filter without flushes and waits until a
    # buffer fills. Herald's X-Accel-Buffering: no switches the response
    # to unbuffered proxying, where each chunk Herald writes is flushed
    # through. (Without gzip, nginx 1.22 with an HTTP/1.1 upstream passes
    # each chunk at once, header or not, and the control location could
    # not show that the header matters.)
    gzip on;
    gzip_types text/event-stream application/json;

    server {
        # A small socket send buffer: on loopback the kernel grows it to
        # megabytes, and a slow client would never make nginx spill an
        # answer to proxy_temp_path as it does on a real network.
        listen %[2]s sndbuf=16k;

        # A typical proxy: HTTP/1.1 upstream, responses buffered (nginx's
        # default), and no "proxy_set_header Upgrade/Connection" lines, so
        # a WebSocket upgrade cannot pass.
        location / {
            proxy_pass http://%[3]s;
            proxy_http_version 1.1;
            proxy_buffering on;
        }

        # The control: the same, but deaf to Herald's X-Accel-Buffering:
        # no. What passes here only when a buffer fills or the response
        # ends shows that the proxy above really buffers.
        location /buffered/ {
            proxy_pass http://%[3]s/;
            proxy_http_version 1.1;
            proxy_buffering on;
            proxy_ignore_headers X-Accel-Buffering;
        }
    }
}
`

// startNginx runs nginx (the binary bin) in the foreground on a free loopback port, in
// front of upstream, and waits until it answers through to herald. It is
// stopped at the end of the test.
func startNginx(t *testing.T, bin string, upstream *server) *nginxProxy {
	t.Helper()
	p := &nginxProxy{dir: t.TempDir(), addr: freeAddr(t), srvURL: upstream.url(), out: &syncBuffer{}, exited: make(chan struct{})}
	// Run as root, nginx's master switches its workers to an unprivileged
	// user (nobody), and the workers are what write client_body_temp_path
	// and proxy_temp_path. Those are inside t.TempDir(), whose folders are
	// 0700 and owned by root, so nobody cannot even reach them: a publish
	// body over 16 kB then gets a 500 and the error log says
	// open() ".../client_body_temp/0000000001" failed (13: Permission
	// denied). (nginx chowns the temp folders it creates to the worker
	// user, but not their parents.) Keeping the workers as root is the
	// narrowest fix for a throwaway proxy on loopback; the alternative,
	// making t.TempDir() and its parent world-traversable, would open the
	// test's other files to every local user. Run as anyone else, nginx
	// keeps that user for its workers (it ignores "user" with a warning),
	// so the line is only written for root.
	userLine := ""
	if os.Geteuid() == 0 {
		userLine = "user root;"
	}
	conf := filepath.Join(p.dir, "nginx.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, nginxConf, p.dir, p.addr, upstream.addr, userLine), 0o600); err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin, "-p", p.dir, "-c", conf)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = childProcAttr()
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() { p.stop(t) })
	p.waitReady(t)
	return p
}

// waitReady polls herald's /readyz through nginx until it answers 200
// from nginx.
func (p *nginxProxy) waitReady(t *testing.T) {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(15 * time.Second)
	var last string
	for delay := 5 * time.Millisecond; ; delay = min(delay*2, 200*time.Millisecond) {
		resp, err := client.Get(p.url() + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 && strings.HasPrefix(resp.Header.Get("Server"), "nginx") {
				return
			}
			last = fmt.Sprintf("%s (Server: %q)", resp.Status, resp.Header.Get("Server"))
		} else {
			last = err.Error()
		}
		select {
		case <-p.exited:
			t.Fatalf("nginx exited during start-up: %v\n%s\nerror.log:\n%s", p.cmd.ProcessState, p.out.String(), p.errorLog())
		case <-time.After(delay):
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx not answering after 15s (last: %s)\n%s\nerror.log:\n%s", last, p.out.String(), p.errorLog())
		}
	}
}

// stop asks nginx for a fast shutdown (SIGTERM: it does not wait for open
// streams, as SIGQUIT would) and waits; after 10 s it kills the process
// group.
func (p *nginxProxy) stop(t *testing.T) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Errorf("nginx did not stop within 10s of SIGTERM; killing it")
		_ = killChild(p.cmd.Process)
		<-p.exited
	}
	if t.Failed() {
		t.Logf("nginx output:\n%s\nnginx error.log:\n%s", p.out.String(), lastLines(p.errorLog(), 40))
	}
}

// expectBuffered opens an SSE stream through the /buffered/ location,
// publishes a message on it, and checks that no byte of the stream
// reaches the client within a second (nginx may hold back the response
// headers too).
func (p *nginxProxy) expectBuffered(t *testing.T, channel string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.url()+"/buffered/sse?channel="+channel, nil)
	req.Header.Set("Authorization", "Bearer "+apiKey)
	got := make(chan string, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			got <- err.Error()
			return
		}
		defer resp.Body.Close()
		b := make([]byte, 64)
		n, err := resp.Body.Read(b)
		got <- fmt.Sprintf("%s, then %q (%v)", resp.Status, b[:n], err)
	}()
	waitSubscribers(t, p.srvURL, channel, 1)
	mustPublish(t, p.url(), channel, `{"i":1}`)
	select {
	case what := <-got:
		t.Fatalf("control: an SSE stream through a location that ignores X-Accel-Buffering was not held: %s; "+
			"this proxy does not buffer, so the test cannot tell what the header does", what)
	case <-time.After(time.Second):
	}
	cancel()
	<-got
}
