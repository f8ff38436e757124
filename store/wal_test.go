package store

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// walSegmentsFor returns the segment files in a store directory's log.
func walSegmentsFor(t testing.TB, dir string) []string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(walDir(dir), "*"+walExt))
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// copyTree copies the regular files under src to dst (made if needed):
// what a disk holds of a directory, taken while the store runs.
func copyTree(t testing.TB, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !d.Type().IsRegular() || d.Name() == "LOCK" {
			return nil
		}
		in, err := os.Open(path)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.Create(target)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			_ = out.Close()
			return err
		}
		return out.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
}

// walScenario writes what TestReplay… expect back: appends to three
// channels (one with idempotency keys), a channel created empty by Head,
// and state set, replaced and deleted.
func walScenario(t *testing.T, s *Store) {
	t.Helper()
	ctx := context.Background()
	for i := range 20 {
		mustAppend(t, s, "a", Record{ID: fmt.Sprint("a", i), Payload: payload("a%d", i)})
		mustAppend(t, s, "b", Record{ID: fmt.Sprint("b", i), Payload: payload("b%d", i), IdempotencyKey: fmt.Sprint("k", i)})
	}
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() { mustAppend(t, s, "c", Record{Payload: payload("c%d", i)}) })
	}
	wg.Wait()
	if _, err := s.Head(ctx, "empty"); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		key, value string
		del        bool
	}{{"x", "1", false}, {"x", "2", false}, {"y", "1", false}, {"y", "", true}} {
		var err error
		if step.del {
			err = s.DeleteState(ctx, step.key)
		} else {
			err = s.PutState(ctx, step.key, []byte(step.value))
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// checkWALScenario checks that s holds what walScenario wrote.
func checkWALScenario(t *testing.T, s *Store) {
	t.Helper()
	ctx := context.Background()
	for ch, n := range map[string]int{"a": 20, "b": 20, "c": 50} {
		entries := readAll(t, s, ch, 0)
		if len(entries) != n {
			t.Fatalf("channel %s: %d entries after reopen, want %d", ch, len(entries), n)
		}
		for i, e := range entries {
			if e.Offset != uint64(i+1) {
				t.Fatalf("channel %s: entry %d has offset %d", ch, i, e.Offset)
			}
			if ch != "c" && string(e.Payload) != fmt.Sprintf("%s%d", ch, i) {
				t.Fatalf("channel %s offset %d holds %q", ch, e.Offset, e.Payload)
			}
		}
	}
	a := mustAppend(t, s, "b", Record{ID: "again", IdempotencyKey: "k7"})
	if !a.Duplicate || a.Offset != 8 || a.ID != "b7" {
		t.Fatalf("a repeated idempotency key after reopen: %+v, want the first append (offset 8, id b7)", a)
	}
	if pos, err := s.Head(ctx, "empty"); err != nil || pos.Epoch == "" || pos.Head != 0 {
		t.Fatalf("the channel created empty: %+v, %v", pos, err)
	}
	if v, ok, err := s.GetState(ctx, "x"); err != nil || !ok || string(v) != "2" {
		t.Fatalf("state x = %q, %v, %v; want 2", v, ok, err)
	}
	if _, ok, err := s.GetState(ctx, "y"); err != nil || ok {
		t.Fatalf("state y was deleted, yet it is there (%v)", err)
	}
}

// A power loss may leave Badger with anything from all of its unsynced
// writes to none of them; the write-ahead log holds every acknowledged
// batch, and opening replays it. The two ends are modelled by copying the
// running store's files: the log alone into an empty directory (Badger
// lost everything), and the whole directory (Badger kept everything).
func TestReplayRestoresWhatBadgerLost(t *testing.T) {
	t.Parallel()
	for _, keep := range []string{"log only", "log and badger"} {
		t.Run(keep, func(t *testing.T) {
			t.Parallel()
			src, dst := t.TempDir(), t.TempDir()
			s := openTest(t, Options{Dir: src, Retention: keepAll})
			walScenario(t, s)
			if keep == "log only" {
				copyTree(t, walDir(src), walDir(dst))
			} else {
				copyTree(t, src, dst)
			}
			r := openTest(t, Options{Dir: dst, Retention: keepAll})
			checkWALScenario(t, r)
			epochs := func(s *Store) string {
				pos, _ := s.Head(context.Background(), "a")
				return pos.Epoch
			}
			if epochs(r) != epochs(s) {
				t.Fatalf("epoch after replay %q, the store had %q", epochs(r), epochs(s))
			}
		})
	}
}

// Replaying a batch the trimmer has since cut does not bring its entries
// back: they stay gone, and First stays where the trimmer left it.
func TestReplayDoesNotBringBackTrimmedEntries(t *testing.T) {
	t.Parallel()
	src, dst := t.TempDir(), t.TempDir()
	s := openTest(t, Options{Dir: src, Retention: keepAll})
	for i := range 10 {
		mustAppend(t, s, "t", Record{Payload: payload("%d", i)})
	}
	if n, err := s.Trim(context.Background(), "t", Retention{MaxCount: 2}); err != nil || n != 8 {
		t.Fatalf("Trim = %d, %v; want 8 removed", n, err)
	}
	copyTree(t, src, dst)
	r := openTest(t, Options{Dir: dst, Retention: keepAll})
	p := mustRead(t, r, "t", 0, 0)
	if p.First != 9 || len(p.Entries) != 2 || p.Entries[0].Offset != 9 {
		t.Fatalf("after replay: first %d, entries %+v; want 9 and 10 only", p.First, p.Entries)
	}
}

// Full segments are checkpointed and reused, so the log stays a few
// segments long however much is written, and what it no longer holds is
// in Badger.
func TestCheckpointsKeepTheLogShort(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openTest(t, Options{Dir: dir, Retention: keepAll, WALSegmentBytes: minWALSegmentBytes})
	const n = 3000 // about 700 KiB of frames: ten segments' worth
	for i := range n {
		mustAppend(t, s, "long", Record{Payload: bytes.Repeat([]byte{byte(i)}, 200)})
	}
	waitFor(t, "full segments retired", func() bool {
		s.wal.mu.Lock()
		defer s.wal.mu.Unlock()
		return len(s.wal.full) == 0
	})
	// The active segment, at most walSpares spares, and one being made.
	if files := walSegmentsFor(t, dir); len(files) > walSpares+2 {
		t.Fatalf("%d segment files after %d appends: %v", len(files), n, files)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	r := openTest(t, Options{Dir: dir, Retention: keepAll})
	if got := readAll(t, r, "long", 0); len(got) != n {
		t.Fatalf("%d entries after reopen, want %d", len(got), n)
	}
}

// A clean Close leaves Badger synced and the log empty: the next Open has
// nothing to replay.
func TestCloseEmptiesTheLog(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, s, "c", Record{Payload: []byte("x")})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	w, rep, err := openWAL(walDir(dir), defaultWALSegmentBytes, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()
	if rep.frames != 0 || len(w.full) != 0 {
		t.Fatalf("after Close the log holds %d frames in %d segments", rep.frames, len(w.full))
	}
}

// openTestWAL opens a bare log in a new directory.
func openTestWAL(t *testing.T, dir string) *wal {
	t.Helper()
	w, _, err := openWAL(dir, minWALSegmentBytes, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.close() })
	return w
}

func mustWrite(t *testing.T, w *wal, ops ...kvOp) {
	t.Helper()
	if _, err := w.write(ops); err != nil {
		t.Fatal(err)
	}
}

func op(k, v string) kvOp { return kvOp{key: []byte(k), value: []byte(v)} }

func TestReplayReadsFramesUpToTheFirstDamagedOne(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, f *os.File, frameEnds []int64)
		frames int
	}{
		{"whole", func(*testing.T, *os.File, []int64) {}, 3},
		{"last frame cut short", func(t *testing.T, f *os.File, ends []int64) {
			// Zero the tail of the third frame, as a write cut by a crash.
			if _, err := f.WriteAt(make([]byte, 5), ends[2]-5); err != nil {
				t.Fatal(err)
			}
		}, 2},
		{"bit flipped in the second frame", func(t *testing.T, f *os.File, ends []int64) {
			b := make([]byte, 1)
			if _, err := f.ReadAt(b, ends[1]-1); err != nil {
				t.Fatal(err)
			}
			b[0] ^= 0x40
			if _, err := f.WriteAt(b, ends[1]-1); err != nil {
				t.Fatal(err)
			}
		}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			w := openTestWAL(t, dir)
			var ends []int64
			for i := range 3 {
				mustWrite(t, w, op("k", strconv.Itoa(i)), op("other", "v"))
				ends = append(ends, w.active.end)
			}
			tc.damage(t, w.active.f, ends)
			r, rep, err := openWAL(dir, minWALSegmentBytes, testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			defer r.close()
			if rep.frames != tc.frames || len(rep.ops) != 2*tc.frames {
				t.Fatalf("replayed %d frames (%d operations), want %d", rep.frames, len(rep.ops), tc.frames)
			}
			for i := range tc.frames {
				if got := string(rep.ops[2*i].value); got != strconv.Itoa(i) {
					t.Fatalf("frame %d replayed k=%q", i, got)
				}
			}
		})
	}
}

