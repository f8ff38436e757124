package ws

import (
	"testing"

	"github.com/gorilla/websocket"

	"github.com/heraldrt/herald/protocol"
	"github.com/heraldrt/herald/server"
)

// Each reason the core closes a session for has its close code
// (PROTOCOL.md, "Close codes"); a client that left is not told.
func TestCloseCodeOfEachReason(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		reason server.Reason
		code   int
		told   bool
	}{
		{server.ReasonShutdown, websocket.CloseServiceRestart, true},
		{server.ReasonSlowConsumer, protocol.CloseSlowConsumer, true},
		{server.ReasonTokenExpired, protocol.CloseTokenExpired, true},
		{server.ReasonInternal, protocol.CloseInternalError, true},
		{server.ReasonUnavailable, protocol.CloseTryAgainLater, true},
		{server.ReasonRevoked, protocol.ClosePolicy, true},
		{server.ReasonKicked, protocol.ClosePolicy, true},
		{server.ReasonBanned, protocol.ClosePolicy, true},
		{server.ReasonReplaced, protocol.ClosePolicy, true},
		{server.ReasonClientGone, 0, false},
		{server.ReasonWriteError, 0, false},
	} {
		code, told := closeCode(c.reason)
		if code != c.code || told != c.told {
			t.Errorf("%s: code %d told %v, want %d %v", c.reason, code, told, c.code, c.told)
		}
	}
}
