package main

// Helpers shared by the client commands (publish, subscribe, token): the
// common flags, environment defaults, request building and the server's
// JSON error answers.

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// Environment variables the client commands read.
const (
	envURL       = "HERALD_URL"
	envToken     = "HERALD_TOKEN"
	envAPIKey    = "HERALD_API_KEY"
	envJWTSecret = "HERALD_JWT_SECRET"

	defaultServerURL = "http://127.0.0.1:8080"
)

// clientEnv is what a client command takes from its process besides its
// arguments and output: the environment and stdin. cmd* functions pass
// the real ones; tests pass their own.
type clientEnv struct {
	getenv func(string) string
	stdin  io.Reader
	now    func() time.Time
}

func processEnv() clientEnv {
	return clientEnv{getenv: os.Getenv, stdin: os.Stdin, now: time.Now}
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(v string) error {
	*l = append(*l, v)
	return nil
}

// clientFlags are the flags every command that talks to a server has.
// Their defaults come from the environment after parsing, so that -h
// never prints a secret.
type clientFlags struct {
	server string
	token  string
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.server, "server", "", "server base URL (default $"+envURL+", else "+defaultServerURL+")")
	fs.StringVar(&c.token, "token", "", "API key or user token, sent as Authorization: Bearer (default $"+envToken+", else $"+envAPIKey+")")
}

// resolve fills the defaults from the environment and checks the URL.
func (c *clientFlags) resolve(getenv func(string) string) (*url.URL, error) {
	if c.server == "" {
		c.server = getenv(envURL)
	}
	if c.server == "" {
		c.server = defaultServerURL
	}
	if c.token == "" {
		c.token = getenv(envToken)
	}
	if c.token == "" {
		c.token = getenv(envAPIKey)
	}
	return parseServerURL(c.server)
}

// parseServerURL checks a server base URL: http or https with a host. A
// path is kept as a prefix (a server behind a proxy under /herald/).
func parseServerURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("--server %q is not a URL: %w", s, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("--server %q: want an http:// or https:// URL", s)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("--server %q has no host", s)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("--server %q: give the base URL only, without a query or fragment", s)
	}
	return u, nil
}

// apiEndpoint returns base with path appended to its own path.
func apiEndpoint(base *url.URL, path string) *url.URL {
	return base.JoinPath(path)
}

// setAuth sets the bearer token, if there is one.
func setAuth(h http.Header, token string) {
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
}

// newFlagSet returns a command's flag set, writing its messages to stderr.
func newFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: herald %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args and rejects positional arguments. flag.ErrHelp is
// returned as is.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return flag.ErrHelp
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (every option is a flag; see -h)", fs.Arg(0))
	}
	return nil
}

// apiError is a non-2xx answer of the server.
type apiError struct {
	Status int    // HTTP status
	Code   int    // the error body's code (equals Status on Herald)
	Msg    string // the error body's message, or a snippet of the body
	// Channel is the channel the error names, when it names one.
	Channel string
	// RetryAfter is the server's Retry-After (429, 503), 0 when absent.
	RetryAfter time.Duration
}

func (e *apiError) Error() string {
	s := fmt.Sprintf("server answered %d %s", e.Status, http.StatusText(e.Status))
	if e.Msg != "" {
		s += ": " + e.Msg
	}
	return s
}

// retryable reports whether trying again later can help: 408, 429 and
// server-side (5xx) failures. Other 4xx answers (bad request, bad cursor,
// 401, 403, 404) will be the same next time.
func (e *apiError) retryable() bool {
	return e.Status == http.StatusRequestTimeout || e.Status == http.StatusTooManyRequests || e.Status >= 500
}

// maxErrorBody bounds how much of an error answer is read.
const maxErrorBody = 64 << 10

// readAPIError reads a non-2xx answer into an *apiError. Herald answers
// {"error":{"code","message"}}; anything else (a proxy's HTML page) is
// quoted briefly. It does not close the body.
func readAPIError(resp *http.Response) *apiError {
	e := &apiError{Status: resp.StatusCode, Code: resp.StatusCode}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var eb struct {
		Error struct {
			Code       int    `json:"code"`
			Message    string `json:"message"`
			Channel    string `json:"channel"`
			RetryAfter int    `json:"retry_after"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &eb) == nil && eb.Error.Message != "" {
		e.Msg, e.Channel = eb.Error.Message, eb.Error.Channel
		if eb.Error.Code != 0 {
			e.Code = eb.Error.Code
		}
		if eb.Error.RetryAfter > 0 {
			e.RetryAfter = time.Duration(eb.Error.RetryAfter) * time.Second
		}
	} else {
		e.Msg = bodySnippet(body)
	}
	if secs, err := strconv.Atoi(strings.TrimSpace(resp.Header.Get("Retry-After"))); err == nil && secs > 0 {
		e.RetryAfter = time.Duration(secs) * time.Second
	}
	return e
}

// bodySnippet returns the start of a body, on one line, for an error message.
func bodySnippet(b []byte) string {
	const max = 200
	s := strings.Join(strings.Fields(string(b)), " ")
	if len(s) > max {
		s = s[:max] + "…"
	}
	return s
}
