package e2e

import (
	"os"
	"syscall"
)

// helperProcAttr puts a helper process (nginx) in its own process group,
// so a last-resort SIGKILL reaches its workers too (workers do not die
// with their master), and has it sent a SIGTERM if the test binary dies
// without cleaning up (a -timeout panic).
func helperProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}

// killHelper kills a helper started with helperProcAttr, and its group.
func killHelper(p *os.Process) error {
	return syscall.Kill(-p.Pid, syscall.SIGKILL)
}
