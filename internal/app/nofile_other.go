//go:build !unix

package app

// raiseNoFile does nothing where the system has no RLIMIT_NOFILE
// (Windows): 0 means no known limit.
func raiseNoFile() (uint64, error) { return 0, nil }

// openFiles returns -1: unknown.
func openFiles() int { return -1 }