// A reused segment still holds its earlier frames past the new ones; they
// carry the old salt, so replay stops where the new ones end.
func TestReplayIgnoresFramesFromASegmentsEarlierUse(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	w := openTestWAL(t, dir)
	for i := range 5 {
		mustWrite(t, w, op("old", strconv.Itoa(i)))
	}
	seg := w.active
	w.active = nil
	if err := w.retire([]*walSegment{seg}); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, w, op("new", "1"))
	if w.active != seg {
		t.Fatal("the retired segment was not reused")
	}
	_, rep, err := openWAL(dir, minWALSegmentBytes, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if rep.frames != 1 || string(rep.ops[0].key) != "new" {
		t.Fatalf("replayed %d frames %+v, want the one new frame", rep.frames, rep.ops)
	}
}

// Damage a crash cannot cause is refused, not replayed past: a whole frame
// out of sequence, or a segment missing between two others.
func TestReplayRefusesACorruptLog(t *testing.T) {
	t.Parallel()
	t.Run("frame out of sequence", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		w := openTestWAL(t, dir)
		mustWrite(t, w, op("k", "1"))
		w.seq++ // the next frame skips one
		mustWrite(t, w, op("k", "3"))
		_, _, err := openWAL(dir, minWALSegmentBytes, testLogger(t))
		if err == nil || !strings.Contains(err.Error(), "frame 3 follows frame 1") {
			t.Fatalf("openWAL = %v, want an error naming the frames", err)
		}
	})
	t.Run("segment missing", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		w := openTestWAL(t, dir)
		big := strings.Repeat("v", minWALSegmentBytes/3)
		for range 6 { // two frames a segment: three segments
			mustWrite(t, w, op("k", big))
		}
		if w.active.number != 3 {
			t.Fatalf("wrote %d segments, want 3", w.active.number)
		}
		second := w.full[1]
		if _, err := second.f.WriteAt(make([]byte, walHeaderLen), 0); err != nil {
			t.Fatal(err)
		}
		_, _, err := openWAL(dir, minWALSegmentBytes, testLogger(t))
		if err == nil || !strings.Contains(err.Error(), "segment 3 follows segment 1") {
			t.Fatalf("openWAL = %v, want an error naming the missing segment", err)
		}
	})
}

