package store

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// vlogFiles lists the value-log files in dir.
func vlogFiles(t *testing.T, dir string) []string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "*.vlog"))
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range names {
		names[i] = filepath.Base(n)
	}
	return names
}

// TestValueLogRewriteWaitsForAnIterator guards the Badger behaviour
// rewriteValueLog relies on for durability: a value-log file that GC
// rewrote is not deleted while an iterator is open, only when the last
// one closes. If a Badger upgrade changed this, a power loss between a
// rewrite and the next checkpoint could lose payloads.
func TestValueLogRewriteWaitsForAnIterator(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	opts := badger.DefaultOptions(dir).
		WithValueThreshold(valueThreshold).
		WithValueLogFileSize(1 << 20).
		WithMemTableSize(1 << 20).
		WithNumCompactors(2).
		WithNumLevelZeroTables(1).
		WithNumLevelZeroTablesStall(4).
		WithLogger(nil)
	db, err := badger.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { db.Close() }()
	value := make([]byte, 1000)
	write := func(from, to int, del bool) {
		t.Helper()
		wb := db.NewWriteBatch()
		for i := from; i < to; i++ {
			key := fmt.Appendf(nil, "k%06d", i)
			var err error
			if del {
				err = wb.Delete(key)
			} else {
				err = wb.Set(key, value)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if err := wb.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	// Closing flushes the memtable to a table. Three files of values in
	// one table; then all of them deleted, and newer values (a newer file,
	// so that the old ones may be rewritten), in another: compacting the
	// two drops the old versions and records the value log's garbage.
	reopen := func() {
		t.Helper()
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		if db, err = badger.Open(opts); err != nil {
			t.Fatal(err)
		}
	}
	write(0, 3000, false)
	reopen()
	write(0, 3000, true)
	write(3000, 4000, false)
	reopen()
	// The garbage reaches the value log's discard statistics through
	// compactions, which Badger also runs in the background: until one has
	// recorded enough, GC finds nothing to rewrite, and the compaction is
	// asked for again (a bounded number of times).
	var before, pinned []string
	for attempt := 1; ; attempt++ {
		if err := db.Flatten(1); err != nil {
			t.Fatal(err)
		}
		before = vlogFiles(t, dir)
		txn := db.NewTransaction(false)
		it := txn.NewIterator(badger.IteratorOptions{})
		err := db.RunValueLogGC(0.5)
		if err == nil {
			pinned = vlogFiles(t, dir)
		}
		it.Close()
		txn.Discard()
		if err == nil {
			break
		}
		if !errors.Is(err, badger.ErrNoRewrite) || attempt == 20 {
			t.Fatalf("value-log GC rewrote nothing after %d compactions: %v", attempt, err)
		}
	}
	after := vlogFiles(t, dir)

	for _, f := range before {
		if !slices.Contains(pinned, f) {
			t.Errorf("%s deleted while an iterator was open (before %v, pinned %v)", f, before, pinned)
		}
	}
	if len(after) >= len(pinned) {
		t.Errorf("no file deleted when the iterator closed: pinned %v, after %v", pinned, after)
	}
}
