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

// TestHistoryPageLimitsAreTheCores: every path to the history (the API,
// the WebSocket) gets the same default, bounds and errors, from History.
func TestHistoryPageLimitsAreTheCores(t *testing.T) {
	t.Parallel()
	srv, _ := newTestServer(t, Config{})
	publishN(t, srv, "long", 1, 1001)
	cases := []struct {
		limit *uint64
		n     int
		msg   string
	}{
		{nil, DefaultHistoryLimit, ""},
		{limitOf(1), 1, ""},
		{limitOf(MaxHistoryLimit), MaxHistoryLimit, ""},
		{limitOf(0), 0, "limit must be at least 1"},
		{limitOf(MaxHistoryLimit + 1), 0, "limit 1001 is over the limit of 1000"},
	}
	for _, tc := range cases {
		page, err := srv.History(context.Background(), system, HistoryRequest{Channel: "long", Limit: tc.limit})
		if tc.msg != "" {
			if e := AsError(err); e.Code != 400 || e.Message != tc.msg {
				t.Errorf("limit %d: %v, want a 400 %q", *tc.limit, err, tc.msg)
			}
			continue
		}
		if err != nil || len(page.Messages) != tc.n {
			t.Errorf("limit %v: %d messages, %v; want %d", tc.limit, len(page.Messages), err, tc.n)
		}
	}
}
