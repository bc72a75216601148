//go:build !linux

package box

import "syscall"

// childSysProcAttr puts a child in its own process group, so a terminal's
// Ctrl-C reaches only kubebox. Only Linux can also tie a child's life to
// its parent's.
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
