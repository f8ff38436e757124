//go:build !unix

package bench

// benchRaiseNoFile reports no open-file limit where the system has no
// RLIMIT_NOFILE (Windows): 0 means unknown, and the run does not check it.
func benchRaiseNoFile() (uint64, error) { return 0, nil }
