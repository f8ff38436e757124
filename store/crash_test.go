package store

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// crashChildEnv names the directory a re-executed test binary appends to
// until it is killed (see TestMain).
const crashChildEnv = "HERALD_STORE_CRASH_CHILD_DIR"

const crashChannel = "crash"

// crashOutbox queues an entry for every record: a crash must leave the
// outbox holding exactly the stored records.
func crashOutbox() Outbox {
	return Outbox{Queues: []string{"hook"}, Route: func(string, *Record) uint64 { return 1 }}
}

// crashChild appends from many goroutines, printing "offset payload" for
// each acknowledged append, until the parent kills the process.
func crashChild(dir string) {
	s, err := Open(Options{Dir: dir, Retention: keepAll, TrimInterval: time.Hour, Outbox: crashOutbox()})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var mu sync.Mutex
	for g := range 16 {
		go func() {
			for i := 0; ; i++ {
				p := fmt.Sprintf("g%d-%d", g, i)
				a, err := s.Append(context.Background(), crashChannel, Record{Payload: []byte(p)})
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(3)
				}
				line := fmt.Sprintf("%d %s\n", a.Offset, p)
				mu.Lock()
				_, _ = os.Stdout.WriteString(line) // one write, unbuffered: acknowledged once out
				mu.Unlock()
			}
		}()
	}
	select {}
}

func TestCrashKeepsEveryAcknowledgedAppend(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var epoch string
	for round := range 3 {
		acked := runAndKill(t, dir, 500+round*700)
		s, err := Open(Options{Dir: dir, Retention: keepAll, Logger: testLogger(t), Outbox: crashOutbox()})
		if err != nil {
			t.Fatalf("round %d: reopen: %v", round, err)
		}
		pos, err := s.Head(context.Background(), crashChannel)
		if err != nil {
			t.Fatal(err)
		}
		if epoch != "" && pos.Epoch != epoch {
			t.Fatalf("round %d: epoch changed from %s to %s", round, epoch, pos.Epoch)
		}
		epoch = pos.Epoch
		entries := readAll(t, s, crashChannel, 0)
		if uint64(len(entries)) != pos.Head {
			t.Fatalf("round %d: head %d but %d entries", round, pos.Head, len(entries))
		}
		for i, e := range entries {
			if e.Offset != uint64(i+1) {
				t.Fatalf("round %d: entry %d has offset %d: not contiguous", round, i, e.Offset)
			}
		}
		for off, p := range acked {
			if off > pos.Head {
				t.Fatalf("round %d: acknowledged offset %d beyond head %d", round, off, pos.Head)
			}
			if got := string(entries[off-1].Payload); got != p {
				t.Fatalf("round %d: offset %d holds %q, acknowledged %q", round, off, got, p)
			}
		}
		// The outbox holds one entry per stored record: none missing, none
		// for a record that was not stored.
		queued, err := s.ReadOutbox(context.Background(), "hook", 0, 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		if uint64(len(queued)) != pos.Head {
			t.Fatalf("round %d: head %d but %d outbox entries", round, pos.Head, len(queued))
		}
		seen := make(map[uint64]bool, len(queued))
		for _, q := range queued {
			if seen[q.Offset] {
				t.Fatalf("round %d: offset %d queued twice", round, q.Offset)
			}
			seen[q.Offset] = true
			if q.Epoch != epoch || q.Offset == 0 || q.Offset > pos.Head || string(q.Payload) != string(entries[q.Offset-1].Payload) {
				t.Fatalf("round %d: outbox entry %d reports offset %d %q, not a stored record", round, q.Seq, q.Offset, q.Payload)
			}
		}
		a := mustAppend(t, s, crashChannel, Record{Payload: []byte("after crash")})
		if a.Offset != pos.Head+1 || a.Epoch != epoch {
			t.Fatalf("round %d: append after reopen = %+v, head was %d", round, a, pos.Head)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: %d acknowledged, head %d after reopen", round, len(acked), pos.Head)
	}
}

// runAndKill runs crashChild on dir, SIGKILLs it once it has acknowledged
// at least n appends, and returns every acknowledged offset and payload.
func runAndKill(t *testing.T, dir string, n int) map[uint64]string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(time.Minute, func() { _ = cmd.Process.Kill() })
	defer timer.Stop()

	acked := make(map[uint64]string)
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		off, p, ok := strings.Cut(sc.Text(), " ")
		o, err := strconv.ParseUint(off, 10, 64)
		if !ok || err != nil {
			t.Fatalf("child printed %q", sc.Text())
		}
		if prev, dup := acked[o]; dup {
			t.Fatalf("offset %d acknowledged twice: %q and %q", o, prev, p)
		}
		acked[o] = p
		if len(acked) == n {
			_ = cmd.Process.Kill() // SIGKILL; keep reading what was already acknowledged
		}
	}
	err = cmd.Wait()
	if len(acked) < n {
		t.Fatalf("child acknowledged %d appends, then: %v\n%s", len(acked), err, stderr.String())
	}
	return acked
}
