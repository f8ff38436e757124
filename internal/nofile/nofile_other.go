//go:build !unix

package nofile

// Raise does nothing where the system has no RLIMIT_NOFILE
// (Windows): 0 means no known limit.
func Raise() (uint64, error) { return 0, nil }

// Open returns -1: unknown.
func Open() int { return -1 }
