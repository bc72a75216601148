package service

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/openservicemesh/osm/libs/meshconfig"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/injector-webhook/internal/inject"
	"github.com/openservicemesh/osm/services/injector-webhook/internal/webhook"
)

// resync is the resync period of the injector's informers.
const resync = 10 * time.Minute

// informerRun runs an informer factory as a part: Start starts it, marks
// the part synced once its informers have listed, and shuts the factory
// down when ctx ends.
type informerRun struct {
	what      string // names the informers in the readiness error
	start     func(stop <-chan struct{})
	shutdown  func()
	hasSynced []cache.InformerSynced

	ok     atomic.Bool
	synced chan struct{}
}

func newInformerRun(what string, start func(stop <-chan struct{}), shutdown func(), hasSynced ...cache.InformerSynced) *informerRun {
	return &informerRun{what: what, start: start, shutdown: shutdown, hasSynced: hasSynced, synced: make(chan struct{})}
}

// Start runs the informers until ctx ends; Start returns after them.
func (r *informerRun) Start(ctx context.Context) error {
	r.start(ctx.Done())
	defer r.shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), r.hasSynced...) {
		return nil // ctx ended
	}
	r.ok.Store(true)
	close(r.synced)
	<-ctx.Done()
	return nil
}

// Synced is closed once the informers have listed.
func (r *informerRun) Synced() <-chan struct{} { return r.synced }

// Check is a readiness check: the informers have listed.
func (r *informerRun) Check(context.Context) error {
	if !r.ok.Load() {
		return fmt.Errorf("%s not synced", r.what)
	}
	return nil
}

// namespaceCache holds the namespaces admission reads, from an informer.
type namespaceCache struct {
	*informerRun
	lister corelisters.NamespaceLister
}

var _ webhook.NamespaceGetter = (*namespaceCache)(nil)

func newNamespaceCache(cs kubernetes.Interface) *namespaceCache {
	f := informers.NewSharedInformerFactory(cs, resync)
	ns := f.Core().V1().Namespaces()
	synced := ns.Informer().HasSynced // registers the informer with f
	return &namespaceCache{informerRun: newInformerRun("namespace informer", f.Start, f.Shutdown, synced), lister: ns.Lister()}
}

// Get reads a namespace from the cache.
func (c *namespaceCache) Get(_ context.Context, name string) (*corev1.Namespace, error) {
	return c.lister.Get(name)
}

// settingsSetter takes the injection settings (webhook.Webhook).
type settingsSetter interface {
	SetSettings(s inject.Settings)
}

var _ settingsSetter = (*webhook.Webhook)(nil)

// meshConfigWatch follows one MeshConfig and gives the webhook the
// injection settings it makes: the flags' settings with the MeshConfig's
// applied over them, or the flags' alone while there is no MeshConfig. A
// MeshConfig that does not parse is logged, and the previous settings
// stay.
type meshConfigWatch struct {
	*informerRun
	name string
	base inject.Settings
	to   settingsSetter
	log  *logrus.Entry
	// lifetime, when set, follows spec.certificate.
	// serviceCertValidityDuration (lifetime.go).
	lifetime lifetimeSetter
	// observe, when set, follows spec.observability: it is given each
	// version, and nil when the MeshConfig is deleted
	// (app.Runtime.ApplyObservability).
	observe func(mc *meshv1.MeshConfig)
}

// newMeshConfigWatch watches the MeshConfig namespace/name; base are the
// settings from the flags.
func newMeshConfigWatch(dyn dynamic.Interface, namespace, name string, base inject.Settings, to settingsSetter, log *logrus.Entry) (*meshConfigWatch, error) {
	w := &meshConfigWatch{name: name, base: base, to: to, log: log}
	f := dynamicinformer.NewFilteredDynamicSharedInformerFactory(dyn, resync, namespace, nil)
	inf := f.ForResource(meshconfig.GVR).Informer()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    w.apply,
		UpdateFunc: func(_, obj any) { w.apply(obj) },
		DeleteFunc: w.deleted,
	}); err != nil {
		return nil, fmt.Errorf("meshconfig informer: %w", err)
	}
	w.informerRun = newInformerRun("meshconfig informer", f.Start, f.Shutdown, inf.HasSynced)
	return w, nil
}

// ours returns obj as the watched MeshConfig, or nil for another object.
func (w *meshConfigWatch) ours(obj any) *unstructured.Unstructured {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok || u.GetName() != w.name {
		return nil
	}
	return u
}

func (w *meshConfigWatch) apply(obj any) {
	u := w.ours(obj)
	if u == nil {
		return
	}
	mc := meshconfig.Parse(u)
	w.applyLifetime(mc)
	if w.observe != nil {
		w.observe(mc)
	}
	s, err := w.base.WithMeshConfig(mc)
	if err != nil {
		w.log.WithError(err).WithField("name", u.GetName()).Warn("meshconfig rejected; keeping the previous injection settings")
		return
	}
	w.to.SetSettings(s)
	w.log.WithFields(logrus.Fields{"name": u.GetName(), "sidecar_image": s.SidecarImage}).Info("injection settings updated from meshconfig")
}

func (w *meshConfigWatch) deleted(obj any) {
	u := w.ours(obj)
	if u == nil {
		return
	}
	w.to.SetSettings(w.base)
	w.applyLifetime(nil)
	if w.observe != nil {
		w.observe(nil)
	}
	w.log.WithField("name", u.GetName()).Info("meshconfig deleted; injection settings back to the flags")
}
