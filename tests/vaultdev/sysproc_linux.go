//go:build linux

package vaultdev

import "syscall"

// sysProcAttr makes the kernel kill vault if the test process dies.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
