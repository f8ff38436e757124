package app

import (
	"net/http"
	"time"

	"github.com/heraldrt/herald/server"
)

// backup serves GET /api/backup (API key): a consistent backup of the
// embedded store, streamed while the server serves (store.Store.Backup).
// `herald backup FILE` calls it; `herald restore FILE` writes one into an
// empty data directory. A cluster's data is NATS's: its backups are
// NATS's own (nats stream backup), so a node answers 501.
func (a *App) backup(w http.ResponseWriter, r *http.Request) {
	if !a.srv.RequireSystem(w, r, "taking a backup") {
		return
	}
	if a.badger == nil {
		server.WriteError(w, r, server.Errorf(http.StatusNotImplemented,
			"this node's channels live in NATS JetStream: back them up with NATS's own tools (nats stream backup)"), a.logger)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="herald-`+time.Now().UTC().Format("20060102-150405")+`.backup"`)
	start := time.Now()
	info, err := a.badger.Backup(r.Context(), w)
	if err != nil {
		// The header is sent: the client finds the file's end missing,
		// and refuses it.
		a.logger.Warn("backup failed", "err", err)
		panic(http.ErrAbortHandler)
	}
	a.logger.Info("backup taken", "bytes", info.Bytes, "sha256", info.SHA256, "took", time.Since(start).Round(time.Millisecond))
}
