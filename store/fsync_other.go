//go:build !linux

package store

import "os"

// datasync makes f's data durable. Outside Linux it is a full sync (on
// macOS, F_FULLFSYNC, which also flushes the drive's cache).
func datasync(f *os.File) error { return f.Sync() }
