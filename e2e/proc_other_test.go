//go:build !linux

package e2e

import (
	"os"
	"syscall"
)

// childProcAttr: without Linux's Pdeathsig, a child process (nginx) is
// started as it is.
func childProcAttr() *syscall.SysProcAttr { return nil }

// killChild kills a child process.
func killChild(p *os.Process) error { return p.Kill() }
