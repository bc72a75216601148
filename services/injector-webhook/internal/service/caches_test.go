package service

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/cache"

	"github.com/openservicemesh/osm/services/injector-webhook/internal/inject"
)

func TestInformerRunIsReadyOnceListed(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	var listed, shutdown atomic.Bool
	var stop atomic.Pointer[<-chan struct{}]
	r := newInformerRun("test informer", func(s <-chan struct{}) { stop.Store(&s) }, func() { shutdown.Store(true) }, listed.Load)
	ctx, cancel := context.WithCancel(t.Context())
	res := make(chan error, 1)
	go func() { res <- r.Start(ctx) }()
	time.Sleep(250 * time.Millisecond) // two polls of WaitForCacheSync
	if err := r.Check(t.Context()); err == nil {
		t.Fatal("ready before the informer listed")
	}
	select {
	case <-r.Synced():
		t.Fatal("synced before the informer listed")
	default:
	}
	listed.Store(true)
	within(t, r.Synced(), "synced once the informer listed")
	if err := r.Check(t.Context()); err != nil {
		t.Fatalf("not ready once listed: %v", err)
	}
	if s := stop.Load(); s == nil || *s != ctx.Done() {
		t.Fatal("the informers were not started with the part's context")
	}
	cancel()
	if err := <-res; err != nil {
		t.Fatal(err)
	}
	if !shutdown.Load() {
		t.Fatal("the factory was not shut down")
	}
}

// recordedSettings is a settingsSetter that keeps the last settings.
type recordedSettings struct {
	last atomic.Pointer[inject.Settings]
}

func (r *recordedSettings) SetSettings(s inject.Settings) { r.last.Store(&s) }

func meshConfig(name, image string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "config.openservicemesh.io/v1alpha1", "kind": "MeshConfig",
		"metadata": map[string]any{"name": name, "namespace": "osm-system"},
		"spec":     map[string]any{"sidecar": map[string]any{"image": image}},
	}}
}

func TestMeshConfigWatchSetsTheWebhookSettings(t *testing.T) {
	base := inject.Settings{MeshName: "osm", SidecarImage: "envoy:flags", InitImage: "init:flags", LogLevel: "error", ProxyUID: 1500}
	to := &recordedSettings{}
	w := &meshConfigWatch{name: "osm-mesh-config", base: base, to: to, log: testLog()}
	image := func() string {
		t.Helper()
		s := to.last.Load()
		if s == nil {
			t.Fatal("no settings given")
		}
		return s.SidecarImage
	}

	w.apply(meshConfig("osm-mesh-config", "envoy:mesh"))
	if got := image(); got != "envoy:mesh" {
		t.Fatalf("after the MeshConfig: image %q", got)
	}
	if s := to.last.Load(); s.InitImage != "init:flags" {
		t.Fatalf("a field the MeshConfig leaves unset lost the flag's value: %q", s.InitImage)
	}
	w.apply(meshConfig("another-mesh-config", "envoy:other"))
	if got := image(); got != "envoy:mesh" {
		t.Fatalf("another MeshConfig was applied: image %q", got)
	}
	bad := meshConfig("osm-mesh-config", "envoy:bad")
	bad.Object["spec"] = map[string]any{"traffic": map[string]any{"outboundPortExclusionList": []any{int64(70000)}}}
	w.apply(bad)
	if got := image(); got != "envoy:mesh" {
		t.Fatalf("a MeshConfig that does not parse replaced the settings: image %q", got)
	}
	// Deleted, seen through a tombstone: back to the flags.
	w.deleted(cache.DeletedFinalStateUnknown{Key: "osm-system/osm-mesh-config", Obj: meshConfig("osm-mesh-config", "envoy:mesh")})
	if got := image(); got != "envoy:flags" {
		t.Fatalf("after the delete: image %q, want the flag's", got)
	}
}
