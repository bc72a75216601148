package service_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/rand"

	"github.com/openservicemesh/osm/libs/app/apptest"
	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/bus/bustest"
	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/osmpolicy"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/smi-watcher/internal/service"
	"github.com/openservicemesh/osm/tests/kube"
)

// TestPolicyKindInstalledAfterTheWatcherStarts: on a cluster that serves
// the SMI and MeshConfig kinds but none of OSM's policy kinds (their CRDs
// applied after the control plane, as a platform team upgrading OSM's
// CRDs by hand would), the watcher syncs without them, and once the CRDs
// are installed it publishes the policy objects without a restart: an
// Egress and an UpstreamTrafficSetting created afterwards, and an
// IngressBackend created between the CRD's install and the watcher's
// next look.
func TestPolicyKindInstalledAfterTheWatcherStarts(t *testing.T) {
	ctx := t.Context()
	c := kube.Start(t)
	crds, err := kube.CRDDir()
	if err != nil {
		t.Fatal(err)
	}
	base, policy := t.TempDir(), t.TempDir()
	paths, err := filepath.Glob(filepath.Join(crds, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		dir := base
		if strings.HasPrefix(filepath.Base(p), osmpolicy.GroupVersion.Group+"_") {
			dir = policy
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(p)), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.ApplyCRDs(ctx, base); err != nil {
		t.Fatal(err)
	}

	srv, err := bustest.Start(bustest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	conn, err := bus.Connect(ctx, bus.Options{URL: srv.URL(), Role: bus.RoleAdmin})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	store, err := conn.EnsureBucket(ctx, bus.BucketObserved, bus.BucketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mesh := "mesh-" + rand.String(6)
	cp := c.Namespace(t, "osm-system", nil)
	ns := c.Namespace(t, "late", map[string]string{layout.LabelMonitoredBy: mesh})

	wctx, cancel := context.WithCancel(context.Background())
	done, logs := apptest.Start(wctx, service.Spec(service.Options{}), []string{
		"--kubeconfig", c.KubeconfigPath(),
		"--nats-url", srv.URL(),
		"--admin-addr", apptest.FreeAddr(t),
		"--mesh-name", mesh,
		"--namespace", cp,
		"--pod-name", "late-0",
		"--log-format", "text", "--log-level", "debug",
	}, nil)
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("watcher: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("watcher did not stop")
		}
		if t.Failed() {
			t.Logf("watcher logs:\n%s", logs.String())
		}
	})
	has := func(kind, name string) bool {
		_, err := store.Get(ctx, layout.ObservedKey(kind, ns, name), layout.NewObserved(kind))
		return err == nil
	}
	waitFor := func(what string, timeout time.Duration, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(timeout)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %s", what, timeout)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitFor("the watcher syncs without the policy kinds", 60*time.Second, func() bool {
		var m meshv1.SyncMarker
		_, err := store.Get(ctx, layout.SyncKey, &m)
		return err == nil && m.GetState() == meshv1.SyncState_SYNC_STATE_SYNCED
	})
	if !strings.Contains(logs.String(), "egresses.policy.openservicemesh.io") {
		t.Errorf("the watcher did not name the policy kinds it does not watch yet:\n%s", logs.String())
	}

	if err := c.ApplyCRDs(ctx, policy); err != nil {
		t.Fatal(err)
	}
	dyn := c.Dynamic()
	create := func(obj map[string]any) {
		t.Helper()
		u := &unstructured.Unstructured{Object: obj}
		gvr := map[string]func() error{
			"Egress": func() error {
				_, err := dyn.Resource(osmpolicy.EgressGVR).Namespace(ns).Create(ctx, u, metav1.CreateOptions{})
				return err
			},
			"UpstreamTrafficSetting": func() error {
				_, err := dyn.Resource(osmpolicy.UpstreamTrafficSettingGVR).Namespace(ns).Create(ctx, u, metav1.CreateOptions{})
				return err
			},
			"IngressBackend": func() error {
				_, err := dyn.Resource(osmpolicy.IngressBackendGVR).Namespace(ns).Create(ctx, u, metav1.CreateOptions{})
				return err
			},
		}[u.GetKind()]
		if err := gvr(); err != nil {
			t.Fatalf("create %s: %v", u.GetKind(), err)
		}
	}
	create(map[string]any{
		"apiVersion": "policy.openservicemesh.io/v1alpha1", "kind": "IngressBackend",
		"metadata": map[string]any{"name": "bookstore"},
		"spec": map[string]any{
			"backends": []any{map[string]any{"name": "bookstore", "port": map[string]any{"number": int64(14001), "protocol": "http"}}},
			"sources":  []any{map[string]any{"kind": "IPRange", "name": "10.0.0.0/8"}},
		},
	})
	waitFor("the IngressBackend created before the watcher's next look is published", 30*time.Second, func() bool {
		return has(layout.KindIngressBackend, "bookstore")
	})
	create(map[string]any{
		"apiVersion": "policy.openservicemesh.io/v1alpha1", "kind": "Egress",
		"metadata": map[string]any{"name": "httpbin"},
		"spec": map[string]any{
			"sources": []any{map[string]any{"kind": "ServiceAccount", "name": "bookstore", "namespace": ns}},
			"hosts":   []any{"httpbin.org"},
			"ports":   []any{map[string]any{"number": int64(80), "protocol": "http"}},
		},
	})
	create(map[string]any{
		"apiVersion": "policy.openservicemesh.io/v1alpha1", "kind": "UpstreamTrafficSetting",
		"metadata": map[string]any{"name": "bookstore"},
		"spec": map[string]any{
			"host":               "bookstore." + ns + ".svc.cluster.local",
			"connectionSettings": map[string]any{"tcp": map[string]any{"maxConnections": int64(50)}},
		},
	})
	waitFor("the Egress and UpstreamTrafficSetting created afterwards are published", 30*time.Second, func() bool {
		return has(layout.KindEgress, "httpbin") &&
			has(layout.KindUpstreamTrafficSetting, "bookstore")
	})
	if !strings.Contains(logs.String(), "policy kind now served by the apiserver: watching it") {
		t.Errorf("the watcher did not log that it watches the newly served kinds:\n%s", logs.String())
	}
}
