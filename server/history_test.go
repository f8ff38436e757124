package server

import (
	"context"
	"testing"

	"github.com/heraldrt/herald/store"
)

func TestHistoryOfTrimmedRangeSaysReset(t *testing.T) {
	t.Parallel()
	srv, st := newTestServer(t, Config{})
	publishN(t, srv, "short", 1, 10)
	if _, err := st.Trim(context.Background(), "short", store.Retention{MaxCount: 4}); err != nil {
		t.Fatal(err)
	}
	page, err := srv.History(context.Background(), system, HistoryRequest{Channel: "short", Since: 2, Limit: limitOf(100)})
	if err != nil {
		t.Fatal(err)
	}
	if !page.Reset || page.Head != 10 || len(page.Messages) != 4 || page.Next != 10 {
		t.Fatalf("page %+v", page)
	}
	page, err = srv.History(context.Background(), system, HistoryRequest{Channel: "short", Since: 7, Limit: limitOf(100)})
	if err != nil || page.Reset || len(page.Messages) != 3 {
		t.Fatalf("page after a kept offset: %+v %v", page, err)
	}
}
