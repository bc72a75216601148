//go:build !linux

package netns

import (
	"errors"
	"net/netip"
	"syscall"
)

var errUnsupported = errors.New("network namespaces are Linux only")

func probe() error                             { return errUnsupported }
func sysProcAttr() *syscall.SysProcAttr        { return nil }
func setupLoopback(addrs []netip.Prefix) error { return errUnsupported }
