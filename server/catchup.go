package server

import (
	"context"
	"errors"

	"github.com/heraldrt/herald/store"
)

// Catch-up reads off the writers. A session's catch-up reads its history
// on the goroutine that drains it: a transport's writer, which serves
// many sessions. An embedded engine answers in microseconds; a remote
// one (store.RemoteReader) takes a network round trip or more, and a
// thousand clients resuming at once would hold every writer's other
// sessions for as long. With such an engine a page is read by a
// goroutine of its own, at most maxReads at a time for the server, and
// the writer takes it once it is there: Drain never waits on the network.

// maxReads bounds the catch-up reads under way at once on a remote
// engine.
const maxReads = 64

// errFetching is a catch-up page still being read: the subscription's
// writer is signalled when it is there.
var errFetching = errors.New("server: catch-up page being read")

// pageFetch is a catch-up page being read for a subscription.
type pageFetch struct {
	since uint64 // the page follows this offset
	done  chan struct{}
	page  store.Page
	err   error
}

// readPage returns the page of sub's history after sub.since, or
// errFetching while it is being read off the writer (remote engines).
// Only the goroutine that drains the session calls it.
func (sub *subscription) readPage(ctx context.Context, pageSize int) (store.Page, error) {
	srv := sub.sess.srv
	if srv.reads == nil {
		return srv.engine.Read(ctx, sub.name, sub.since, pageSize)
	}
	if f := sub.fetch; f != nil {
		select {
		case <-f.done:
			sub.fetch = nil
			if f.since == sub.since {
				return f.page, f.err
			}
			// Read for an earlier position (the subscription was reset
			// meanwhile): read again.
		default:
			return store.Page{}, errFetching
		}
	}
	f := &pageFetch{since: sub.since, done: make(chan struct{})}
	sub.fetch = f
	name, q := sub.name, sub.sess.q
	// Owned by the session: it ends with the read, which ends at the
	// latest when the session's ctx is cancelled (the session closes).
	go func() {
		select {
		case srv.reads <- struct{}{}:
			f.page, f.err = srv.engine.Read(ctx, name, f.since, pageSize)
			<-srv.reads
		case <-ctx.Done():
			f.err = ctx.Err()
		}
		close(f.done)
		q.signal() // the writer comes back for the page
	}()
	return store.Page{}, errFetching
}
