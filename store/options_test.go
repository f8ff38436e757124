package store

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
)

func TestMemorySettingsAreChecked(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		mem  Memory
		key  string // "" when valid
	}{
		{"defaults", Memory{}, ""},
		{"the smallest memtable", Memory{MemTableBytes: minMemTableBytes}, ""},
		{"a memtable too small for a message", Memory{MemTableBytes: 4 << 20}, "store.memtable_bytes"},
		{"no memtable may wait", Memory{MemTables: -1}, "store.memtables"},
		{"a negative block cache", Memory{BlockCacheBytes: -1}, "store.block_cache_bytes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := Options{Memory: tc.mem}.Validate()
			if tc.key == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			var se *SettingError
			if !errors.As(err, &se) || se.ConfigKeys()[0] != tc.key || !strings.Contains(err.Error(), tc.key) {
				t.Fatalf("Validate = %v, want an error naming %s", err, tc.key)
			}
			if _, err := Open(Options{InMemory: true, Memory: tc.mem}); err == nil {
				t.Fatal("Open accepted the setting Validate refused")
			}
		})
	}
}

// The largest record a store accepts commits with the smallest memtable:
// on disk, the largest value Badger keeps in its tree and a record that
// goes to its value log; in memory, the largest it allows.
func TestTheLargestRecordFitsTheSmallestMemtable(t *testing.T) {
	t.Parallel()
	mem := Memory{MemTableBytes: minMemTableBytes}
	cases := []struct {
		name   string
		onDisk bool
		size   int
	}{
		{"in memory", false, Options{InMemory: true}.withDefaults().maxRecordBytes()},
		{"on disk, kept in the tree", true, 1<<20 - entryHeaderLen - 1},
		{"on disk, in the value log", true, defaultMaxBatchBytes},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			opts := Options{Memory: mem, Retention: keepAll}
			if tc.onDisk {
				opts.Dir = t.TempDir()
			}
			s := openTest(t, opts)
			p := bytes.Repeat([]byte{'m'}, tc.size)
			for range 3 {
				mustAppend(t, s, "big", Record{Payload: p})
			}
			if e := readAll(t, s, "big", 0); len(e) != 3 || !bytes.Equal(e[2].Payload, p) {
				t.Fatalf("read back %d entries", len(e))
			}
			if _, err := s.Head(context.Background(), "big"); err != nil {
				t.Fatal(err)
			}
		})
	}
}
