package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// `herald backup` while the server takes publishes, then `herald restore`
// into an empty folder and `herald serve` on it: the restored server
// holds every message acknowledged before the backup began, with the
// same epochs and offsets, so clients of the original server on SSE,
// WebSocket and long polling resume against it exactly once, in order,
// with no reset; its idempotency keys are there; a second restore into
// the same folder is refused.
func TestBackupWhileServingThenRestoreAndResume(t *testing.T) {
	t.Parallel()
	const n = 500
	srv := startServer(t)
	base := srv.url()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// A client of each transport, subscribed from now, reads the first
	// half of what is then published.
	conns := map[string]conn{}
	for _, d := range drivers {
		conns[d.name()] = mustOpen(t, d, base, apiKey, []string{"orders"}, nil)
	}
	for i := 1; i <= n; i++ {
		if _, err := publishRetrying(ctx, base, "orders", fmt.Sprintf(`{"i":%d}`, i), fmt.Sprint("order-", i)); err != nil {
			t.Fatal(err)
		}
	}
	marks := map[string]*mark{}
	for _, d := range drivers {
		c := conns[d.name()]
		for i := 1; i <= n/2; i++ {
			env, err := c.recv(20 * time.Second)
			if err != nil || env.Offset != uint64(i) {
				t.Fatalf("%s: message %d: %+v %v", d.name(), i, env, err)
			}
		}
		marks[d.name()] = c.mark()
		c.close()
	}

	// Publishes go on while the backup is taken.
	var acked atomic.Uint64
	stop, going := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		defer func() {
			if acked.Load() < 20 {
				close(going) // failed: t.Error reports it
			}
		}()
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			res, err := publishRetrying(ctx, base, "live", fmt.Sprintf(`{"i":%d}`, i), "")
			if err != nil {
				t.Error(err)
				return
			}
			acked.Store(res.Offset)
			if res.Offset == 20 {
				close(going)
			}
		}
	})
	<-going
	before := acked.Load()
	file := filepath.Join(t.TempDir(), "herald.backup")
	out := heraldCmd(t, "backup", file, "--server", base, "--token", apiKey)
	close(stop)
	wg.Wait()
	if !strings.Contains(out, "backup written to "+file) {
		t.Fatalf("herald backup printed %q", out)
	}
	dir := filepath.Join(t.TempDir(), "restored")
	if out := heraldCmd(t, "restore", file, "--data-dir", dir); !strings.Contains(out, "restored "+file) {
		t.Fatalf("herald restore printed %q", out)
	}
	if _, err := runHerald("restore", file, "--data-dir", dir); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("a second restore into the same folder: %v, want a refusal", err)
	}

	restored := &server{t: t, addr: freeAddr(t), dataDir: dir}
	restored.start()
	t.Cleanup(restored.stop)
	origPage, origEnvs := history(t, base, "orders")
	gotPage, gotEnvs := history(t, restored.url(), "orders")
	if gotPage.Epoch != origPage.Epoch || len(gotEnvs) != n {
		t.Fatalf("orders restored: epoch %s, %d messages; the original: epoch %s, %d", gotPage.Epoch, len(gotEnvs), origPage.Epoch, len(origEnvs))
	}
	for i := range gotEnvs {
		if gotEnvs[i].ID != origEnvs[i].ID || gotEnvs[i].Offset != origEnvs[i].Offset || !bytes.Equal(gotEnvs[i].Data, origEnvs[i].Data) {
			t.Fatalf("orders restored: message %d is %+v, the original %+v", i, gotEnvs[i], origEnvs[i])
		}
	}
	if live, _ := history(t, restored.url(), "live"); live.Head < before {
		t.Fatalf("live restored up to %d, but %d was acknowledged before the backup began", live.Head, before)
	}
	for _, d := range drivers {
		c := mustOpen(t, d, restored.url(), apiKey, []string{"orders"}, marks[d.name()])
		for i := n/2 + 1; i <= n; i++ {
			env, err := c.recv(20 * time.Second)
			if err != nil || env.Offset != uint64(i) || env.Event == "herald.reset" {
				t.Fatalf("%s resuming on the restored server: message %d: %+v %v", d.name(), i, env, err)
			}
		}
		c.close()
	}
	res, code, err := publish(ctx, restored.url(), "orders", `{"i":7}`, "order-7")
	if err != nil || code != 200 || res.Offset != 7 {
		t.Fatalf("a retried publish on the restored server: %d %+v %v, want the original's offset 7", code, res, err)
	}
}

// heraldCmd runs the herald binary with args and returns its standard
// output, failing the test if it fails.
func heraldCmd(t *testing.T, args ...string) string {
	t.Helper()
	out, err := runHerald(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// runHerald runs the herald binary with args; its error carries stderr.
func runHerald(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, heraldBin, args...)
	cmd.Env = cleanEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), errors.New(strings.Join(args, " ") + ": " + err.Error() + ": " + stderr.String())
	}
	return stdout.String(), nil
}
