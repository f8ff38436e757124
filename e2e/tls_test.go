package e2e

import (
	"crypto/tls"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/testcert"
)

// TestTLSCertificateReloadsOnSIGHUP: herald serve --tls-cert/--tls-key
// serves HTTPS with HTTP/2; after the files are replaced, SIGHUP makes new
// connections get the new certificate, and a broken pair on a second
// SIGHUP is logged while the served one stays.
func TestTLSCertificateReloadsOnSIGHUP(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cert, key, _ := testcert.Write(t, dir, 1)
	srv := &server{t: t, addr: freeAddr(t), dataDir: t.TempDir(), https: true, args: []string{"--tls-cert", cert, "--tls-key", key}}
	srv.start()
	t.Cleanup(srv.stop)
	serial := func() int64 {
		t.Helper()
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}} // the test's own certificate, on loopback
		resp, err := c.Get(srv.url() + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.Proto != "HTTP/2.0" {
			t.Fatalf("GET /healthz over %s, want HTTP/2.0", resp.Proto)
		}
		return resp.TLS.PeerCertificates[0].SerialNumber.Int64()
	}
	if got := serial(); got != 1 {
		t.Fatalf("serial %d, want 1", got)
	}
	testcert.Write(t, dir, 2)
	if err := srv.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for serial() != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("after SIGHUP the old certificate is still served:\n%s", lastLines(srv.log.String(), 20))
		}
		time.Sleep(20 * time.Millisecond) // polled: the reload has no event a client can await
	}
	if err := os.WriteFile(filepath.Join(dir, "key.pem"), []byte("broken"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := srv.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for !strings.Contains(srv.log.String(), "the certificate was not reloaded") {
		if time.Now().After(deadline) {
			t.Fatalf("a broken pair on SIGHUP was not reported:\n%s", lastLines(srv.log.String(), 20))
		}
		time.Sleep(20 * time.Millisecond) // polled: the log is the report
	}
	if got := serial(); got != 2 {
		t.Fatalf("after a failed reload the serial is %d, want 2 (kept)", got)
	}
}
