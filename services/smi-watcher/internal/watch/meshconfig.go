package watch

import (
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/cache"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/meshconfig"
)

// observeMeshConfig hands each version of the MeshConfig
// Options.MeshConfigName in the control-plane namespace, as the informer
// reads it, to Options.OnMeshConfig, and nil when it is deleted. It runs on
// every instance, leader or standby, from the informer's own handler
// goroutine (so in order), whether or not the version is published.
func (w *Watcher) observeMeshConfig(set *sourceSet) error {
	s, ok := set.byKind[layout.KindMeshConfig]
	if !ok {
		return fmt.Errorf("watch: no %s source", layout.KindMeshConfig)
	}
	ours := func(obj any) *unstructured.Unstructured {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		u, ok := obj.(*unstructured.Unstructured)
		if !ok || u.GetNamespace() != w.o.ControlPlaneNamespace || u.GetName() != w.o.MeshConfigName {
			return nil
		}
		return u
	}
	apply := func(obj any) {
		if u := ours(obj); u != nil {
			w.o.OnMeshConfig(meshconfig.Parse(u))
		}
	}
	if _, err := s.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    apply,
		UpdateFunc: func(_, obj any) { apply(obj) },
		DeleteFunc: func(obj any) {
			if ours(obj) != nil {
				w.o.OnMeshConfig(nil)
			}
		},
	}); err != nil {
		return fmt.Errorf("watch: register the meshconfig observer: %w", err)
	}
	return nil
}
