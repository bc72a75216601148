package edge

import (
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"

	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/xdstest"
)

// TestEdgeFollowsARecreatedCompiledBucket (issue 15, item 2, the edge's
// side): mesh-compiled is deleted and declared again under a running edge
// with a proxy connected, and the compiler rewrites it with a generation
// after its last (as a running compiler does, see the policy-compiler's
// TestLostCompiledBucketIsRewritten). The edge's watch, whose revisions
// started over, would wait past the old ones and miss everything; it
// notices the new bucket, watches it again, and the edit reaches the proxy.
func TestEdgeFollowsARecreatedCompiledBucket(t *testing.T) {
	m := seededMesh(t, "")
	e := m.startReady("edge-1", time.Minute)
	p := m.proxy(e, spiffe("a"), xdstest.ProxyOptions{NodeID: "a", Types: allTypes})
	initial(t, p)
	// The old bucket's revisions run well past what the new one will hold.
	for i := range 200 {
		m.put(m.res(xdstest.Cluster("ca", time.Duration(i+1)*time.Millisecond), "ca"))
	}

	if err := m.conn(bus.RoleAdmin).JetStream().DeleteKeyValue(t.Context(), bus.BucketCompiled); err != nil {
		t.Fatal(err)
	}
	lost := time.Now()
	m.createBuckets()
	m.seed() // every key again, and the next generation
	m.commit(m.res(xdstest.Cluster("ca", 7*time.Second), "ca"))
	xdstest.WaitFor(t, "the edit after the loss at the proxy", func() bool {
		var c clusterv3.Cluster
		a := p.Held(cds)["ca"]
		return a != nil && a.UnmarshalTo(&c) == nil && c.GetConnectTimeout().AsDuration() == 7*time.Second
	})
	t.Logf("the edit reached the proxy %s after the bucket was deleted", time.Since(lost).Round(time.Millisecond))
}
