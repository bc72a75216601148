package soak

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/util/retry"

	"github.com/openservicemesh/osm/libs/identity"
	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/tests/kube"
	"github.com/openservicemesh/osm/tests/stack"
)

// The soak's mesh: Config.Identities apps spread over two namespaces. App i
// runs as ServiceAccount app-i behind Service app-i (port appPort) with two
// Ready pods, the second of which the endpoint edits make NotReady and
// Ready again. TrafficTarget app-i lets app i-1 call app i (a ring, so
// every proxy has a destination); the TrafficTarget edits add and remove
// app i+2 as a second source.
const (
	appPort    = 8080
	routeGroup = "soak-routes"
	meshName   = "osm"
	meshConfig = "osm-mesh-config"
	controlNS  = "osm-system"
)

// app is one service of the soak's mesh.
type app struct {
	i       int
	ns      string
	name    string
	id      identity.ID
	cluster string // the xDS cluster (and load assignment) of its Service
	extraIP string // the IP of its second pod
}

func newApps(n int) []*app {
	out := make([]*app, n)
	for i := range n {
		ns := fmt.Sprintf("soak-%c", 'a'+i%2)
		name := fmt.Sprintf("app-%d", i)
		out[i] = &app{i: i, ns: ns, name: name, id: identity.New(stack.TrustDomain, ns, name),
			cluster: fmt.Sprintf("%s/%s|%d", ns, name, appPort), extraIP: fmt.Sprintf("10.250.%d.11", i)}
	}
	return out
}

// caller is the app the ring lets call a; extraSource the one the
// TrafficTarget edits add and remove.
func caller(apps []*app, a *app) *app      { return apps[(a.i+len(apps)-1)%len(apps)] }
func extraSource(apps []*app, a *app) *app { return apps[(a.i+2)%len(apps)] }

var (
	gvrTrafficTarget = kube.TrafficTargets
	gvrRouteGroup    = kube.HTTPRouteGroups
	gvrMeshConfig    = kube.MeshConfigs
)

// createMesh writes the soak's mesh into the cluster.
func createMesh(ctx context.Context, c *kube.Cluster, apps []*app) error {
	cs := c.Clientset()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: controlNS}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("namespace %s: %w", controlNS, err)
	}
	for _, ns := range []string{"soak-a", "soak-b"} {
		obj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{layout.LabelMonitoredBy: meshName}}}
		if _, err := cs.CoreV1().Namespaces().Create(ctx, obj, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("namespace %s: %w", ns, err)
		}
		if err := create(ctx, c, gvrRouteGroup, ns, map[string]any{
			"apiVersion": "specs.smi-spec.io/v1alpha4", "kind": "HTTPRouteGroup",
			"metadata": map[string]any{"name": routeGroup},
			"spec": map[string]any{"matches": []any{
				map[string]any{"name": "all", "pathRegex": "/.*", "methods": []any{"GET"}},
			}},
		}); err != nil {
			return err
		}
	}
	if err := create(ctx, c, gvrMeshConfig, controlNS, map[string]any{
		"apiVersion": "config.openservicemesh.io/v1alpha1", "kind": "MeshConfig",
		"metadata": map[string]any{"name": meshConfig},
		"spec":     map[string]any{"traffic": map[string]any{"enablePermissiveTrafficPolicyMode": false}},
	}); err != nil {
		return err
	}
	kubelet := c.Kubelet("soak-node", "zone-a")
	if _, err := kubelet.Register(ctx); err != nil {
		return err
	}
	http := "http"
	for _, a := range apps {
		if _, err := cs.CoreV1().ServiceAccounts(a.ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: a.name}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("ServiceAccount %s/%s: %w", a.ns, a.name, err)
		}
		if _, err := cs.CoreV1().Services(a.ns).Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: a.name},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": a.name}, Ports: []corev1.ServicePort{{
				Name: "http", Port: appPort, TargetPort: intstr.FromInt32(appPort), AppProtocol: &http}}},
		}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("Service %s/%s: %w", a.ns, a.name, err)
		}
		for k, ip := range []string{fmt.Sprintf("10.250.%d.10", a.i), a.extraIP} {
			pod, err := cs.CoreV1().Pods(a.ns).Create(ctx, &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", a.name, k), Labels: map[string]string{"app": a.name}},
				Spec: corev1.PodSpec{ServiceAccountName: a.name, Containers: []corev1.Container{{Name: "app", Image: "soak/" + a.name,
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: appPort}}}}},
			}, metav1.CreateOptions{})
			if err != nil {
				return fmt.Errorf("pod of %s/%s: %w", a.ns, a.name, err)
			}
			if _, err := kubelet.MakeReady(ctx, pod, ip); err != nil {
				return err
			}
		}
		if err := create(ctx, c, gvrTrafficTarget, a.ns, trafficTarget(a, caller(apps, a))); err != nil {
			return err
		}
	}
	return nil
}

// removeMesh deletes what createMesh wrote in the apps' namespaces, so
// that another run on the same cluster starts from nothing: the pods are
// deleted at once (no kubelet confirms a graceful deletion), then the
// namespaces, and it waits until they are gone.
func removeMesh(ctx context.Context, c *kube.Cluster) error {
	cs := c.Clientset()
	zero := int64(0)
	nss := []string{"soak-a", "soak-b"}
	for _, ns := range nss {
		err := cs.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &zero}, metav1.ListOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete the pods of %s: %w", ns, err)
		}
		if err := cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete namespace %s: %w", ns, err)
		}
	}
	return stack.Eventually(ctx, 2*time.Minute, func() error {
		for _, ns := range nss {
			if _, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				return fmt.Errorf("namespace %s still there (%v)", ns, err)
			}
		}
		return nil
	})
}

// trafficTarget lets sources call a.
func trafficTarget(a *app, sources ...*app) map[string]any {
	var src []any
	for _, s := range sources {
		src = append(src, map[string]any{"kind": "ServiceAccount", "name": s.name, "namespace": s.ns})
	}
	return map[string]any{
		"apiVersion": "access.smi-spec.io/v1alpha3", "kind": "TrafficTarget",
		"metadata": map[string]any{"name": a.name},
		"spec": map[string]any{
			"destination": map[string]any{"kind": "ServiceAccount", "name": a.name, "namespace": a.ns},
			"sources":     src,
			"rules":       []any{map[string]any{"kind": "HTTPRouteGroup", "name": routeGroup, "matches": []any{"all"}}},
		},
	}
}

// setSources rewrites the sources of a's TrafficTarget.
func setSources(ctx context.Context, c *kube.Cluster, a *app, sources ...*app) error {
	tts := c.Dynamic().Resource(gvrTrafficTarget).Namespace(a.ns)
	want := trafficTarget(a, sources...)["spec"]
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := tts.Get(ctx, a.name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		cur.Object["spec"] = want
		_, err = tts.Update(ctx, cur, metav1.UpdateOptions{})
		return err
	})
}

func create(ctx context.Context, c *kube.Cluster, gvr schema.GroupVersionResource, ns string, obj map[string]any) error {
	_, err := c.Dynamic().Resource(gvr).Namespace(ns).Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create %s %s/%v: %w", gvr.Resource, ns, obj["metadata"], err)
	}
	return nil
}
