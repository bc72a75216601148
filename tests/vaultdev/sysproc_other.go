//go:build unix && !linux

package vaultdev

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{} }

// allStopped cannot be observed portably; Pause then waits a fixed time.
func allStopped(int) bool { return false }
