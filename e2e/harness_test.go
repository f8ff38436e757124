package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	apiKey    = "e2e-api-key-0123456789abcdef"
	jwtSecret = "e2e-jwt-secret-0123456789abcdef0123456789"
)

// heraldBin is the binary under test, built once by TestMain;
// receiverBin the webhook receiver the webhook tests send to
// (internal/hookreceiver).
var heraldBin, receiverBin string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "herald-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	heraldBin = filepath.Join(dir, "herald")
	receiverBin = filepath.Join(dir, "hookreceiver")
	natsBin = filepath.Join(dir, "nats-server")
	// The binary under test is built with the race detector;
	// HERALD_E2E_NORACE=1 builds it plain, to measure what a production
	// build does. The webhook receiver and the NATS server of the cluster
	// tests are test equipment, not under test: built plain.
	race := []string{"-race"}
	if os.Getenv("HERALD_E2E_NORACE") != "" {
		race = nil
	}
	for _, b := range []struct {
		out  string
		args []string
	}{
		{heraldBin, append(race, "../cmd/herald")},
		{receiverBin, []string{"./internal/hookreceiver"}},
		{natsBin, []string{"github.com/nats-io/nats-server/v2"}},
	} {
		build := exec.Command("go", append([]string{"build", "-o", b.out}, b.args...)...)
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n", filepath.Base(b.out), err)
			return 1
		}
	}
	return m.Run()
}

// freeAddr returns a loopback address with a port nothing listens on.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// server is one herald serve process.
type server struct {
	t       testing.TB
	addr    string
	dataDir string
	args    []string
	// https: the server serves TLS (its certificate is the test's own,
	// not verified: loopback only).
	https bool
	// launch, when set, makes the command that runs herald with args
	// (a test that runs it inside a namespace of its own).
	launch func(args []string) *exec.Cmd
	cmd    *exec.Cmd
	log    *syncBuffer
	exited chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startServer runs herald serve on a fresh loopback port and data folder
// and waits until it is ready. Extra args are added to the command line.
func startServer(t testing.TB, args ...string) *server {
	t.Helper()
	s := &server{t: t, addr: freeAddr(t), dataDir: t.TempDir(), args: args}
	s.start()
	t.Cleanup(s.stop)
	return s
}

func (s *server) url() string {
	if s.https {
		return "https://" + s.addr
	}
	return "http://" + s.addr
}

// client is an HTTP client for the server: for a TLS server, one that
// takes its self-signed certificate.
func (s *server) client() *http.Client {
	if !s.https {
		return http.DefaultClient
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}} // the test's own certificate, on loopback
}

func (s *server) start() {
	s.t.Helper()
	args := append([]string{"serve", "--addr", s.addr, "--data-dir", s.dataDir,
		"--api-key", apiKey, "--jwt-secret", jwtSecret, "--log-level", "debug"}, s.args...)
	if s.launch != nil {
		s.cmd = s.launch(args)
	} else {
		s.cmd = exec.Command(heraldBin, args...)
	}
	s.cmd.Env = cleanEnv()
	s.log = &syncBuffer{}
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) {
		_ = cmd.Wait()
		close(exited)
	}(s.cmd, s.exited)
	s.waitReady()
}

// waitReady polls /readyz until the server answers 200.
func (s *server) waitReady() {
	s.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for delay := 5 * time.Millisecond; ; delay = min(delay*2, 200*time.Millisecond) {
		resp, err := s.client().Get(s.url() + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case <-s.exited:
			s.t.Fatalf("herald exited during start-up:\n%s", s.log.String())
		case <-time.After(delay):
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("herald not ready after 30s:\n%s", s.log.String())
		}
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (s *server) kill() {
	s.t.Helper()
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.exited
}

// restart starts the server again on the same address and data folder.
func (s *server) restart() {
	s.t.Helper()
	s.start()
}

// terminate sends SIGTERM and waits for a clean exit.
func (s *server) terminate() error {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
		return fmt.Errorf("herald did not stop within 30s after SIGTERM")
	}
	if code := s.cmd.ProcessState.ExitCode(); code != 0 {
		return fmt.Errorf("herald exited with %d:\n%s", code, s.log.String())
	}
	return nil
}

func (s *server) stop() {
	select {
	case <-s.exited:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.exited
	if s.t.Failed() {
		s.t.Logf("herald log:\n%s", lastLines(s.log.String(), 60))
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// cleanEnv is the environment without HERALD_* variables, so tests see
// only what they set.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HERALD_") {
			env = append(env, kv)
		}
	}
	return env
}

// publishResult is the acknowledgement of POST /api/publish.
type publishResult struct {
	Channel   string `json:"channel"`
	Offset    uint64 `json:"offset"`
	Epoch     string `json:"epoch"`
	ID        string `json:"id"`
	Duplicate bool   `json:"duplicate"`
}

// publish posts one message with the API key. A transport error is
// returned as is (the server may be down).
func publish(ctx context.Context, base, channel, data, idemKey string) (publishResult, int, error) {
	body, _ := json.Marshal(map[string]any{"channel": channel, "data": json.RawMessage(data), "idempotency_key": idemKey})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/publish", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+apiKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return publishResult{}, 0, err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return publishResult{}, resp.StatusCode, fmt.Errorf("publish: %d %s", resp.StatusCode, raw)
	}
	var res publishResult
	if err := json.Unmarshal(raw, &res); err != nil {
		return publishResult{}, resp.StatusCode, fmt.Errorf("publish answer %s: %w", raw, err)
	}
	return res, 200, nil
}

