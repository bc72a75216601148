package watch

import (
	"time"

	accessv1alpha3 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/access/v1alpha3"
	specsv1alpha4 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/specs/v1alpha4"
	splitv1alpha2 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/split/v1alpha2"
	accessclient "github.com/servicemeshinterface/smi-sdk-go/pkg/gen/client/access/clientset/versioned"
	accessinformers "github.com/servicemeshinterface/smi-sdk-go/pkg/gen/client/access/informers/externalversions"
	specsclient "github.com/servicemeshinterface/smi-sdk-go/pkg/gen/client/specs/clientset/versioned"
	specsinformers "github.com/servicemeshinterface/smi-sdk-go/pkg/gen/client/specs/informers/externalversions"
	splitclient "github.com/servicemeshinterface/smi-sdk-go/pkg/gen/client/split/clientset/versioned"
	splitinformers "github.com/servicemeshinterface/smi-sdk-go/pkg/gen/client/split/informers/externalversions"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/meshconfig"
	"github.com/openservicemesh/osm/libs/osmpolicy"
	"github.com/openservicemesh/osm/libs/smi"
	"github.com/openservicemesh/osm/services/smi-watcher/internal/normalize"
)

// Clients are the API clients the informers list and watch with.
type Clients struct {
	// Kube reads Namespaces, Services, EndpointSlices, Pods and
	// ServiceAccounts.
	Kube kubernetes.Interface
	// Access reads access.smi-spec.io TrafficTargets.
	Access accessclient.Interface
	// Specs reads specs.smi-spec.io HTTPRouteGroups and TCPRoutes.
	Specs specsclient.Interface
	// Split reads split.smi-spec.io TrafficSplits.
	Split splitclient.Interface
	// Dynamic reads OSM's MeshConfig, which has no generated client.
	Dynamic dynamic.Interface
}

// source is one observed kind: its informer and how its objects normalise.
type source struct {
	kind       string
	namespaced bool
	informer   cache.SharedIndexInformer
	// registration is the watcher's handler on the informer; it has synced
	// once the initial list's notifications have reached the handler.
	registration cache.ResourceEventHandlerRegistration
	// build normalises an object of the informer; false means the object is
	// not published (for example an EndpointSlice without a Service).
	build func(obj any) (proto.Message, bool)
}

// stripManagedFields drops metadata.managedFields before objects enter the
// caches: the mesh never reads them and they are a large share of an
// object's memory.
func stripManagedFields(obj any) (any, error) {
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

// trimPod keeps only what normalize.Pod reads, before the pod enters the
// cache: with tens of thousands of pods, container specs and statuses are
// most of the informers' memory. Namespace membership is checked later (it
// can change), so every pod keeps these fields.
func trimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil // a DeletedFinalStateUnknown tombstone
	}
	out := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:         p.Namespace,
			Name:              p.Name,
			UID:               p.UID,
			Generation:        p.Generation,
			ResourceVersion:   p.ResourceVersion,
			DeletionTimestamp: p.DeletionTimestamp,
			Labels:            p.Labels,
			Annotations:       p.Annotations,
		},
		Spec: corev1.PodSpec{ServiceAccountName: p.Spec.ServiceAccountName, NodeName: p.Spec.NodeName},
		Status: corev1.PodStatus{
			Phase:  p.Status.Phase,
			PodIP:  p.Status.PodIP,
			PodIPs: p.Status.PodIPs,
		},
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			out.Status.Conditions = []corev1.PodCondition{{Type: c.Type, Status: c.Status}}
		}
	}
	return out, nil
}

// transform is the kube factory's transform: pods are trimmed, every other
// object loses its managed fields.
func transform(obj any) (any, error) {
	if _, ok := obj.(*corev1.Pod); ok {
		return trimPod(obj)
	}
	return stripManagedFields(obj)
}

// factories are the informer factories of one watcher, started together.
type factories struct {
	kube    informers.SharedInformerFactory
	access  accessinformers.SharedInformerFactory
	specs   specsinformers.SharedInformerFactory
	split   splitinformers.SharedInformerFactory
	dynamic dynamicinformer.DynamicSharedInformerFactory
	// policy reads OSM's policy kinds in every namespace (policykinds.go).
	policy dynamicinformer.DynamicSharedInformerFactory
}

func (f factories) start(stop <-chan struct{}) {
	f.kube.Start(stop)
	f.access.Start(stop)
	f.specs.Start(stop)
	f.split.Start(stop)
	f.dynamic.Start(stop)
	f.policy.Start(stop)
}

