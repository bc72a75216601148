package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/tests/stack"
)

// TestMeshConfigMaxDataPlaneConnections: through the real apiserver,
// watcher, compiler, CA and edge, MeshConfig
// spec.sidecar.maxDataPlaneConnections 2 lets two xDS clients in and
// refuses a third with RESOURCE_EXHAUSTED naming the limit; closing one
// lets a new one in; raising the limit lets another in.
func TestMeshConfigMaxDataPlaneConnections(t *testing.T) {
	ctx := t.Context()
	run := uniq()
	ns, meshName, mcName := "maxconns"+run, "maxconns"+run, "maxconns-mesh-config"+run
	namespace(t, "osm-system", nil)
	sas := []string{"one", "two", "three", "four", "five"}
	namespace(t, ns, map[string]string{layout.LabelMonitoredBy: meshName}, sas...)
	meshConfig(t, mcName, true)
	if err := patchMeshConfig(t, mcName, `{"spec":{"sidecar":{"maxDataPlaneConnections":2}}}`); err != nil {
		t.Fatal(err)
	}
	kubelet := node(t, "maxconns-node")
	for i, sa := range sas {
		readyPod(t, kubelet, ns, sa+"-1", sa, sa, fmt.Sprintf("10.244.42.%d", 10+i))
	}
	m := startMesh(t, stack.Options{Name: "maxconns", MeshName: meshName, MeshConfig: mcName},
		stack.CertAuthority, stack.Watcher, stack.Compiler, stack.Edge)

	// connect opens an ADS stream as the proxy of sa and returns its
	// closer, or the error that refused it.
	connect := func(sa string) (func(), error) {
		t.Helper()
		cert, err := m.WorkloadCert(ctx, identityOf(ns, sa), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		cc, err := m.DialEdge(cert.Pair)
		if err != nil {
			t.Fatal(err)
		}
		sctx, cancel := context.WithCancel(ctx)
		closer := func() { cancel(); _ = cc.Close() }
		if _, _, err := adsFetch(sctx, cc, nodeOf(sa+"-1-uuid", sa, ns), typeCDS); err != nil {
			closer()
			return nil, err
		}
		return closer, nil
	}
	// admitted waits until sa's stream is admitted (the compiler may not
	// have its group yet: Unavailable until then).
	admitted := func(sa string) func() {
		t.Helper()
		var closer func()
		eventually(t, sa+"'s stream admitted", 30*time.Second, func() error {
			c, err := connect(sa)
			closer = c
			return err
		})
		return closer
	}
	refused := func(sa, limit string) {
		t.Helper()
		_, err := connect(sa)
		if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "maxDataPlaneConnections "+limit) {
			t.Fatalf("%s's stream over the limit of %s: %v, want ResourceExhausted naming the limit", sa, limit, err)
		}
	}

	closeOne := admitted("one")
	closeTwo := admitted("two")
	defer closeTwo()
	refused("three", "2")
	closeOne()
	// The edge sees the stream end shortly after the client cancels it.
	closeThree := admitted("three")
	defer closeThree()
	refused("four", "2")

	if err := patchMeshConfig(t, mcName, `{"spec":{"sidecar":{"maxDataPlaneConnections":3}}}`); err != nil {
		t.Fatal(err)
	}
	closeFour := admitted("four")
	defer closeFour()
	refused("five", "3")
	if edge := m.Proc(stack.Edge).Output(); !strings.Contains(edge, "xds stream limit of this edge replica set from the meshconfig") {
		t.Fatalf("the edge did not log the limit change:\n%s", edge)
	}
}
