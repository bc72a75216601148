package edge

import (
	"strings"
	"testing"
	"time"

	"github.com/openservicemesh/osm/libs/xdstest"
)

// TestFreshEdgeWaitsForAWholeGeneration is the readiness half of fault F4
// (docs/faults.md): an edge started with no state while the compiler is
// writing the next generation's keys. Its watch delivers the current
// generation's record before those keys, whose values of the current
// generation the bucket no longer holds, so the current generation cannot
// be served whole: the edge must stay not ready, and admit no stream,
// until the next record arrives. Before, it turned ready on the current
// generation with the rewritten clusters left out and served proxies an
// empty cluster list.
func TestFreshEdgeWaitsForAWholeGeneration(t *testing.T) {
	m := seededMesh(t, "")
	// The compiler's next generation, half written: both clusters of a's
	// group rewritten, the generation record not yet.
	m.put(m.res(xdstest.Cluster("ca", 3*time.Second), "ca"), m.res(xdstest.Cluster("shared", 3*time.Second), "shared"))
	e := m.startEdge("edge-fresh", time.Minute)
	time.Sleep(time.Second)
	err := e.ready(t.Context())
	if err == nil || !strings.Contains(err.Error(), "whole generation") {
		t.Fatalf("readiness with a half-written generation in the bucket: %v, want not ready, waiting for a whole generation", err)
	}
	if e.edge.Server().Serving() {
		t.Fatal("the edge admits streams with a generation it cannot serve whole")
	}
	m.commit()
	m.waitReady(e)
	p := m.proxy(e, spiffe("a"), xdstest.ProxyOptions{NodeID: "a", Types: allTypes})
	initial(t, p)
	held := p.Held(cds)
	if len(held) != 2 {
		t.Fatalf("a holds clusters %v, want ca and shared", held)
	}
	for _, n := range []string{"ca", "shared"} {
		if d := timeout(t, xdstest.Response{Resources: held}, n); d != 3*time.Second {
			t.Errorf("cluster %s has connect timeout %s, want the new generation's 3s", n, d)
		}
	}
}
