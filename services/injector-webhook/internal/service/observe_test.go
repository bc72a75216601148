package service

import (
	"context"
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

// TestServiceFollowsTheMeshConfigObservability: the injector's MeshConfig
// watch, through the real apiserver, sets its log level from
// spec.observability.osmLogLevel and serves /debug/pprof/ on the admin
// listener while enableDebugServer is true (404 while false); once the
// MeshConfig is deleted --enable-pprof and --log-level rule again.
func TestServiceFollowsTheMeshConfigObservability(t *testing.T) {
	ns := cluster.Namespace(t, "osm-inj-observe", nil)
	const name = "observe-mesh-config"
	listen, admin := apptest.FreeAddr(t), apptest.FreeAddr(t)
	args := setArg(serviceArgs(t, listen, admin), "--webhook-config-name", "")
	args = append(args, "--namespace", ns, "--mesh-config", name, "--enable-pprof", "--log-level", "info")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	res, out := apptest.Start(ctx, Spec(Options{}), args, nil)
	apptest.WaitReady(t, admin, 60*time.Second, res, out)

	pprof := func(want int, what string) {
		t.Helper()
		apptest.Eventually(t, fmt.Sprintf("GET /debug/pprof/ = %d %s", want, what), 30*time.Second, func() error {
			resp, err := http.Get("http://" + admin + "/debug/pprof/")
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

	mcs := cluster.Dynamic().Resource(meshconfig.GVR).Namespace(ns)
	if _, err := mcs.Create(ctx, &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "config.openservicemesh.io/v1alpha1", "kind": "MeshConfig",
		"metadata": map[string]any{"name": name},
		"spec":     map[string]any{"observability": map[string]any{"enableDebugServer": false, "osmLogLevel": "debug"}},
	}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pprof(http.StatusNotFound, "with enableDebugServer false")
	for _, on := range []bool{true, false} {
		patch := fmt.Sprintf(`{"spec":{"observability":{"enableDebugServer":%t}}}`, on)
		if _, err := mcs.Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		pprof(map[bool]int{true: http.StatusOK, false: http.StatusNotFound}[on], fmt.Sprintf("with enableDebugServer %v", on))
	}
	if err := mcs.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	pprof(http.StatusOK, "with the MeshConfig deleted (--enable-pprof)")
	cancel()
	apptest.Stopped(t, res, out)
	logs := out.String()
	for _, want := range []string{"new=debug", "from=spec.observability.osmLogLevel", "new=info", "from=--log-level"} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %s:\n%s", want, logs)
		}
	}
}
