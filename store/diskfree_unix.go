//go:build unix

package store

import "syscall"

// diskFree returns the bytes an unprivileged writer may still use on the
// file system holding dir.
func diskFree(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return uint64(st.Bavail) * uint64(st.Bsize), nil
}
