//go:build !linux

package e2e

import (
	"os"
	"syscall"
)

// helperProcAttr: without Linux's Pdeathsig, a helper process (nginx) is
// started as it is.
func helperProcAttr() *syscall.SysProcAttr { return nil }

// killHelper kills a helper process.
func killHelper(p *os.Process) error { return p.Kill() }
