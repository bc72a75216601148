package edge

import (
	"context"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/xdstest"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/xds-edge/internal/xds"
)

// TestEdgeFollowsTheMeshConfigStreamLimit: an edge started with a
// MeshConfig name, and no signer, takes spec.sidecar.maxDataPlaneConnections
// from the MeshConfig's key in KV mesh-observed as its xDS server's stream
// limit, follows each edit, and has none once the field or the MeshConfig
// is gone.
func TestEdgeFollowsTheMeshConfigStreamLimit(t *testing.T) {
	m := seededMesh(t, "")
	ctx := t.Context()
	observed, err := m.conn(bus.RoleAdmin).EnsureBucket(ctx, bus.BucketObserved, bus.BucketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	key := layout.ObservedKey(layout.KindMeshConfig, "osm-system", "osm-mesh-config")
	limit := func(n int32) *meshv1.MeshConfig {
		return &meshv1.MeshConfig{Sidecar: &meshv1.SidecarSpec{MaxDataPlaneConnections: n}}
	}
	if _, err := observed.Put(ctx, key, limit(2)); err != nil {
		t.Fatal(err)
	}
	tc, err := m.pki.ServerTLS("spiffe://cluster.local/osm/xds-edge")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	// Observe is given each version too (spec.observability goes to
	// app.Runtime.ApplyObservability through it).
	var observedLimit atomic.Int32
	e, err := New(Deps{
		Observe: func(mc *meshv1.MeshConfig) { observedLimit.Store(mc.GetSidecar().GetMaxDataPlaneConnections()) },
		Log:     logrus.NewEntry(log), Conn: m.conn(bus.RoleEdge), Listener: ln, EdgeID: "edge-1", TrustDomain: "cluster.local",
		GRPC:              xds.GRPCConfig{TLS: tc, KeepaliveTime: time.Minute, KeepaliveTimeout: 10 * time.Second, MaxConnectionAge: time.Hour, MaxConnectionAgeGrace: time.Second},
		NATSLostThreshold: time.Minute, StopGrace: time.Second,
		MeshConfigNamespace: "osm-system", MeshConfigName: "osm-mesh-config",
	})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- e.Start(rctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	want := func(what string, n int) {
		t.Helper()
		xdstest.WaitFor(t, what, func() bool { return e.Server().MaxStreams() == n })
	}
	want("the MeshConfig's 2", 2)
	if _, err := observed.Put(ctx, key, limit(500)); err != nil {
		t.Fatal(err)
	}
	want("the edited 500", 500)
	xdstest.WaitFor(t, "Observe given the edited MeshConfig", func() bool { return observedLimit.Load() == 500 })
	if _, err := observed.Put(ctx, key, &meshv1.MeshConfig{}); err != nil {
		t.Fatal(err)
	}
	want("no field: no limit", 0)
	if _, err := observed.Put(ctx, key, limit(3)); err != nil {
		t.Fatal(err)
	}
	want("3 again", 3)
	if err := observed.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	want("deleted: no limit", 0)
}
