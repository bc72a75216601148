package xds

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/xdstest"
)

// TestIdentityThatLeavesTheMeshLosesItsStream (issue 15, item 6; FAULTS
// F13): the edge serves an identity, its certificates included, only while
// the compiled mesh holds its group. When the group goes (the
// ServiceAccount was deleted, or its last pod or namespace left), the
// identity's streams end at that commit, and a reconnection is refused
// until it returns.
func TestIdentityThatLeavesTheMeshLosesItsStream(t *testing.T) {
	f := newFixture(t)
	f.seed()
	a := f.proxy(spiffe("a"), xdstest.ProxyOptions{NodeID: "a", Types: allTypes})
	b := f.proxy(spiffe("b"), xdstest.ProxyOptions{NodeID: "b", Types: allTypes})
	initial(t, a, 4)
	initial(t, b, 4)

	start := time.Now()
	f.commit(xdstest.Write{Key: layout.GroupKey("a", "a")})
	err := xdstest.Refusal(t, a)
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a's stream after its group went: %v, want PermissionDenied", err)
	}
	t.Logf("a's stream closed %s after the commit that dropped its group", time.Since(start).Round(time.Millisecond))
	select {
	case <-b.Done():
		t.Fatalf("b's stream ended too: %v", b.Err())
	default:
	}
	if got := f.srv.Stats().Evicted; got != 1 {
		t.Errorf("evicted = %d, want 1", got)
	}

	if err := f.refusal(spiffe("a"), xdstest.ProxyOptions{NodeID: "a2", Types: allTypes}); status.Code(err) != codes.Unavailable {
		t.Fatalf("a reconnecting outside the mesh: %v, want Unavailable", err)
	}
	// The identity returns: it is served again.
	f.commit(xdstest.Group("a", "a", f.gen+1, map[string][]string{lds: {"out-a"}}))
	again := f.proxy(spiffe("a"), xdstest.ProxyOptions{NodeID: "a3", Types: []string{lds}})
	if r := xdstest.Next(t, again); len(r.Names()) != 1 {
		t.Errorf("a back in the mesh got %v", r.Names())
	}
}
