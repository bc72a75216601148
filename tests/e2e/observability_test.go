package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openservicemesh/osm/tests/kube"
	"github.com/openservicemesh/osm/tests/stack"
)

// TestMeshConfigObservabilityFlow: every component of a whole stack (CA,
// injector, watcher, compiler, edge), started without --enable-pprof,
// follows the MeshConfig's spec.observability through the real apiserver,
// live: /debug/pprof/ on each admin listener answers 404 until a
// MeshConfig with enableDebugServer true and osmLogLevel debug is applied,
// then 200 on all five, and 404 again once it is edited to false; each
// logs its level set to debug from the MeshConfig.
func TestMeshConfigObservabilityFlow(t *testing.T) {
	cs := cluster.Clientset()
	mcName := "observe-mesh-config" + uniq()
	namespace(t, "osm-system", nil)
	m := startMesh(t, stack.Options{Name: "observe", MeshName: "observe" + uniq(), MeshConfig: mcName}, stack.Components()...)
	t.Cleanup(func() {
		_ = cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), m.WebhookConfigName(), metav1.DeleteOptions{})
		_ = cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Delete(context.Background(), m.ValidatingWebhookConfigName(), metav1.DeleteOptions{})
		_ = cluster.Dynamic().Resource(kube.MeshConfigs).Namespace("osm-system").Delete(context.Background(), mcName, metav1.DeleteOptions{})
	})

	// everyPprof waits until every component's /debug/pprof/ answers want.
	everyPprof := func(want int, what string) {
		t.Helper()
		start := time.Now()
		for _, c := range stack.Components() {
			eventually(t, fmt.Sprintf("%s's GET /debug/pprof/ = %d %s", c, want, what), 30*time.Second, func() error {
				resp, err := http.Get("http://" + m.AdminAddr(c) + "/debug/pprof/")
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
		t.Logf("/debug/pprof/ %d on all five %s: within %s (shared machine)", want, what, time.Since(start).Round(time.Millisecond))
	}
	everyPprof(http.StatusNotFound, "without a MeshConfig (no --enable-pprof)")

	create(t, kube.MeshConfigs, "osm-system", map[string]any{
		"apiVersion": "config.openservicemesh.io/v1alpha1", "kind": "MeshConfig",
		"metadata": map[string]any{"name": mcName},
		"spec":     map[string]any{"observability": map[string]any{"enableDebugServer": true, "osmLogLevel": "debug"}},
	})
	everyPprof(http.StatusOK, "with enableDebugServer true")
	for _, c := range stack.Components() {
		eventually(t, string(c)+" logs its level from the MeshConfig", 30*time.Second, func() error {
			if out := m.Proc(c).Output(); !strings.Contains(out, "new=debug") || !strings.Contains(out, "from=spec.observability.osmLogLevel") {
				return fmt.Errorf("no 'log level changed' to debug from spec.observability.osmLogLevel")
			}
			return nil
		})
	}

	if err := patchMeshConfig(t, mcName, `{"spec":{"observability":{"enableDebugServer":false}}}`); err != nil {
		t.Fatal(err)
	}
	everyPprof(http.StatusNotFound, "with enableDebugServer false")
}
