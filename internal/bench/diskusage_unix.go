//go:build unix

package bench

import (
	"os"
	"syscall"
)

// allocatedBytes is the space a file takes on disk: its blocks.
func allocatedBytes(fi os.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int64(st.Blocks) * 512
	}
	return fi.Size()
}
