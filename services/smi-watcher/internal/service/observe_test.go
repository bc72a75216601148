package service_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	"github.com/openservicemesh/osm/libs/app/apptest"
	"github.com/openservicemesh/osm/libs/meshconfig"
)

// TestFollowsTheMeshConfigObservability: the watcher applies the
// MeshConfig --mesh-config in --namespace as its informer reads each
// version: osmLogLevel sets its log level, enableDebugServer true serves
// /debug/pprof/ on the admin listener and false answers 404; another
// MeshConfig in the namespace changes nothing; once it is deleted
// --enable-pprof and --log-level rule again.
func TestFollowsTheMeshConfigObservability(t *testing.T) {
	defer recoverMust(t)
	e := newEnv(t)
	const name = "observe-mesh-config"
	in := e.start("watcher-observe", "--mesh-config", name, "--enable-pprof", "--log-level", "info")
	apptest.Eventually(t, "readiness", time.Minute, func() error { return apptest.Ready(in.admin) })
	pprof := func(want int, what string) {
		t.Helper()
		apptest.Eventually(t, fmt.Sprintf("GET /debug/pprof/ = %d %s", want, what), 30*time.Second, func() error {
			resp, err := http.Get("http://" + in.admin + "/debug/pprof/")
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
	pprof(http.StatusOK, "with --enable-pprof and no MeshConfig")

	ctx := t.Context()
	mcs := cluster.Dynamic().Resource(meshconfig.GVR).Namespace(e.cp)
	create := func(name string, debug bool) {
		t.Helper()
		must(mcs.Create(ctx, &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "config.openservicemesh.io/v1alpha1", "kind": "MeshConfig",
			"metadata": map[string]any{"name": name},
			"spec":     map[string]any{"observability": map[string]any{"enableDebugServer": debug, "osmLogLevel": "debug"}},
		}}, metav1.CreateOptions{}))
	}
	create(name, false)
	pprof(http.StatusNotFound, "with enableDebugServer false")
	// Another MeshConfig, created before the next edit of ours: had it
	// been applied, the edit's 404 would follow a 200 from it.
	create("another-mesh-config", true)
	for _, on := range []bool{true, false} {
		patch := fmt.Sprintf(`{"spec":{"observability":{"enableDebugServer":%t}}}`, on)
		must(mcs.Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}))
		pprof(map[bool]int{true: http.StatusOK, false: http.StatusNotFound}[on], fmt.Sprintf("with enableDebugServer %v", on))
	}
	if err := mcs.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	pprof(http.StatusOK, "with the MeshConfig deleted (--enable-pprof)")
	in.stop(t)
	logs := in.logs.String()
	for _, want := range []string{"new=debug", "from=spec.observability.osmLogLevel", "new=info", "from=--log-level"} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %s:\n%s", want, logs)
		}
	}
	if strings.Count(logs, "pprof on the admin listener turned on") != 2 {
		t.Errorf("pprof turned on other than by our MeshConfig's edit and its delete:\n%s", logs)
	}
}
