//go:build !unix

package bench

import "os"

// allocatedBytes is the space a file takes on disk; here, its size.
func allocatedBytes(fi os.FileInfo) int64 { return fi.Size() }
