package watch

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/services/smi-watcher/internal/normalize"
)

func TestItemKeys(t *testing.T) {
	cases := []struct {
		it            Item
		key, cacheKey string
	}{
		{Item{Kind: layout.KindNamespace, Name: "bookstore"}, "namespace.bookstore", "bookstore"},
		{Item{Kind: layout.KindService, Namespace: "bookstore", Name: "bookstore.v1"}, "service.bookstore.bookstore_2Ev1", "bookstore/bookstore.v1"},
		{Item{Kind: layout.KindMeshConfig, Namespace: "osm-system", Name: "osm-mesh-config"}, "meshconfig.osm-system.osm-mesh-config", "osm-system/osm-mesh-config"},
	}
	for _, c := range cases {
		if got := c.it.Key(); got != c.key {
			t.Errorf("%+v Key = %q, want %q", c.it, got, c.key)
		}
		if got := c.it.cacheKey(); got != c.cacheKey {
			t.Errorf("%+v cacheKey = %q, want %q", c.it, got, c.cacheKey)
		}
		o, err := layout.ParseObserved(c.it.Key())
		if err != nil || (Item{Kind: o.Kind, Namespace: o.Namespace, Name: o.Name}) != c.it {
			t.Errorf("%+v does not round-trip through its key: %+v, %v", c.it, o, err)
		}
	}
}

func TestEveryKindHasACountName(t *testing.T) {
	for _, k := range []string{layout.KindNamespace, layout.KindService, layout.KindEndpointSlice, layout.KindPod,
		layout.KindServiceAccount, layout.KindTrafficTarget, layout.KindHTTPRouteGroup, layout.KindTCPRoute,
		layout.KindTrafficSplit, layout.KindMeshConfig, layout.KindRetry, layout.KindEgress, layout.KindUpstreamTrafficSetting,
		layout.KindIngressBackend} {
		if layout.KindName(k) == k {
			t.Errorf("kind %s has no SyncMarker count name", k)
		}
	}
}

func TestTrimmedPodsNormaliseTheSame(t *testing.T) {
	start := metav1.Now()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "bookstore", Name: "bookstore-0", UID: "u", Generation: 2, ResourceVersion: "9",
			Labels:            map[string]string{"app": "bookstore", layout.LabelProxyUUID: "p"},
			Annotations:       map[string]string{layout.AnnotationSidecarInjection: "enabled", "openservicemesh.io/metrics": "x"},
			ManagedFields:     []metav1.ManagedFieldsEntry{{Manager: "kubectl"}},
			OwnerReferences:   []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "rs"}},
			DeletionTimestamp: &start,
		},
		Spec: corev1.PodSpec{ServiceAccountName: "bookstore", NodeName: "node-a",
			Containers: []corev1.Container{{Name: "app", Image: "bookstore:v1", Env: []corev1.EnvVar{{Name: "A", Value: "b"}}}}},
		Status: corev1.PodStatus{
			Phase: corev1.PodRunning, PodIP: "10.0.0.1", PodIPs: []corev1.PodIP{{IP: "10.0.0.1"}, {IP: "fd00::1"}},
			Conditions: []corev1.PodCondition{
				{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: start},
				{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: start, Message: "ok"},
			},
			ContainerStatuses: []corev1.ContainerStatus{{Name: "app", Ready: true}},
		},
	}
	trimmed, err := transform(pod.DeepCopy())
	if err != nil {
		t.Fatal(err)
	}
	tp := trimmed.(*corev1.Pod)
	if len(tp.Spec.Containers) != 0 || len(tp.Status.ContainerStatuses) != 0 || tp.ManagedFields != nil || len(tp.Status.Conditions) != 1 {
		t.Errorf("pod not trimmed: %+v", tp)
	}
	if d := cmp.Diff(normalize.Pod(pod), normalize.Pod(tp), protocmp.Transform()); d != "" {
		t.Errorf("trimming changed the normalised pod (-full +trimmed):\n%s", d)
	}
	tomb := cache.DeletedFinalStateUnknown{Key: "a/b", Obj: pod}
	if got, _ := transform(tomb); got != any(tomb) {
		t.Error("a tombstone was altered")
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "s", ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "x"}}}}
	if got, _ := transform(svc); got.(*corev1.Service).ManagedFields != nil {
		t.Error("managed fields kept on a service")
	}
}
