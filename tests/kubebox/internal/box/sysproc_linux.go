package box

import "syscall"

// childSysProcAttr puts a child in its own process group, so a terminal's
// Ctrl-C reaches only kubebox, which then stops the components in order, and
// asks the kernel to send the child SIGTERM when kubebox dies, however it
// dies.
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
