//go:build !unix

package store

import "errors"

// diskFree is not measured here: the reserve is not applied.
func diskFree(string) (uint64, error) { return 0, errors.ErrUnsupported }
