//go:build !linux

package main

import (
	"errors"
	"net/netip"
	"os"
)

// podNS is the proxyless pods' network namespace; Linux only.
type podNS struct{}

func newPodNS([]netip.Prefix) (*podNS, error) {
	return nil, errors.New("network namespaces are a Linux feature")
}

func (*podNS) do(f func()) { f() }

func (*podNS) close() {}

func isTerminal(*os.File) bool { return false }

func termWidth(*os.File) int { return 0 }