// shutdown waits for the informers' goroutines after their stop channel
// closed. The SMI factories (generated before Shutdown existed) stop with
// the channel alone.
func (f factories) shutdown() {
	f.kube.Shutdown()
	f.dynamic.Shutdown()
	f.policy.Shutdown()
}

// newSources builds the informers of every observed kind. MeshConfig is
// watched only in controlPlaneNamespace, where the mesh's one MeshConfig
// lives. OSM's policy kinds are watched when the apiserver serves them;
// missing lists the ones it does not (see policySources).
func newSources(c Clients, resync time.Duration, controlPlaneNamespace string) (f factories, srcs []*source, missing []osmpolicy.Kind, err error) {
	f = factories{
		kube:    informers.NewSharedInformerFactoryWithOptions(c.Kube, resync, informers.WithTransform(transform)),
		access:  accessinformers.NewSharedInformerFactory(c.Access, resync),
		specs:   specsinformers.NewSharedInformerFactory(c.Specs, resync),
		split:   splitinformers.NewSharedInformerFactory(c.Split, resync),
		dynamic: dynamicinformer.NewFilteredDynamicSharedInformerFactory(c.Dynamic, resync, controlPlaneNamespace, nil),
	}
	srcs = []*source{
		{kind: layout.KindNamespace, informer: f.kube.Core().V1().Namespaces().Informer(),
			build: func(o any) (proto.Message, bool) { return normalize.Namespace(o.(*corev1.Namespace)), true }},
		{kind: layout.KindService, namespaced: true, informer: f.kube.Core().V1().Services().Informer(),
			build: func(o any) (proto.Message, bool) { return normalize.Service(o.(*corev1.Service)), true }},
		{kind: layout.KindEndpointSlice, namespaced: true, informer: f.kube.Discovery().V1().EndpointSlices().Informer(),
			build: func(o any) (proto.Message, bool) {
				m, ok := normalize.EndpointSlice(o.(*discoveryv1.EndpointSlice))
				return m, ok
			}},
		{kind: layout.KindPod, namespaced: true, informer: f.kube.Core().V1().Pods().Informer(),
			build: func(o any) (proto.Message, bool) { return normalize.Pod(o.(*corev1.Pod)), true }},
		{kind: layout.KindServiceAccount, namespaced: true, informer: f.kube.Core().V1().ServiceAccounts().Informer(),
			build: func(o any) (proto.Message, bool) { return normalize.ServiceAccount(o.(*corev1.ServiceAccount)), true }},
		{kind: layout.KindTrafficTarget, namespaced: true, informer: withTransform(f.access.Access().V1alpha3().TrafficTargets().Informer()),
			build: func(o any) (proto.Message, bool) {
				return smi.TrafficTarget(o.(*accessv1alpha3.TrafficTarget)), true
			}},
		{kind: layout.KindHTTPRouteGroup, namespaced: true, informer: withTransform(f.specs.Specs().V1alpha4().HTTPRouteGroups().Informer()),
			build: func(o any) (proto.Message, bool) {
				return smi.HTTPRouteGroup(o.(*specsv1alpha4.HTTPRouteGroup)), true
			}},
		{kind: layout.KindTCPRoute, namespaced: true, informer: withTransform(f.specs.Specs().V1alpha4().TCPRoutes().Informer()),
			build: func(o any) (proto.Message, bool) { return smi.TCPRoute(o.(*specsv1alpha4.TCPRoute)), true }},
		{kind: layout.KindTrafficSplit, namespaced: true, informer: withTransform(f.split.Split().V1alpha2().TrafficSplits().Informer()),
			build: func(o any) (proto.Message, bool) {
				return smi.TrafficSplit(o.(*splitv1alpha2.TrafficSplit)), true
			}},
		{kind: layout.KindMeshConfig, namespaced: true, informer: withTransform(f.dynamic.ForResource(meshconfig.GVR).Informer()),
			build: func(o any) (proto.Message, bool) {
				u, ok := o.(*unstructured.Unstructured)
				if !ok {
					return nil, false
				}
				return meshconfig.Parse(u), true
			}},
	}
	var policy []*source
	if f.policy, policy, missing, err = policySources(c, resync); err != nil {
		return factories{}, nil, nil, err
	}
	return f, append(srcs, policy...), missing, nil
}

// withTransform sets stripManagedFields on an informer of a factory that
// predates informers.WithTransform (the SMI and dynamic factories).
func withTransform(inf cache.SharedIndexInformer) cache.SharedIndexInformer {
	// SetTransform fails only on a started informer; these are new.
	_ = inf.SetTransform(stripManagedFields)
	return inf
}
