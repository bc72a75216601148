package service

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openservicemesh/osm/libs/app/apptest"
	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/bus/bustest"
	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// TestServiceFollowsTheMeshConfigObservability: the CA follows the
// MeshConfig OSM_MESH_CONFIG in --namespace from KV mesh-observed, with
// its own NATS role: it is ready before the bucket exists (no watcher
// yet), then enableDebugServer true serves /debug/pprof/ on the admin
// listener and false answers 404, and osmLogLevel debug sets the level.
func TestServiceFollowsTheMeshConfigObservability(t *testing.T) {
	ns := cluster.Namespace(t, "osm-ca-observe", nil)
	nats, err := bustest.Start(bustest.Options{Passwords: map[bus.Role]string{bus.RoleCA: "ca-pw", bus.RoleAdmin: "admin-pw"}})
	if err != nil {
		t.Fatal(err)
	}
	defer nats.Shutdown()
	svc := runService(t, nats.URL(), map[string]string{"OSM_NATS_PASSWORD": "ca-pw", "OSM_MESH_CONFIG": "observed-mesh-config"},
		"--namespace", ns, "--log-format", "json", "--log-level", "info", "--bundle-refresh", "1h", "--nats-user", "ca")
	apptest.Eventually(t, "readiness without mesh-observed", 60*time.Second, svc.ready)

	conn, err := bus.Connect(t.Context(), bus.Options{URL: nats.URL(), Role: bus.RoleAdmin, User: string(bus.RoleAdmin), Password: "admin-pw"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	observed, err := conn.EnsureBucket(t.Context(), bus.BucketObserved, bus.BucketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	key := layout.ObservedKey(layout.KindMeshConfig, ns, "observed-mesh-config")
	for _, on := range []bool{true, false} {
		mc := &meshv1.MeshConfig{Observability: &meshv1.ObservabilitySpec{EnableDebugServer: on, OsmLogLevel: "debug"}}
		if _, err := observed.Put(t.Context(), key, mc); err != nil {
			t.Fatal(err)
		}
		want := map[bool]int{true: http.StatusOK, false: http.StatusNotFound}[on]
		apptest.Eventually(t, fmt.Sprintf("GET /debug/pprof/ = %d with enableDebugServer %v", want, on), 30*time.Second, func() error {
			resp, err := http.Get("http://" + svc.adminAddr + "/debug/pprof/")
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != want {
				return fmt.Errorf("status %d", resp.StatusCode)
			}
			return nil
		})
	}
	if err := svc.stop(); err != nil {
		t.Fatal(err)
	}
	if l := svc.logs.String(); !strings.Contains(l, `"new":"debug"`) || !strings.Contains(l, `"from":"spec.observability.osmLogLevel"`) {
		t.Errorf("logs lack the MeshConfig's log level:\n%s", l)
	}
}
