package main

import "testing"

func TestServeProcs(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		procs int
		set   bool
		want  int
	}{
		{1, false, 2}, // one CPU: a second P for the committer's sync
		{2, false, 2},
		{8, false, 8},
		{1, true, 1}, // GOMAXPROCS set: kept as given
		{3, true, 3},
	} {
		if got := serveProcs(c.procs, c.set); got != c.want {
			t.Errorf("serveProcs(%d, set %v) = %d, want %d", c.procs, c.set, got, c.want)
		}
	}
}
