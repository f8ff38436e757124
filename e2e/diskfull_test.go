//go:build linux

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A full disk, for real: herald runs with its data directory on a
// 192 MiB file system of its own (a tmpfs mounted in a user and mount
// namespace, so no privilege is needed), 48 MiB of which a filler file
// takes. 8 KB publishes fill it until the store's reserve is reached:
// from then publishes are refused at once with 507 and a message saying
// how much is free, /readyz says why (degraded: subscribers still read),
// the process stays up (Badger's memory-mapped files never meet a full
// disk: no SIGBUS), and every acknowledged publish is stored and was
// delivered. Once the filler is removed, publishes are taken again at
// the next offsets, by themselves.
func TestDiskFullRefusesPublishesThenRecovers(t *testing.T) {
	t.Parallel()
	mnt := t.TempDir()
	srv := &server{t: t, addr: freeAddr(t), dataDir: filepath.Join(mnt, "data"),
		args: []string{"--config", writeConfig(t, "channels:\n  - pattern: big\n    history: {size: 100000}\n")}}
	srv.launch = func(args []string) *exec.Cmd {
		script := `mount -t tmpfs -o size=192m tmpfs "$1" && dd if=/dev/zero of="$1/filler" bs=1M count=48 status=none && shift && exec "$@"`
		return exec.Command("unshare", append([]string{"--user", "--map-root-user", "--mount", "sh", "-c", script, "sh", mnt, heraldBin}, args...)...)
	}
	srv.start()
	t.Cleanup(srv.stop)
	base := srv.url()
	sub := mustOpen(t, sseDriver{}, base, apiKey, []string{"big"}, nil)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pad := strings.Repeat("x", 8000)
	var acked int
	for i := 1; ; i++ {
		if i > 20000 {
			t.Fatal("20,000 publishes of 8 KB taken on a 192 MiB file system")
		}
		res, code, err := publish(ctx, base, "big", fmt.Sprintf(`{"i":%d,"pad":%q}`, i, pad), "")
		if code == http.StatusInsufficientStorage {
			break
		}
		if err != nil {
			t.Fatalf("publish %d: %v (the server died?)\n%s", i, err, srv.log.String())
		}
		if code != 200 || res.Offset != uint64(i) {
			t.Fatalf("publish %d: %d %+v", i, code, res)
		}
		acked = i
	}
	resp, body := permReq(t, http.MethodPost, base+"/api/publish", apiKey, map[string]any{"channel": "big", "data": map[string]any{"i": 0}})
	if resp.StatusCode != 507 || resp.Header.Get("Retry-After") != "5" || !strings.Contains(string(body), "kept in reserve") {
		t.Fatalf("a publish on a full disk: %d (Retry-After %q) %s, want 507 saying how much is free", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	resp, body = permReq(t, http.MethodGet, base+"/readyz", "", nil)
	if resp.StatusCode != 200 || !strings.Contains(string(body), "degraded") || !strings.Contains(string(body), "storage") {
		t.Fatalf("/readyz on a full disk: %d %s, want 200 degraded naming the storage", resp.StatusCode, body)
	}
	for i := 1; i <= acked; i++ {
		env, err := sub.recv(20 * time.Second)
		if err != nil || env.Offset != uint64(i) {
			t.Fatalf("subscriber: message %d: %+v %v", i, env, err)
		}
	}
	if page, envs := history(t, base, "big"); page.Head != uint64(acked) || len(envs) != acked {
		t.Fatalf("history on a full disk: head %d, %d messages; %d were acknowledged", page.Head, len(envs), acked)
	}

	// Space is freed: publishing goes on by itself.
	if err := os.Remove(fmt.Sprintf("/proc/%d/root%s/filler", srv.cmd.Process.Pid, mnt)); err != nil {
		t.Fatal(err)
	}
	res, code, err := publish(ctx, base, "big", `{"i":"after"}`, "")
	if err != nil || code != 200 || res.Offset != uint64(acked+1) {
		t.Fatalf("publish once space is freed: %d %+v %v, want offset %d", code, res, err, acked+1)
	}
	if env, err := sub.recv(20 * time.Second); err != nil || env.Offset != uint64(acked+1) {
		t.Fatalf("subscriber after the recovery: %+v %v", env, err)
	}
	resp, body = permReq(t, http.MethodGet, base+"/readyz", "", nil)
	if resp.StatusCode != 200 || strings.Contains(string(body), "degraded") {
		t.Fatalf("/readyz once space is freed: %d %s", resp.StatusCode, body)
	}
	if !strings.Contains(srv.log.String(), "nearly full") || !strings.Contains(srv.log.String(), "disk space is back") {
		t.Fatalf("the log does not tell the disk filled and emptied:\n%s", srv.log.String())
	}
	t.Logf("%d publishes of 8 KB acknowledged before the reserve was reached", acked)
}
