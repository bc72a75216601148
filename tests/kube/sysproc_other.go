//go:build !linux

package kube

import "syscall"

// childSysProcAttr returns no special attributes: only Linux can tie a
// child's life to its parent's.
func childSysProcAttr() *syscall.SysProcAttr { return nil }
