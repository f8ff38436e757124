package store

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
)

// Under the disk-space reserve appends are refused with ErrStorageFull,
// nothing of them stored, while reads go on; once space is back, appends
// are taken again, at the next offsets.
func TestAppendsWaitForDiskSpace(t *testing.T) {
	t.Parallel()
	var free atomic.Uint64
	free.Store(1 << 30)
	s := openTest(t, Options{Dir: t.TempDir(), MinFreeBytes: 64 << 20,
		FreeBytes: func(string) (uint64, error) { return free.Load(), nil }})
	ctx := context.Background()
	if _, err := s.Append(ctx, "c", Record{ID: "1", Payload: []byte("one")}); err != nil {
		t.Fatal(err)
	}
	if s.SpaceProblem() != nil {
		t.Fatalf("a problem with 1 GiB free: %v", s.SpaceProblem())
	}
	free.Store(10 << 20)
	_, err := s.Append(ctx, "c", Record{ID: "2", Payload: []byte("two")})
	if !errors.Is(err, ErrStorageFull) || !strings.Contains(err.Error(), "10.0 MiB free, under the 64.0 MiB kept in reserve") {
		t.Fatalf("append with 10 MiB free: %v, want ErrStorageFull saying how much", err)
	}
	if res, err := s.AppendBatch(ctx, []ChannelRecord{{Channel: "c", Record: Record{ID: "3"}}}); err != nil || !errors.Is(res[0].Err, ErrStorageFull) {
		t.Fatalf("batch with 10 MiB free: %+v %v", res, err)
	}
	if s.SpaceProblem() == nil {
		t.Fatal("no problem reported with 10 MiB free")
	}
	page, err := s.Read(ctx, "c", 0, 10)
	if err != nil || page.Head != 1 || len(page.Entries) != 1 {
		t.Fatalf("read while full: %+v %v, want the one record", page, err)
	}
	free.Store(100 << 20)
	res, err := s.Append(ctx, "c", Record{ID: "4", Payload: []byte("four")})
	if err != nil || res.Offset != 2 {
		t.Fatalf("append once space is back: %+v %v, want offset 2", res, err)
	}
}
