package bustest

import (
	"fmt"
	"net"
	"sync"
)

// Partition is a loopback TCP proxy between NATS clients and a server that
// a test can cut and heal, to partition one client (say, one edge) from
// NATS without touching the host's network: point the client at Addr
// instead of the server.
//
// A cut behaves as a network partition does, not as a closed socket: the
// connections stay open but nothing crosses them (what is sent waits in
// the proxy and the kernel's buffers), and a new connection is accepted
// but not forwarded, so a client notices only through its own timeouts
// (NATS's pings). Heal forwards what waited and dials the server for the
// connections accepted during the cut, as a partition that heals before
// TCP gives up would.
type Partition struct {
	ln       net.Listener
	upstream string

	mu     sync.Mutex
	cut    bool
	healed chan struct{} // closed at Heal; replaced at Cut
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// NewPartition listens on a free loopback port and forwards every
// connection to upstream ("host:port", or a nats:// URL).
func NewPartition(upstream string) (*Partition, error) {
	if h, ok := cutScheme(upstream); ok {
		upstream = h
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("partition proxy: %w", err)
	}
	p := &Partition{ln: ln, upstream: upstream, healed: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	close(p.healed)
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

func cutScheme(u string) (string, bool) {
	for _, s := range []string{"nats://", "tls://"} {
		if len(u) > len(s) && u[:len(s)] == s {
			return u[len(s):], true
		}
	}
	return "", false
}

// Addr is the proxy's address.
func (p *Partition) Addr() string { return p.ln.Addr().String() }

// URL is the nats:// URL of the proxy.
func (p *Partition) URL() string { return "nats://" + p.Addr() }

// Cut stops forwarding, in both directions, on every connection.
func (p *Partition) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.cut {
		p.cut, p.healed = true, make(chan struct{})
	}
}

// Heal forwards again.
func (p *Partition) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		p.cut = false
		close(p.healed)
	}
}

// gate returns a channel closed once the proxy forwards.
func (p *Partition) gate() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.healed
}

// Close stops the proxy and closes every connection.
func (p *Partition) Close() {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	if p.cut {
		p.cut = false
		close(p.healed)
	}
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}

// track remembers c so that Close closes it; false once closed.
func (p *Partition) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Partition) untrack(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.conns, c)
	c.Close()
}

func (p *Partition) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.serve(c)
		}()
	}
}

// serve forwards one connection, dialing the server once the proxy
// forwards.
func (p *Partition) serve(c net.Conn) {
	defer p.untrack(c)
	<-p.gate()
	up, err := net.Dial("tcp", p.upstream)
	if err != nil {
		return
	}
	if !p.track(up) {
		return
	}
	defer p.untrack(up)
	done := make(chan struct{}, 2)
	go func() { p.copy(up, c); done <- struct{}{} }()
	go func() { p.copy(c, up); done <- struct{}{} }()
	<-done
	// One side ended: end the other, as a closed socket would.
	c.Close()
	up.Close()
	<-done
}

// copy forwards from src to dst, holding each read until the proxy
// forwards.
func (p *Partition) copy(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			<-p.gate()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
