package server

import (
	"errors"
	"fmt"
	"os"
	"testing"
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
