package client

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that nothing a test started outlives it: every
// subscription's loop and every connection's reader stop on Close.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
