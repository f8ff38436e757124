package store

import (
	"context"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// Read returns up to limit entries of the channel with offsets greater than
// after, in ascending order (limit <= 0 means 1,000; at most 100,000), with
// the channel's epoch, head and first kept offset.
//
// The head is read before the log, and no entry beyond it is returned, so
// a caller that continues from the last entry (or from Head when there are
// none) misses nothing. Trimmed reports that entries right after after are
// gone (after+1 < First and after < Head). A channel never used yields an
// empty Page with Epoch "" and is not created.
func (s *Store) Read(ctx context.Context, channel string, after uint64, limit int) (Page, error) {
	if err := checkChannel(channel); err != nil {
		return Page{}, err
	}
	if err := ctx.Err(); err != nil {
		return Page{}, err
	}
	if !s.enter() {
		return Page{}, ErrClosed
	}
	defer s.exit()
	if limit <= 0 {
		limit = defaultReadLimit
	}
	limit = min(limit, maxReadLimit)

	c, err := s.channel(channel, false)
	if err != nil {
		return Page{}, err
	}
	if c == nil {
		return Page{First: 1}, nil
	}
	epoch, head, first := c.snapshot()
	page := Page{Epoch: epoch, Head: head, First: first}
	if after >= head {
		return page, nil
	}
	start := max(after+1, first)
	if start <= head {
		n := min(uint64(limit), head-start+1)
		page.Entries, err = s.readRange(ctx, channel, start, head, int(n))
		if err != nil {
			return Page{}, err
		}
	}
	// The trimmer may have removed entries since the snapshot: the first
	// entry found, or the lack of one, tells how far it got.
	switch {
	case len(page.Entries) == 0:
		page.First = head + 1
	case page.Entries[0].Offset > start:
		page.First = max(page.First, page.Entries[0].Offset)
	}
	page.Trimmed = after+1 < page.First
	return page, nil
}

// slabSize is the size of the buffers a page's payloads are copied into:
// one allocation per 64 KiB of payload rather than one per entry.
const slabSize = 64 << 10

// readRange returns up to n entries of channel from offset start, none
// beyond head.
func (s *Store) readRange(ctx context.Context, channel string, start, head uint64, n int) ([]Entry, error) {
	entries := make([]Entry, 0, n)
	var slab []byte
	err := s.db.View(func(txn *badger.Txn) error {
		opt := badger.DefaultIteratorOptions
		opt.PrefetchValues = false
		opt.Prefix = logPrefix(channel)
		it := txn.NewIterator(opt)
		defer it.Close()
		for it.Seek(logKey(channel, start)); it.Valid() && len(entries) < n; it.Next() {
			if len(entries)%1024 == 1023 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			item := it.Item()
			off := logKeyOffset(item.Key())
			if off > head {
				break
			}
			err := item.Value(func(v []byte) error {
				t, p, err := parseEntryValue(v)
				if err != nil {
					return fmt.Errorf("offset %d: %w", off, err)
				}
				if cap(slab)-len(slab) < len(p) {
					slab = make([]byte, 0, max(slabSize, len(p)))
				}
				at := len(slab)
				slab = append(slab, p...)
				entries = append(entries, Entry{Offset: off, Time: t, Payload: slab[at:len(slab):len(slab)]})
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: read %q from %d: %w", channel, start, err)
	}
	return entries, nil
}
