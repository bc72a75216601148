package proxyless

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// edgeService stands in for the edge's Service and kube-proxy: a TCP
// address (the server_uri of every bootstrap, as the injector writes the
// Service's name) whose connections it forwards to the first edge
// endpoint that accepts one. A killed edge refuses, so a client's new
// connection lands on the next; an open connection to it breaks both
// ways, as a connection through kube-proxy's NAT does.
type edgeService struct {
	ln net.Listener

	mu        sync.Mutex
	endpoints []string
	// conns counts the connections forwarded to each endpoint.
	conns map[string]int
	open  map[net.Conn]struct{}
}

// newEdgeService listens on a free loopback port and forwards to
// endpoints; it stops when the test ends.
func newEdgeService(t *testing.T, endpoints ...string) *edgeService {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &edgeService{ln: ln, endpoints: endpoints, conns: map[string]int{}, open: map[net.Conn]struct{}{}}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.forward(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for c := range s.open {
			c.Close()
		}
		s.mu.Unlock()
		wg.Wait()
	})
	return s
}

// Addr is the Service's address.
func (s *edgeService) Addr() string { return s.ln.Addr().String() }

// setEndpoints replaces the endpoints, as an EndpointSlice update does.
func (s *edgeService) setEndpoints(eps ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.endpoints = eps
}

// count is the number of connections forwarded to ep so far.
func (s *edgeService) count(ep string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns[ep]
}

func (s *edgeService) track(c net.Conn, add bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		s.open[c] = struct{}{}
	} else {
		delete(s.open, c)
	}
}

// forward pipes c to the first endpoint that accepts a connection.
func (s *edgeService) forward(c net.Conn) {
	s.track(c, true)
	defer s.track(c, false)
	defer c.Close()
	s.mu.Lock()
	eps := append([]string(nil), s.endpoints...)
	s.mu.Unlock()
	var up net.Conn
	for _, ep := range eps {
		var err error
		if up, err = net.DialTimeout("tcp", ep, time.Second); err == nil {
			s.mu.Lock()
			s.conns[ep]++
			s.mu.Unlock()
			break
		}
	}
	if up == nil {
		return
	}
	s.track(up, true)
	defer s.track(up, false)
	defer up.Close()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src) // a reset by a killed edge ends it too; both sides close then
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
}