// publishRetrying publishes with an idempotency key and retries transport
// errors and 5xx until ctx ends, as a backend does across a server
// restart. The key makes the retries safe.
func publishRetrying(ctx context.Context, base, channel, data, key string) (publishResult, error) {
	for delay := 10 * time.Millisecond; ; delay = min(delay*2, 200*time.Millisecond) {
		res, code, err := publish(ctx, base, channel, data, key)
		if err == nil {
			return res, nil
		}
		if code >= 400 && code < 500 {
			return res, err
		}
		select {
		case <-ctx.Done():
			return res, fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-time.After(delay):
		}
	}
}

// envelope is the message envelope of DESIGN §2.
type envelope struct {
	Channel string          `json:"channel"`
	Offset  uint64          `json:"offset"`
	Epoch   string          `json:"epoch"`
	ID      string          `json:"id"`
	Event   string          `json:"event"`
	Data    json.RawMessage `json:"data"`
}

type historyPage struct {
	Channel  string            `json:"channel"`
	Epoch    string            `json:"epoch"`
	Head     uint64            `json:"head"`
	Messages []json.RawMessage `json:"messages"`
	Next     uint64            `json:"next"`
	Reset    bool              `json:"reset"`
}

// history reads a channel's whole kept history through the API.
func history(t testing.TB, base, channel string) (historyPage, []envelope) {
	t.Helper()
	var all []envelope
	var first historyPage
	since := uint64(0)
	for i := 0; ; i++ {
		req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("%s/api/history?channel=%s&since=%d&limit=1000", base, channel, since), nil)
		req.Header.Set("Authorization", "Bearer "+apiKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var page historyPage
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("history: %d %v", resp.StatusCode, err)
		}
		if i == 0 {
			first = page
		}
		for _, m := range page.Messages {
			var env envelope
			if err := json.Unmarshal(m, &env); err != nil {
				t.Fatalf("history message %s: %v", m, err)
			}
			all = append(all, env)
		}
		if len(page.Messages) == 0 {
			return first, all
		}
		since = page.Next
	}
}

// lineReader collects a subprocess's stdout lines.
type lineReader struct {
	mu    sync.Mutex
	lines []string
	more  chan struct{}
	done  chan struct{}
}

func readLines(r io.Reader) *lineReader {
	lr := &lineReader{more: make(chan struct{}, 1), done: make(chan struct{})}
	go func() {
		defer close(lr.done)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			lr.mu.Lock()
			lr.lines = append(lr.lines, sc.Text())
			lr.mu.Unlock()
			select {
			case lr.more <- struct{}{}:
			default:
			}
		}
	}()
	return lr
}

func (lr *lineReader) count() int {
	lr.mu.Lock()
	defer lr.mu.Unlock()
	return len(lr.lines)
}

func (lr *lineReader) all() []string {
	lr.mu.Lock()
	defer lr.mu.Unlock()
	return append([]string(nil), lr.lines...)
}

// waitCount waits until at least n lines arrived or the stream ended.
func (lr *lineReader) waitCount(t testing.TB, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for lr.count() < n {
		select {
		case <-lr.more:
		case <-lr.done:
			if lr.count() < n {
				t.Fatalf("output ended after %d lines, want %d", lr.count(), n)
			}
		case <-deadline:
			t.Fatalf("%d lines after %s, want %d", lr.count(), timeout, n)
		}
	}
}

// waitSubscribers polls /api/channels until channel has n subscribers.
func waitSubscribers(t testing.TB, base, channel string, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for delay := 5 * time.Millisecond; time.Now().Before(deadline); delay = min(delay*2, 100*time.Millisecond) {
		req, _ := http.NewRequest(http.MethodGet, base+"/api/channels?limit=1000", nil)
		req.Header.Set("Authorization", "Bearer "+apiKey)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			var out struct {
				Channels []struct {
					Channel     string `json:"channel"`
					Subscribers int    `json:"subscribers"`
				} `json:"channels"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&out)
			resp.Body.Close()
			for _, c := range out.Channels {
				if c.Channel == channel && c.Subscribers >= n {
					return
				}
			}
		}
		time.Sleep(delay)
	}
	t.Fatalf("channel %s never had %d subscribers", channel, n)
}

// checkExactlyOnceInOrder checks that envs are offsets 1..n of one
// channel, each once, in order.
func checkExactlyOnceInOrder(t testing.TB, envs []envelope, n int) {
	t.Helper()
	if len(envs) != n {
		t.Fatalf("got %d messages, want %d", len(envs), n)
	}
	for i, e := range envs {
		if e.Offset != uint64(i+1) {
			t.Fatalf("message #%d has offset %d, want %d (gap, duplicate or reorder)", i+1, e.Offset, i+1)
		}
	}
}
