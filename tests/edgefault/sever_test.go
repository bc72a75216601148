package edgefault

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"
)

// severable is a TCP forwarder on loopback in front of a server: the test
// severs it (the listener closed, every connection through it cut, new
// ones refused) and restores it on the same address, as a partition
// between a component and the server would.
type severable struct {
	addr, target string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// newSeverable forwards a free loopback address to target.
func newSeverable(t *testing.T, target string) *severable {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &severable{addr: ln.Addr().String(), target: target, conns: map[net.Conn]struct{}{}}
	s.serve(ln)
	t.Cleanup(func() { s.sever(); s.wg.Wait() })
	return s
}

func (s *severable) serve(ln net.Listener) {
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", s.target)
			if err != nil {
				c.Close()
				continue
			}
			if !s.track(c, up) {
				c.Close()
				up.Close()
				return
			}
			for _, p := range [][2]net.Conn{{c, up}, {up, c}} {
				s.wg.Add(1)
				go func() {
					defer s.wg.Done()
					_, _ = io.Copy(p[0], p[1])
					p[0].Close()
					p[1].Close()
				}()
			}
		}
	}()
}

// track records the pair unless the forwarder was severed meanwhile.
func (s *severable) track(cs ...net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return false
	}
	for _, c := range cs {
		s.conns[c] = struct{}{}
	}
	return true
}

// sever closes the listener and every connection through it.
func (s *severable) sever() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		s.ln.Close()
		s.ln = nil
	}
	for c := range s.conns {
		c.Close()
		delete(s.conns, c)
	}
}

// restore listens again on the same address.
func (s *severable) restore() error {
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return errors.Join(errors.New("listen again on "+s.addr), err)
	}
	s.serve(ln)
	return nil
}
