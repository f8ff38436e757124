package server

import "testing"

func TestQueueBoundsByCountAndBytes(t *testing.T) {
	t.Parallel()
	msg := func(n int) Item { return Item{Kind: KindMessage, Msg: &Message{Raw: make([]byte, n)}} }
	cases := []struct {
		name             string
		maxItems, maxLen int
		sizes            []int
		accepted         int
	}{
		{"by count", 3, 1000, []int{1, 1, 1, 1}, 3},
		{"by bytes", 100, 10, []int{4, 4, 4}, 2},
		{"exact fit", 2, 8, []int{4, 4, 1}, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			q := newQueue(tc.maxItems, tc.maxLen)
			n := 0
			for _, s := range tc.sizes {
				if q.push(msg(s)) {
					n++
				}
			}
			if n != tc.accepted {
				t.Fatalf("accepted %d, want %d", n, tc.accepted)
			}
			select {
			case <-q.ready:
			default:
				t.Fatal("queue with items is not ready")
			}
			if got := q.drain(nil, 0); len(got) != tc.accepted {
				t.Fatalf("drained %d", len(got))
			}
			if !q.push(msg(1)) {
				t.Fatal("drained queue refuses a push")
			}
			q.close()
			if q.push(msg(1)) {
				t.Fatal("closed queue accepted a push")
			}
		})
	}
}
