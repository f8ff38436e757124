package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
)

// A backup taken while appends go on holds every append acknowledged
// before it began, each channel's epoch and offsets, and the idempotency
// keys; restored into an empty folder, it opens as that store did, and
// new appends continue its offsets.
func TestBackupWhileServingThenRestore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openTest(t, Options{Dir: t.TempDir()})
	for i := 1; i <= 50; i++ {
		rec := Record{ID: fmt.Sprint("a", i), Payload: fmt.Appendf(nil, "a%d", i)}
		if i == 7 {
			rec.IdempotencyKey = "order-7"
		}
		if _, err := s.Append(ctx, "alpha", rec); err != nil {
			t.Fatal(err)
		}
	}
	// Appends to "live" go on during the backup.
	var acked atomic.Uint64
	stop, hundred := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		defer func() {
			if acked.Load() < 100 {
				close(hundred) // failed: the test ends at t.Error's report
			}
		}()
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			res, err := s.Append(ctx, "live", Record{ID: fmt.Sprint("l", i), Payload: fmt.Appendf(nil, "l%d", i)})
			if err != nil {
				t.Error(err)
				return
			}
			acked.Store(res.Offset)
			if res.Offset == 100 {
				close(hundred)
			}
		}
	})
	<-hundred
	if t.Failed() {
		return
	}
	before := acked.Load()
	file := filepath.Join(t.TempDir(), "herald.backup")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Backup(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	close(stop)
	wg.Wait()
	if st, _ := os.Stat(file); st.Size() != info.Bytes {
		t.Fatalf("backup of %d bytes says %d", st.Size(), info.Bytes)
	}

	dir := filepath.Join(t.TempDir(), "restored")
	if _, err := Restore(file, Options{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	r := openTest(t, Options{Dir: dir})
	for _, ch := range []string{"alpha", "live"} {
		orig, _ := s.Head(ctx, ch)
		got, err := r.Head(ctx, ch)
		if err != nil || got.Epoch != orig.Epoch {
			t.Fatalf("%s restored: %+v %v, want epoch %s", ch, got, err, orig.Epoch)
		}
		page, err := r.Read(ctx, ch, 0, 1000)
		if err != nil || uint64(len(page.Entries)) != got.Head {
			t.Fatalf("%s restored: %d records up to head %d (%v)", ch, len(page.Entries), got.Head, err)
		}
		prefix := ch[:1]
		for i, e := range page.Entries {
			if e.Offset != uint64(i+1) || string(e.Payload) != fmt.Sprintf("%s%d", prefix, i+1) {
				t.Fatalf("%s restored: record %d is %d %q", ch, i, e.Offset, e.Payload)
			}
		}
	}
	if h, _ := r.Head(ctx, "live"); h.Head < before {
		t.Fatalf("live restored up to %d, but %d was acknowledged before the backup began", h.Head, before)
	}
	if h, _ := r.Head(ctx, "alpha"); h.Head != 50 {
		t.Fatalf("alpha restored up to %d, want 50", h.Head)
	}
	dup, err := r.Append(ctx, "alpha", Record{ID: "again", Payload: []byte("x"), IdempotencyKey: "order-7"})
	if err != nil || !dup.Duplicate || dup.Offset != 7 {
		t.Fatalf("the idempotency key after the restore: %+v %v, want the duplicate at offset 7", dup, err)
	}
	next, err := r.Append(ctx, "alpha", Record{ID: "a51", Payload: []byte("a51")})
	if err != nil || next.Offset != 51 {
		t.Fatalf("append after the restore: %+v %v, want offset 51", next, err)
	}
}

// A backup file that was cut short or altered, and a folder that is not
// empty, are refused, and nothing is restored.
func TestRestoreRefusesBadBackupsAndUsedFolders(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openTest(t, Options{Dir: t.TempDir()})
	for i := range 20 {
		if _, err := s.Append(ctx, "c", Record{ID: fmt.Sprint(i), Payload: []byte("data")}); err != nil {
			t.Fatal(err)
		}
	}
	tmp := t.TempDir()
	good := filepath.Join(tmp, "good.backup")
	f, _ := os.Create(good)
	if _, err := s.Backup(ctx, f); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	raw, _ := os.ReadFile(good)
	variant := func(name string, b []byte) string {
		p := filepath.Join(tmp, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	altered := append([]byte(nil), raw...)
	altered[len(altered)/2] ^= 0xff
	used := filepath.Join(tmp, "used")
	if err := os.MkdirAll(used, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(used, "x"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, file, dir string
		want            error
	}{
		{"cut short", variant("short", raw[:len(raw)-40]), filepath.Join(tmp, "d1"), ErrBadBackup},
		{"cut at the stream's end", variant("nostream", raw[:len(raw)-trailerLen]), filepath.Join(tmp, "d2"), ErrBadBackup},
		{"altered", variant("altered", altered), filepath.Join(tmp, "d3"), ErrBadBackup},
		{"not a backup", variant("text", []byte("hello, this is not a backup at all, but long enough to look like one maybe, or not, who knows really")), filepath.Join(tmp, "d4"), ErrBadBackup},
		{"a folder in use", good, used, ErrDataDir},
	}
	for _, c := range cases {
		if _, err := Restore(c.file, Options{Dir: c.dir}); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
		if c.dir != used {
			if _, err := os.Stat(c.dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s: the folder was made (%v)", c.name, err)
			}
		}
	}
}

// FuzzVerifyBackup feeds any file to the backup checker: it never panics,
// and a file it takes is framed as a backup whose stream matches its
// checksum.
func FuzzVerifyBackup(f *testing.F) {
	body := []byte("some stream")
	sum := sha256.Sum256(body)
	good := fmt.Appendf(nil, "%s%sHERALD-END %x %020d\n", backupHeader, body, sum, len(body))
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add([]byte(backupHeader))
	f.Add([]byte("HERALD BACKUP 1\nHERALD-END zz 00000000000000000000\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		stream, info, err := VerifyBackup(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			if !errors.Is(err, ErrBadBackup) {
				t.Fatalf("refused with %v, want ErrBadBackup", err)
			}
			return
		}
		got, _ := io.ReadAll(stream)
		if s := sha256.Sum256(got); hex.EncodeToString(s[:]) != info.SHA256 || !bytes.HasPrefix(data, []byte(backupHeader)) {
			t.Fatalf("%q taken, but its stream does not match its checksum", data)
		}
	})
}
