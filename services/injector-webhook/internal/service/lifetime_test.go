package service

import (
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/openservicemesh/osm/services/injector-webhook/internal/inject"
)

// recordedLifetime is a lifetimeSetter that keeps the lifetime.
type recordedLifetime struct{ d atomic.Int64 }

func (r *recordedLifetime) SetServiceLifetime(d time.Duration) { r.d.Store(int64(d)) }
func (r *recordedLifetime) ServiceLifetime() time.Duration     { return time.Duration(r.d.Load()) }

func validityConfig(name string, validity any, spec map[string]any) *unstructured.Unstructured {
	if spec == nil {
		spec = map[string]any{}
	}
	if validity != nil {
		spec["certificate"] = map[string]any{"serviceCertValidityDuration": validity}
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "config.openservicemesh.io/v1alpha1", "kind": "MeshConfig",
		"metadata": map[string]any{"name": name, "namespace": "osm-system"},
		"spec":     spec,
	}}
}

// TestMeshConfigWatchSetsTheServiceLifetime: the MeshConfig's
// spec.certificate.serviceCertValidityDuration becomes the lifetime of
// proxyless pods' service certificates; another MeshConfig and an
// invalid value change nothing; a MeshConfig invalid in another field
// still sets it; a value under a minute is raised to one; removing the
// field or the MeshConfig sets none.
func TestMeshConfigWatchSetsTheServiceLifetime(t *testing.T) {
	lt := &recordedLifetime{}
	w := &meshConfigWatch{name: "osm-mesh-config", base: inject.Settings{MeshName: "osm", ProxyUID: 1500}, to: &recordedSettings{}, log: testLog(), lifetime: lt}
	for _, step := range []struct {
		what string
		obj  *unstructured.Unstructured
		want time.Duration
	}{
		{"2h", validityConfig("osm-mesh-config", "2h", nil), 2 * time.Hour},
		{"another MeshConfig", validityConfig("another-mesh-config", "5h", nil), 2 * time.Hour},
		{"a value that does not parse", validityConfig("osm-mesh-config", "two hours", nil), 2 * time.Hour},
		{"3h beside an invalid port", validityConfig("osm-mesh-config", "3h", map[string]any{"traffic": map[string]any{"outboundPortExclusionList": []any{int64(70000)}}}), 3 * time.Hour},
		{"10s", validityConfig("osm-mesh-config", "10s", nil), time.Minute},
		{"no validity", validityConfig("osm-mesh-config", nil, nil), 0},
		{"4h", validityConfig("osm-mesh-config", "4h", nil), 4 * time.Hour},
	} {
		w.apply(step.obj)
		if got := lt.ServiceLifetime(); got != step.want {
			t.Fatalf("after %s: lifetime %s, want %s", step.what, got, step.want)
		}
	}
	w.deleted(validityConfig("osm-mesh-config", "4h", nil))
	if got := lt.ServiceLifetime(); got != 0 {
		t.Fatalf("after the delete: lifetime %s, want none", got)
	}
}
