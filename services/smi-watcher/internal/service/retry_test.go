package service_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	"github.com/openservicemesh/osm/libs/app/apptest"
	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/osmpolicy"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// TestPublishesRetry: an OSM Retry (OSM's manifest, unchanged) in a meshed
// namespace is published under retry.<ns>.<name> as written; an edit is
// published, and a delete removes the key. A Retry outside the mesh is not
// published.
func TestPublishesRetry(t *testing.T) {
	defer recoverMust(t)
	e := newEnv(t)
	ctx := t.Context()
	ns := cluster.Namespace(t, "retry", map[string]string{layout.LabelMonitoredBy: e.mesh})
	plain := cluster.Namespace(t, "retry-plain", nil)
	retries := cluster.Dynamic().Resource(osmpolicy.RetryGVR)
	manifest := func(ns string) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "policy.openservicemesh.io/v1alpha1", "kind": "Retry",
			"metadata": map[string]any{"name": "bookbuyer-retry"},
			"spec": map[string]any{
				"source":       map[string]any{"kind": "ServiceAccount", "name": "bookbuyer", "namespace": ns},
				"destinations": []any{map[string]any{"kind": "Service", "name": "bookstore", "namespace": "bookstore"}},
				"retryPolicy": map[string]any{"retryOn": "5xx", "perTryTimeout": "1s", "numRetries": int64(5),
					"retryBackoffBaseInterval": "1s"},
			},
		}}
	}
	r := must(retries.Namespace(ns).Create(ctx, manifest(ns), metav1.CreateOptions{}))
	must(retries.Namespace(plain).Create(ctx, manifest(plain), metav1.CreateOptions{}))
	e.start("watcher-a")
	e.waitSynced(0, time.Minute)

	key := layout.ObservedKey(layout.KindRetry, ns, "bookbuyer-retry")
	want := func(gen int64, num int64) *meshv1.Retry {
		return &meshv1.Retry{
			Meta:         &meshv1.ObjectMeta{Namespace: ns, Name: "bookbuyer-retry", Uid: string(r.GetUID()), Generation: gen},
			ApiVersion:   "policy.openservicemesh.io/v1alpha1",
			Source:       &meshv1.RetrySubject{Kind: "ServiceAccount", Name: "bookbuyer", Namespace: ns},
			Destinations: []*meshv1.RetrySubject{{Kind: "Service", Name: "bookstore", Namespace: "bookstore"}},
			RetryPolicy:  &meshv1.RetryPolicySpec{RetryOn: "5xx", PerTryTimeout: "1s", NumRetries: proto.Int64(num), RetryBackoffBaseInterval: "1s"},
		}
	}
	check := func(what string, w proto.Message) {
		t.Helper()
		apptest.Eventually(t, what, 30*time.Second, func() error {
			c := e.contents()
			if w == nil {
				if _, ok := c[key]; ok {
					return fmt.Errorf("%s still published", key)
				}
				return nil
			}
			if d := cmp.Diff(w, c[key], protocmp.Transform()); d != "" {
				return fmt.Errorf("%s (-want +got):\n%s", key, d)
			}
			return nil
		})
	}
	check("the Retry published", want(r.GetGeneration(), 5))
	if _, ok := e.contents()[layout.ObservedKey(layout.KindRetry, plain, "bookbuyer-retry")]; ok {
		t.Error("a Retry outside the mesh was published")
	}
	if m := e.marker(); m.ObjectCounts["Retry"] != 1 {
		t.Errorf("marker object counts %v, want 1 Retry", m.ObjectCounts)
	}
	r = must(retries.Namespace(ns).Patch(ctx, "bookbuyer-retry", types.MergePatchType,
		[]byte(`{"spec":{"retryPolicy":{"numRetries":2}}}`), metav1.PatchOptions{}))
	check("the edit published", want(r.GetGeneration(), 2))
	if err := retries.Namespace(ns).Delete(ctx, "bookbuyer-retry", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	check("the delete published", nil)
}
