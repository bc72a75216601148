package edge

import (
	"net/http"
	"testing"

	"github.com/openservicemesh/osm/libs/edgedebug"
	"github.com/openservicemesh/osm/libs/identity"
	"github.com/openservicemesh/osm/libs/xdstest"
)

// TestDebugEdgeStatus: GET /v1/edge gives the applied generation with no
// proxy connected (the proxy list has none to carry it), follows a commit,
// and answers only the operator.
func TestDebugEdgeStatus(t *testing.T) {
	m := seededMesh(t, "")
	_, addr := m.startDebugEdge("edge-1")
	op := debugClient(t, m.pki, m.pki, identity.ControlPlaneURI("cluster.local", identity.RoleOperator).String())
	var st edgedebug.EdgeStatus
	if code, body := get(t, op, addr, edgedebug.PathEdge, &st); code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", edgedebug.PathEdge, code, body)
	}
	if st != (edgedebug.EdgeStatus{Edge: "edge-1", Generation: "1", Number: 1}) {
		t.Fatalf("GET %s: %+v; want edge-1 at generation 1", edgedebug.PathEdge, st)
	}
	m.commit(m.res(xdstest.Cluster("shared", 0), "shared"))
	xdstest.WaitFor(t, "the edge at generation 2", func() bool {
		get(t, op, addr, edgedebug.PathEdge, &st)
		return st.Number == 2 && st.Generation == "2"
	})
	if code, _ := get(t, debugClient(t, m.pki, m.pki, spiffe("a")), addr, edgedebug.PathEdge, nil); code != http.StatusForbidden {
		t.Errorf("GET %s with a workload certificate: %d; want 403", edgedebug.PathEdge, code)
	}
}
