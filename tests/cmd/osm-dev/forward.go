package main

import (
	"io"
	"net"
	"sync"
	"time"
)

// forwarder stands in for the edge's Service and kube-proxy in the pods'
// namespace: it accepts on a listener opened inside the namespace and
// connects each connection to the edge on the host's loopback (this
// process's other threads are in the host's namespace).
type forwarder struct {
	ln net.Listener
	to string
	wg sync.WaitGroup

	mu   sync.Mutex
	open map[net.Conn]struct{}
}

// forward serves ln, piping each connection to the address to.
func forward(ln net.Listener, to string) *forwarder {
	f := &forwarder{ln: ln, to: to, open: map[net.Conn]struct{}{}}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				f.pipe(c)
			}()
		}
	}()
	return f
}

func (f *forwarder) track(c net.Conn, add bool) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.open == nil {
		return false // closed
	}
	if add {
		f.open[c] = struct{}{}
	} else {
		delete(f.open, c)
	}
	return true
}

func (f *forwarder) pipe(c net.Conn) {
	defer c.Close()
	if !f.track(c, true) {
		return
	}
	defer f.track(c, false)
	up, err := net.DialTimeout("tcp", f.to, 2*time.Second)
	if err != nil {
		return
	}
	defer up.Close()
	if !f.track(up, true) {
		return
	}
	defer f.track(up, false)
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src) // either side's close or reset ends both
		done <- struct{}{}
	}
	go cp(up, c)
	go cp(c, up)
	<-done
}

// close stops accepting, closes every open connection and waits.
func (f *forwarder) close() {
	f.ln.Close()
	f.mu.Lock()
	for c := range f.open {
		c.Close()
	}
	f.open = nil
	f.mu.Unlock()
	f.wg.Wait()
}
