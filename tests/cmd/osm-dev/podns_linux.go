package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"syscall"
	"unsafe"
)

// podNS is the network namespace the dev stack makes for its proxyless
// pods. Its loopback interface carries the pod IPs; nothing else is on it,
// and nothing is added to the host's interfaces. One goroutine, locked to
// an OS thread that lives in the namespace, runs the work that must happen
// inside (opening listeners, starting the pods' processes, which inherit
// the thread's namespace); every other thread of the process stays in the
// host's namespace. The namespace goes away with that thread and the
// processes in it.
type podNS struct {
	work chan func()
	done chan struct{}
}

// newPodNS makes the namespace, brings its loopback up and puts addrs on
// it. Without CAP_SYS_ADMIN (not root) it fails with EPERM.
func newPodNS(addrs []netip.Prefix) (*podNS, error) {
	ns := &podNS{work: make(chan func()), done: make(chan struct{})}
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread is in another namespace and must not
		// run other goroutines; it exits when this goroutine returns.
		runtime.LockOSThread()
		if err := syscall.Unshare(syscall.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare(CLONE_NEWNET): %w", err)
			return
		}
		if err := setupLoopback(addrs); err != nil {
			errc <- err
			return
		}
		errc <- nil
		for {
			select {
			case f := <-ns.work:
				f()
			case <-ns.done:
				return
			}
		}
	}()
	if err := <-errc; err != nil {
		return nil, err
	}
	return ns, nil
}

// do runs f inside the namespace and waits for it. f must not call do.
func (ns *podNS) do(f func()) {
	finished := make(chan struct{})
	ns.work <- func() { defer close(finished); f() }
	<-finished
}

// close ends the namespace's thread; processes started in it and still
// running are killed (their parent-death signal).
func (ns *podNS) close() { close(ns.done) }

// setupLoopback brings lo up and adds addrs to it, in the calling
// thread's network namespace. In a new namespace lo has index 1.
func setupLoopback(addrs []netip.Prefix) error {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	var ifr struct {
		name  [syscall.IFNAMSIZ]byte
		flags uint16
		_     [22]byte
	}
	copy(ifr.name[:], "lo")
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.SIOCGIFFLAGS, uintptr(unsafe.Pointer(&ifr))); e != 0 {
		return fmt.Errorf("bring lo up: SIOCGIFFLAGS: %w", e)
	}
	ifr.flags |= syscall.IFF_UP
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.SIOCSIFFLAGS, uintptr(unsafe.Pointer(&ifr))); e != 0 {
		return fmt.Errorf("bring lo up: SIOCSIFFLAGS: %w", e)
	}
	for _, p := range addrs {
		if err := addLoopbackAddr(p); err != nil {
			return fmt.Errorf("add %s to lo: %w", p, err)
		}
	}
	return nil
}

// addLoopbackAddr adds the IPv4 prefix p to lo over rtnetlink
// (RTM_NEWADDR, as `ip addr add p dev lo`) and waits for the kernel's
// answer.
func addLoopbackAddr(p netip.Prefix) error {
	if !p.Addr().Is4() {
		return errors.New("only IPv4 is supported")
	}
	fd, err := syscall.Socket(syscall.AF_NETLINK, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, syscall.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		return err
	}
	const loIndex = 1
	ip := p.Addr().As4()
	attr := func(typ uint16) []byte {
		b := make([]byte, syscall.SizeofRtAttr+4)
		binary.NativeEndian.PutUint16(b[0:2], uint16(len(b)))
		binary.NativeEndian.PutUint16(b[2:4], typ)
		copy(b[syscall.SizeofRtAttr:], ip[:])
		return b
	}
	body := make([]byte, syscall.SizeofIfAddrmsg)
	body[0] = syscall.AF_INET
	body[1] = byte(p.Bits())
	binary.NativeEndian.PutUint32(body[4:8], loIndex)
	body = append(append(body, attr(syscall.IFA_LOCAL)...), attr(syscall.IFA_ADDRESS)...)
	msg := make([]byte, syscall.SizeofNlMsghdr, syscall.SizeofNlMsghdr+len(body))
	binary.NativeEndian.PutUint32(msg[0:4], uint32(syscall.SizeofNlMsghdr+len(body)))
	binary.NativeEndian.PutUint16(msg[4:6], syscall.RTM_NEWADDR)
	binary.NativeEndian.PutUint16(msg[6:8], syscall.NLM_F_REQUEST|syscall.NLM_F_ACK|syscall.NLM_F_CREATE|syscall.NLM_F_EXCL)
	binary.NativeEndian.PutUint32(msg[8:12], 1)
	msg = append(msg, body...)
	if err := syscall.Sendto(fd, msg, 0, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 4096)
	for {
		n, _, err := syscall.Recvfrom(fd, buf, 0)
		if err != nil {
			return err
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.Header.Type != syscall.NLMSG_ERROR || m.Header.Seq != 1 {
				continue
			}
			if len(m.Data) < 4 {
				return errors.New("short netlink answer")
			}
			if code := int32(binary.NativeEndian.Uint32(m.Data[0:4])); code != 0 {
				return syscall.Errno(-code)
			}
			return nil
		}
	}
}

// isTerminal reports whether f is a terminal (the live table redraws
// itself in place only there).
func isTerminal(f *os.File) bool {
	var t syscall.Termios
	_, _, e := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), syscall.TCGETS, uintptr(unsafe.Pointer(&t)))
	return e == 0
}

// termWidth is the width of the terminal f in columns; 0 when unknown.
func termWidth(f *os.File) int {
	var ws struct{ row, col, x, y uint16 }
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), syscall.TIOCGWINSZ, uintptr(unsafe.Pointer(&ws))); e != 0 {
		return 0
	}
	return int(ws.col)
}
