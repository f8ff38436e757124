package store

import (
	"fmt"
	"testing"
)

func TestMemTableHoldsAFullBatchInOneTransaction(t *testing.T) {
	t.Parallel()
	cases := []struct{ bytes, records int }{
		{defaultMaxBatchBytes, defaultMaxBatchRecords},
		{1 << 10, 1},
		{1 << 20, maxBatchRecordsLimit},
		{maxBatchBytesLimit, maxBatchRecordsLimit},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%d bytes %d records", tc.bytes, tc.records), func(t *testing.T) {
			mt := memTableSize(tc.bytes, tc.records)
			// Badger's limits (checkAndSetOptions, Txn.checkSize).
			maxSize := 15 * mt / 100
			maxCount := maxSize / skiplistNodeSize
			// One batch: cost <= bytes, or one record of bytes plus its keys
			// (< 2 KiB), and at most 3 entries per record.
			if need := int64(tc.bytes) + 2<<10; maxSize <= need {
				t.Errorf("memtable %d allows %d bytes per transaction, a batch needs %d", mt, maxSize, need)
			}
			if need := int64(3*tc.records + 1); maxCount <= need {
				t.Errorf("memtable %d allows %d entries per transaction, a batch needs %d", mt, maxCount, need)
			}
			if mt%(1<<20) != 0 || mt < 32<<20 {
				t.Errorf("memtable %d is not a whole number of MiB, at least 32", mt)
			}
		})
	}
	if mt := memTableSize(defaultMaxBatchBytes, defaultMaxBatchRecords); mt != 32<<20 {
		t.Errorf("default memtable is %d MiB, want 32", mt>>20)
	}
}
