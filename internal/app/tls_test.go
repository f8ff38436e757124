package app

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/testcert"
)

// writeCert writes a self-signed certificate with serial into dir and
// returns the pool that trusts it.
func writeCert(t *testing.T, dir string, serial int64) *x509.CertPool {
	t.Helper()
	_, _, pool := testcert.Write(t, dir, serial)
	return pool
}

// TestTLSServesHTTP2AndSSEOnIt: with a certificate the App serves HTTPS,
// negotiates HTTP/2, and an SSE stream on an HTTP/2 connection gets its
// herald.connected and a message published meanwhile; ReloadTLS serves a
// renewed certificate to new connections.
func TestTLSServesHTTP2AndSSEOnIt(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pool := writeCert(t, dir, 1)
	cfg := testConfig()
	cfg.TLS = TLSConfig{CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem")}
	a, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Shutdown() })
	base := "https://" + a.Addr()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}

	resp, err := client.Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Proto != "HTTP/2.0" || resp.TLS == nil || resp.TLS.PeerCertificates[0].SerialNumber.Int64() != 1 {
		t.Fatalf("GET /healthz: %s, serial %v", resp.Proto, resp.TLS.PeerCertificates[0].SerialNumber)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/sse?channel=tls_news", nil)
	req.Header.Set("Authorization", "Bearer "+testKey)
	stream, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Body.Close()
	if stream.Proto != "HTTP/2.0" || stream.StatusCode != 200 || !strings.HasPrefix(stream.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("SSE over HTTP/2: %s %d %q", stream.Proto, stream.StatusCode, stream.Header.Get("Content-Type"))
	}
	lines := bufio.NewScanner(stream.Body)
	next := func(prefix string) string {
		t.Helper()
		for lines.Scan() {
			if strings.HasPrefix(lines.Text(), prefix) {
				return lines.Text()
			}
		}
		t.Fatalf("the stream ended before a %q line: %v", prefix, lines.Err())
		return ""
	}
	if l := next("event: "); l != "event: herald.connected" {
		t.Fatalf("first event %q", l)
	}
	preq, _ := http.NewRequest(http.MethodPost, base+"/api/publish", strings.NewReader(`{"channel":"tls_news","event":"story","data":{"n":1}}`))
	preq.Header.Set("Authorization", "Bearer "+testKey)
	presp, err := client.Do(preq)
	if err != nil || presp.StatusCode != 200 {
		t.Fatalf("publish over HTTP/2: %v %v", err, presp)
	}
	presp.Body.Close()
	if l := next("event: "); l != "event: story" {
		t.Fatalf("event %q, want story", l)
	}
	if l := next("data: "); !strings.Contains(l, `"data":{"n":1}`) {
		t.Fatalf("data %q", l)
	}

	// A renewed certificate: new connections get it.
	pool2 := writeCert(t, dir, 2)
	if err := a.ReloadTLS(); err != nil {
		t.Fatal(err)
	}
	fresh := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool2}}, Timeout: 30 * time.Second}
	resp, err = fresh.Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.TLS.PeerCertificates[0].SerialNumber.Int64(); got != 2 {
		t.Fatalf("after the reload the certificate's serial is %d, want 2", got)
	}
	// A broken pair is refused and the served one stays.
	if err := os.WriteFile(filepath.Join(dir, "key.pem"), []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := a.ReloadTLS(); err == nil || !strings.Contains(err.Error(), "key.pem") {
		t.Fatalf("reload of a broken key: %v", err)
	}
	resp, err = (&http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool2}}}).Get(base + "/healthz")
	if err != nil {
		t.Fatalf("after a failed reload: %v", err)
	}
	resp.Body.Close()
}

// TestH2CServesHTTP2WithoutTLS: h2c: true answers a prior-knowledge
// HTTP/2 client in cleartext, and HTTP/1.1 clients as before.
func TestH2CServesHTTP2WithoutTLS(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.H2C = true
	a, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Shutdown() })
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	h2 := &http.Client{Transport: &http.Transport{Protocols: p}, Timeout: 30 * time.Second}
	resp, err := h2.Get("http://" + a.Addr() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Proto != "HTTP/2.0" {
		t.Fatalf("h2c: %s", resp.Proto)
	}
	resp, err = http.Get("http://" + a.Addr() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Proto != "HTTP/1.1" {
		t.Fatalf("HTTP/1.1 client: %s", resp.Proto)
	}
}

// TestTLSConfigIsChecked: half a pair, a pair that does not load, both a
// certificate and ACME, h2c with TLS, a bad ACME host: each named.
func TestTLSConfigIsChecked(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeCert(t, dir, 1)
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	cases := []struct {
		name string
		tls  TLSConfig
		h2c  bool
		want string
	}{
		{"cert without key", TLSConfig{CertFile: cert}, false, "give both cert_file and key_file"},
		{"missing file", TLSConfig{CertFile: cert, KeyFile: filepath.Join(dir, "nope.pem")}, false, "nope.pem"},
		{"key is the cert", TLSConfig{CertFile: cert, KeyFile: cert}, false, "tls: load"},
		{"both ways", TLSConfig{CertFile: cert, KeyFile: key, ACME: ACMEConfig{Hosts: []string{"example.com"}}}, false, "keep one"},
		{"h2c with tls", TLSConfig{CertFile: cert, KeyFile: key}, true, "h2c is HTTP/2 without TLS"},
		{"bad host", TLSConfig{ACME: ACMEConfig{Hosts: []string{"a/b"}}}, false, `"a/b" is not a host name`},
	}
	for _, tc := range cases {
		cfg := testConfig()
		cfg.TLS, cfg.H2C = tc.tls, tc.h2c
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
	cfg := testConfig()
	cfg.TLS = TLSConfig{CertFile: cert, KeyFile: key}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("a good pair: %v", err)
	}
}
