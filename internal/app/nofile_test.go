package app

import (
	"bytes"
	"log/slog"
	"regexp"
	"strconv"
	"testing"

	"github.com/heraldrt/herald/internal/nofile"
)

func TestConnectionCapacityLeavesTheOpenFilesAndAReserve(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		limit uint64
		open  int
		want  uint64
	}{
		{20000, 36, 20000 - 36 - fileReserve},
		{1024, 10, 1024 - 10 - fileReserve},
		{1024, -1, 1024 - fileReserve}, // open files unknown
		{0, 10, 0},                     // no known limit
		{50, 10, 0},                    // spent
		{74, 10, 0},
	} {
		if got := connectionCapacity(c.limit, c.open); got != c.want {
			t.Errorf("connectionCapacity(%d, %d) = %d, want %d", c.limit, c.open, got, c.want)
		}
	}
}

// The server says at start how many connections it can hold.
func TestServeLogsHowManyConnectionsItCanHold(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	a, err := New(testConfig(), slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown()
	limit, _ := nofile.Raise()
	if limit == 0 {
		if bytes.Contains(logs.Bytes(), []byte("open-file limit")) {
			t.Errorf("a system without an open-file limit logged one:\n%s", logs.String())
		}
		return
	}
	m := regexp.MustCompile(`msg="open-file limit" limit=(\d+) open=(-?\d+) connections=(\d+)`).FindSubmatch(logs.Bytes())
	if m == nil {
		t.Fatalf("no open-file limit line in:\n%s", logs.String())
	}
	logged, _ := strconv.ParseUint(string(m[1]), 10, 64)
	conns, _ := strconv.ParseUint(string(m[3]), 10, 64)
	if logged != limit || conns == 0 || conns >= limit {
		t.Errorf("logged limit %d (the limit is %d), %d connections", logged, limit, conns)
	}
}
