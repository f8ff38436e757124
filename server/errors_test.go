package server

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/heraldrt/herald/store"
)

func TestWriteFailedTellsSlowReadersFromBrokenConnections(t *testing.T) {
	t.Parallel()
	cases := []struct {
		err  error
		want Reason
	}{
		{os.ErrDeadlineExceeded, ReasonSlowConsumer},
		{fmt.Errorf("write tcp: %w", os.ErrDeadlineExceeded), ReasonSlowConsumer},
		{errors.New("write: broken pipe"), ReasonWriteError},
		{errors.New("use of closed network connection"), ReasonWriteError},
	}
	for _, tc := range cases {
		if got := WriteFailed(tc.err); got != tc.want {
			t.Errorf("WriteFailed(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
	if !ReasonSlowConsumer.Reconnect() || ReasonBanned.Reconnect() || ReasonKicked.String() != "disconnected" {
		t.Fatal("reason properties")
	}
}

// An engine away from its storage is a 503 to try again, not a 500;
// its internals stay out of the message.
func TestAsErrorTellsUnavailableFromInternal(t *testing.T) {
	t.Parallel()
	cases := []struct {
		err   error
		code  int
		retry time.Duration
	}{
		{fmt.Errorf("%w: %w", store.ErrUnavailable, errors.New("nats: timeout")), 503, time.Second},
		{ErrShuttingDown, 503, time.Second},
		{errors.New("disk on fire"), 500, 0},
	}
	for _, tc := range cases {
		e := AsError(tc.err)
		if e.Code != tc.code || e.RetryAfter != tc.retry || strings.Contains(e.Message, "nats") || strings.Contains(e.Message, "disk") {
			t.Errorf("AsError(%v) = %d %q retry %s, want %d retry %s", tc.err, e.Code, e.Message, e.RetryAfter, tc.code, tc.retry)
		}
	}
}
