package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

// apiCall sends one request to the server API — body, when not nil, as
// JSON — and returns the answer compacted to one line. A non-2xx answer
// is an *apiError carrying the server's message as it came.
func apiCall(ctx context.Context, hc *http.Client, base *url.URL, token, method, path string, query url.Values, body any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	u := apiEndpoint(base, path)
	if len(query) > 0 {
		u.RawQuery = query.Encode()
	}
	hr, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	if body != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	hr.Header.Set("Accept", "application/json")
	setAuth(hr.Header, token)
	resp, err := hc.Do(hr)
	if err != nil {
		return nil, err // a *url.Error: it names the method, the URL and the cause
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, readAPIError(resp)
	}
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	if err != nil {
		return nil, fmt.Errorf("read answer: %w", err)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, answer); err != nil {
		return nil, fmt.Errorf("server answered %d with a body that is not JSON: %s", resp.StatusCode, bodySnippet(answer))
	}
	return buf.Bytes(), nil
}

// printAnswer writes an answer as one line.
func printAnswer(w io.Writer, answer []byte) error {
	if _, err := w.Write(append(answer, '\n')); err != nil {
		return fmt.Errorf("write answer: %w", err)
	}
	return nil
}