// A log write that fails may have left part of a batch on disk: the store
// then refuses every write until a restart replays the log, and still
// serves reads.
func TestAFailedLogWriteStopsWrites(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, s, "f", Record{Payload: []byte("kept")})
	_ = s.wal.active.f.Close() // every later write to it fails
	if _, err := s.Append(context.Background(), "f", Record{Payload: []byte("lost")}); err == nil {
		t.Fatal("an append whose log write failed succeeded")
	}
	_, err = s.Append(context.Background(), "f", Record{Payload: []byte("refused")})
	if err == nil || !strings.Contains(err.Error(), "refusing writes after a failed commit") {
		t.Fatalf("append after the failure: %v", err)
	}
	if err := s.PutState(context.Background(), "k", []byte("v")); err == nil {
		t.Fatal("a state change after the failure succeeded")
	}
	if e := readAll(t, s, "f", 0); len(e) != 1 || string(e[0].Payload) != "kept" {
		t.Fatalf("reads after the failure: %+v", e)
	}
	_ = s.Close() // retiring the closed segment fails too
	r := openTest(t, Options{Dir: dir})
	if e := readAll(t, r, "f", 0); len(e) != 1 || string(e[0].Payload) != "kept" {
		t.Fatalf("after a restart: %+v", e)
	}
	mustAppend(t, r, "f", Record{Payload: []byte("again")})
}

