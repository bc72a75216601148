package xds

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/openservicemesh/osm/libs/xdstest"
)

// TestMaxStreams: with a limit of 2 (MeshConfig maxDataPlaneConnections),
// a third stream is refused with RESOURCE_EXHAUSTED naming the limit;
// closing one lets a new one in; lowering the limit under the count cuts
// no open stream; 0 lifts it.
func TestMaxStreams(t *testing.T) {
	f := newFixture(t)
	f.seed()
	f.srv.SetMaxStreams(2)
	open := func(node string) *xdstest.Proxy {
		p := f.proxy(spiffe("a"), xdstest.ProxyOptions{NodeID: node, Types: []string{cds}})
		xdstest.Next(t, p)
		return p
	}
	p1, p2 := open("1"), open("2")
	err := f.refusal(spiffe("b"), xdstest.ProxyOptions{NodeID: "3", Types: []string{cds}})
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "maxDataPlaneConnections 2") {
		t.Fatalf("third stream over a limit of 2: %v, want ResourceExhausted naming the limit", err)
	}
	if got := f.srv.Stats().Refused; got != 1 {
		t.Errorf("refused = %d, want 1", got)
	}
	p1.Stop()
	xdstest.WaitFor(t, "the closed stream to leave", func() bool { return f.srv.Stats().Connected == 1 })
	p3 := open("3")

	// Lowering the limit refuses new streams and keeps the open ones.
	f.srv.SetMaxStreams(1)
	if err := f.refusal(spiffe("b"), xdstest.ProxyOptions{NodeID: "4", Types: []string{cds}}); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("stream over a lowered limit: %v", err)
	}
	for _, p := range []*xdstest.Proxy{p2, p3} {
		select {
		case <-p.Done():
			t.Fatalf("an open stream ended when the limit was lowered: %v", p.Err())
		default:
		}
	}
	if got := f.srv.Stats().Connected; got != 2 {
		t.Errorf("connected = %d, want the 2 open before the limit was lowered", got)
	}
	f.srv.SetMaxStreams(0)
	open("5")
}
