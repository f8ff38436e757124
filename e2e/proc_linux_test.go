package e2e

import (
	"os"
	"syscall"
)

// childProcAttr puts a child process (nginx) in its own process group,
// so a last-resort SIGKILL reaches its workers too (workers do not die
// with their master), and has it sent a SIGTERM if the test binary dies
// without cleaning up (a -timeout panic).
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}

// killChild kills a child started with childProcAttr, and its group.
func killChild(p *os.Process) error {
	return syscall.Kill(-p.Pid, syscall.SIGKILL)
}
