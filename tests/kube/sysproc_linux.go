package kube

import "syscall"

// childSysProcAttr makes the kernel send SIGTERM to kubebox when the test
// process dies, so a crashed or timed-out test leaves no cluster behind.
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
