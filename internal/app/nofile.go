package app

import "github.com/heraldrt/herald/internal/nofile"

// fileReserve is what the connection capacity leaves for descriptors the
// server opens later: the engine's new tables and value logs during
// flushes and compactions, the profiler's connections, a client of the
// API's own.
const fileReserve = 64

// connectionCapacity is how many connections a process can hold with
// limit descriptors, open of them in use already: each connection (SSE,
// WebSocket or long poll) is one descriptor. It returns 0 when the limit
// is unknown (0) or already spent.
func connectionCapacity(limit uint64, open int) uint64 {
	used := uint64(max(open, 0)) + fileReserve
	if limit == 0 || limit <= used {
		return 0
	}
	return limit - used
}

// logFileLimit raises the open-file limit and says how many connections
// the server can hold: the first thing to check when a server meant for
// many connections refuses them.
func (a *App) logFileLimit() {
	limit, err := nofile.Raise()
	if err != nil {
		a.logger.Warn("open-file limit", "err", err)
	}
	if limit == 0 {
		return
	}
	open := nofile.Open()
	a.logger.Info("open-file limit", "limit", limit, "open", open,
		"connections", connectionCapacity(limit, open))
}