// walCrashChildEnv names the directory a re-executed test binary appends
// to, with tiny log segments, until it is killed (see TestMain).
const walCrashChildEnv = "HERALD_STORE_WAL_CRASH_CHILD_DIR"

// walCrashChild appends to four channels from many goroutines, with log
// segments so small that they are filled, checkpointed and reused all the
// time, printing "channel offset payload" for each acknowledged append.
func walCrashChild(dir string) {
	s, err := Open(Options{Dir: dir, Retention: keepAll, TrimInterval: time.Hour, WALSegmentBytes: minWALSegmentBytes})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var mu sync.Mutex
	for g := range 16 {
		go func() {
			ch := fmt.Sprint("crash", g%4)
			for i := 0; ; i++ {
				p := fmt.Sprintf("g%d-%d-%s", g, i, strings.Repeat("x", 100))
				a, err := s.Append(context.Background(), ch, Record{Payload: []byte(p)})
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(3)
				}
				line := fmt.Sprintf("%s %d %s\n", ch, a.Offset, p)
				mu.Lock()
				_, _ = os.Stdout.WriteString(line)
				mu.Unlock()
			}
		}()
	}
	select {}
}

func TestCrashWhileTheLogTurnsOverKeepsEveryAcknowledgedAppend(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for round := range 3 {
		acked := runWALCrashChild(t, dir, 3000+round*1000)
		s, err := Open(Options{Dir: dir, Retention: keepAll, Logger: testLogger(t)})
		if err != nil {
			t.Fatalf("round %d: reopen: %v", round, err)
		}
		for ch, offsets := range acked {
			entries := readAll(t, s, ch, 0)
			for off, p := range offsets {
				if off > uint64(len(entries)) {
					t.Fatalf("round %d: %s: acknowledged offset %d, %d entries after reopen", round, ch, off, len(entries))
				}
				if e := entries[off-1]; e.Offset != off || string(e.Payload) != p {
					t.Fatalf("round %d: %s offset %d holds %d %q, acknowledged %q", round, ch, off, e.Offset, e.Payload, p)
				}
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// runWALCrashChild runs walCrashChild on dir, SIGKILLs it once it has
// acknowledged at least n appends, and returns them by channel and offset.
func runWALCrashChild(t *testing.T, dir string, n int) map[string]map[uint64]string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), walCrashChildEnv+"="+dir)
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
	acked := make(map[string]map[uint64]string)
	count := 0
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		f := strings.SplitN(sc.Text(), " ", 3)
		if len(f) != 3 {
			t.Fatalf("child printed %q", sc.Text())
		}
		off, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			t.Fatalf("child printed %q", sc.Text())
		}
		if acked[f[0]] == nil {
			acked[f[0]] = make(map[uint64]string)
		}
		if prev, dup := acked[f[0]][off]; dup {
			t.Fatalf("%s offset %d acknowledged twice: %q and %q", f[0], off, prev, f[2])
		}
		acked[f[0]][off] = f[2]
		if count++; count == n {
			_ = cmd.Process.Kill()
		}
	}
	err = cmd.Wait()
	if count < n {
		t.Fatalf("child acknowledged %d appends, then: %v\n%s", count, err, stderr.String())
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("child ended with %v, want killed", err)
	}
	return acked
}
