//go:build linux

package vaultdev

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// sysProcAttr makes the kernel kill vault if the test process dies.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// allStopped reports whether every thread of pid is stopped (state T), so
// that a paused server can no longer answer a request already in flight.
func allStopped(pid int) bool {
	tasks, err := filepath.Glob(filepath.Join("/proc", itoa(pid), "task", "*", "stat"))
	if err != nil || len(tasks) == 0 {
		return false
	}
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			return false
		}
		// The state follows the parenthesised command name.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 || i+2 >= len(s) || (s[i+2] != 'T' && s[i+2] != 't') {
			return false
		}
	}
	return true
}
