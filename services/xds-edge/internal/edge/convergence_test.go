package edge

import (
	"net/http"
	"testing"
	"time"

	"github.com/openservicemesh/osm/libs/edgedebug"
	"github.com/openservicemesh/osm/libs/identity"
	"github.com/openservicemesh/osm/libs/xdstest"
)

// TestDebugConvergence: GET /v1/generations/N lists the proxies a commit
// affected, and only those, with each one's ACK and its latency from the
// compiler's commit, or its NACK; a proxy the commit changed nothing for
// is not listed.
func TestDebugConvergence(t *testing.T) {
	m := seededMesh(t, "")
	e, addr := m.startDebugEdge("edge-1")
	a := m.proxy(e, spiffe("a"), xdstest.ProxyOptions{NodeID: "uuid-a", Types: allTypes})
	initial(t, a)
	b := m.proxy(e, spiffe("b"), xdstest.ProxyOptions{NodeID: "uuid-b", Delta: true, Types: allTypes, Reject: func(r xdstest.Response) string {
		if r.TypeURL == lds && r.Version != "1" {
			return "listener out-b: unknown filter"
		}
		return ""
	}})
	initial(t, b)
	op := debugClient(t, m.pki, m.pki, identity.ControlPlaneURI("cluster.local", identity.RoleOperator).String())

	// Generation 2 reaches both: a ACKs, b ACKs its cluster and NACKs its
	// listener. Generation 3 changes a's cluster ca only.
	m.commit(m.res(xdstest.Cluster("shared", 2*time.Second), "shared"), m.res(xdstest.Listener("out-b", 15002), "out-b"))
	var g2 edgedebug.GenerationConvergence
	xdstest.WaitFor(t, "generation 2 ACKed by a and NACKed by b", func() bool {
		g2 = edgedebug.GenerationConvergence{}
		code, _ := get(t, op, addr, edgedebug.GenerationPath(2, 0), &g2)
		return code == http.StatusOK && g2.Acked == 2 && g2.Nacked == 1
	})
	if g2.Edge != "edge-1" || g2.Generation != "2" || g2.Affected != 2 || len(g2.Proxies) != 2 || g2.EdgeCommit.Before(g2.CompilerCommit) {
		t.Fatalf("generation 2: %+v", g2)
	}
	pa, pb := g2.Proxies[0], g2.Proxies[1]
	if pa.NodeID != "uuid-a" || pa.Identity != spiffe("a") || pa.Ack == nil || pa.Nack != nil || pa.Latency <= 0 || pa.Latency != pa.Ack.Sub(g2.CompilerCommit) {
		t.Errorf("a in generation 2: %+v", pa)
	}
	if pb.NodeID != "uuid-b" || pb.Nack == nil || pb.Nack.Type != "lds" || pb.Nack.Message != "listener out-b: unknown filter" || pb.Nack.Version != "2" {
		t.Errorf("b in generation 2: %+v (nack %+v)", pb, pb.Nack)
	}

	m.commit(m.res(xdstest.Cluster("ca", 3*time.Second), "ca"))
	var g3 edgedebug.GenerationConvergence
	xdstest.WaitFor(t, "generation 3 ACKed by a", func() bool {
		g3 = edgedebug.GenerationConvergence{}
		code, _ := get(t, op, addr, edgedebug.GenerationPath(3, 0), &g3)
		return code == http.StatusOK && g3.Acked == 1
	})
	if g3.Affected != 1 || len(g3.Proxies) != 1 || g3.Proxies[0].NodeID != "uuid-a" {
		t.Errorf("generation 3 lists %+v; want a only (b's config did not change)", g3.Proxies)
	}

	var list edgedebug.Generations
	if code, body := get(t, op, addr, edgedebug.PathGenerations, &list); code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", edgedebug.PathGenerations, code, body)
	}
	if list.Applied != "3" || len(list.Generations) != 3 || list.Generations[0].Affected != 0 || list.Generations[1].Affected != 2 || list.Generations[2].Number != 3 {
		t.Errorf("GET %s: %+v; want generations 1 (before any proxy), 2 and 3, applied 3", edgedebug.PathGenerations, list)
	}
	if code, _ := get(t, op, addr, edgedebug.GenerationPath(99, 0), nil); code != http.StatusNotFound {
		t.Errorf("generation 99: %d; want 404", code)
	}
	if code, _ := get(t, debugClient(t, m.pki, m.pki, spiffe("a")), addr, edgedebug.PathGenerations, nil); code != http.StatusForbidden {
		t.Errorf("GET %s with a workload certificate: %d; want 403", edgedebug.PathGenerations, code)
	}
}
