package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gorilla/websocket"
)

// DefaultTimeout bounds one API call (request and answer) when
// Options.HTTPClient is not set.
const DefaultTimeout = 30 * time.Second

// Options configures a Client. The zero value is an anonymous client with
// the defaults below.
type Options struct {
	// Token is the API key (role system) or a user's JWT, sent as
	// Authorization: Bearer on every call, stream and WebSocket upgrade.
	// Empty: anonymous, which the channel rules may allow.
	Token string
	// HTTPClient sends the API calls. Default: a client with
	// DefaultTimeout. Its Transport, when set, also carries the SSE streams
	// and long polls of subscriptions, which have no overall timeout of
	// their own (a stream has no end; a poll is bounded by its wait).
	HTTPClient *http.Client
	// Dialer opens WebSocket connections. Default: the proxy from the
	// environment and a 30 s handshake.
	Dialer *websocket.Dialer
	// Logger hears what subscriptions do: connects, reconnects and why
	// (Warn when a connection failed, Debug when a good one ended),
	// dropped replays, resets. Default: nothing is logged.
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: DefaultTimeout}
	}
	if o.Dialer == nil {
		o.Dialer = &websocket.Dialer{Proxy: http.ProxyFromEnvironment, HandshakeTimeout: wsHandshakeTimeout}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

func (o Options) validate() error {
	if strings.ContainsFunc(o.Token, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return errors.New("client: the token holds a control character (a line break copied with it?)")
	}
	return nil
}

// Client talks to one Herald server: the HTTP API, WebSocket connections
// and subscriptions. It holds no connection of its own and is safe for
// concurrent use.
type Client struct {
	base   *url.URL
	opts   Options
	sseRT  http.RoundTripper // SSE streams
	pollRT http.RoundTripper // long polls
}

// New returns a client of the server at baseURL, an http:// or https://
// URL. A path is kept as a prefix, for a server behind a proxy under
// /herald/.
func New(baseURL string, opts Options) (*Client, error) {
	base, err := parseBaseURL(baseURL)
	if err != nil {
		return nil, err
	}
	if err := opts.validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	c := &Client{base: base, opts: opts}
	if rt := opts.HTTPClient.Transport; rt != nil {
		c.sseRT, c.pollRT = rt, rt
	} else {
		// The headers of a stream come at once; the headers of a poll
		// come after its wait, which its own client bounds.
		sse := http.DefaultTransport.(*http.Transport).Clone()
		sse.ResponseHeaderTimeout = 30 * time.Second
		c.sseRT, c.pollRT = sse, http.DefaultTransport.(*http.Transport).Clone()
	}
	return c, nil
}

// parseBaseURL checks a server base URL: http or https with a host, no
// query or fragment.
func parseBaseURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("base URL %q is not a URL: %w", s, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("base URL %q: want an http:// or https:// URL", s)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("base URL %q has no host", s)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("base URL %q: give the base URL only, without a query or fragment", s)
	}
	return u, nil
}

// URL returns the address of a server path ("api/publish", "sse", "ws",
// "poll" …) under the base URL.
func (c *Client) URL(path string) *url.URL { return c.base.JoinPath(path) }

// setAuth sets the bearer token, if there is one.
func (c *Client) setAuth(h http.Header) {
	if c.opts.Token != "" {
		h.Set("Authorization", "Bearer "+c.opts.Token)
	}
}

// maxAnswer bounds how much of an API answer is read.
const maxAnswer = 64 << 20

// Call sends one request to the server API — path under the base URL
// ("api/grants"), query when not nil, body as JSON when not nil — and
// decodes the answer into out: a *json.RawMessage keeps it as it came,
// compacted to one line; nil drops it. A non-2xx answer is an *APIError
// carrying the server's message. The typed methods (Publish, History …)
// are built on it; Call reaches the routes they do not cover.
func (c *Client) Call(ctx context.Context, method, path string, query url.Values, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	u := c.URL(path)
	if len(query) > 0 {
		u.RawQuery = query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	c.setAuth(req.Header)
	resp, err := c.opts.HTTPClient.Do(req)
	if err != nil {
		return err // a *url.Error: it names the method, the URL and the cause
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return ErrorFromResponse(resp)
	}
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, answer); err != nil {
		return fmt.Errorf("server answered %d with a body that is not JSON: %s", resp.StatusCode, bodySnippet(answer))
	}
	switch out := out.(type) {
	case nil:
		return nil
	case *json.RawMessage:
		*out = buf.Bytes()
		return nil
	}
	if err := json.Unmarshal(buf.Bytes(), out); err != nil {
		return fmt.Errorf("decode the answer of %s %s: %w", method, path, err)
	}
	return nil
}
