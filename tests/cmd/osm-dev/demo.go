package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/tests/kube"
	"github.com/openservicemesh/osm/tests/stack"
)

// meshConfigName is the demo's MeshConfig, in the control-plane namespace.
const meshConfigName = "osm-mesh-config"

// demoPodSpec is one pod of the bookstore demo.
type demoPodSpec struct {
	ns, name, sa, ip string
	labels           map[string]string
	// proxyless pods are annotated openservicemesh.io/proxyless: grpc and
	// run tests/cmd/bookstore-grpc (traffic.go); the others get an Envoy
	// sidecar, which the simulated proxies stand in for.
	proxyless bool
}

// The demo's pods. bookstore v1 and v2 are gRPC servers, the backends of
// the split; bookbuyer-grpc and bookthief-grpc call them. bookbuyer-0 and
// bookthief-0 show the Envoy sidecar injection.
var demoPods = []demoPodSpec{
	{"bookstore", "bookstore-v1-0", "bookstore", "10.244.1.10", map[string]string{"app": "bookstore", "version": "v1"}, true},
	{"bookstore", "bookstore-v2-0", "bookstore", "10.244.1.20", map[string]string{"app": "bookstore", "version": "v2"}, true},
	{"bookbuyer", "bookbuyer-0", "bookbuyer", "10.244.2.10", map[string]string{"app": "bookbuyer"}, false},
	{"bookthief", "bookthief-0", "bookthief", "10.244.3.10", map[string]string{"app": "bookthief"}, false},
	{"bookbuyer", "bookbuyer-grpc-0", "bookbuyer", "10.244.2.20", map[string]string{"app": "bookbuyer-grpc"}, true},
	{"bookthief", "bookthief-grpc-0", "bookthief", "10.244.3.20", map[string]string{"app": "bookthief-grpc"}, true},
}

// The names of the gRPC demo's policy objects in bookstore.
const (
	grpcRouteGroup    = "bookstore-grpc-routes"
	grpcTrafficTarget = "bookstore-grpc"
)

// grpcTrafficTargetObject lets bookbuyer call both methods of
// bookstore.Books (gRPC calls are POSTs to /<service>/<method>). Deleting
// it leaves the HTTP TrafficTarget bookstore, so bookbuyer still reaches
// bookstore and its gRPC calls are refused with PermissionDenied.
func grpcTrafficTargetObject() map[string]any {
	return map[string]any{
		"apiVersion": "access.smi-spec.io/v1alpha3", "kind": "TrafficTarget",
		"metadata": map[string]any{"name": grpcTrafficTarget, "namespace": "bookstore"},
		"spec": map[string]any{
			"destination": map[string]any{"kind": "ServiceAccount", "name": "bookstore", "namespace": "bookstore"},
			"sources":     []any{map[string]any{"kind": "ServiceAccount", "name": "bookbuyer", "namespace": "bookbuyer"}},
			"rules": []any{map[string]any{"kind": "HTTPRouteGroup", "name": grpcRouteGroup,
				"matches": []any{"get", "buy"}}},
		},
	}
}

var (
	gvrTrafficTarget = schema.GroupVersionResource{Group: "access.smi-spec.io", Version: "v1alpha3", Resource: "traffictargets"}
	gvrRouteGroup    = schema.GroupVersionResource{Group: "specs.smi-spec.io", Version: "v1alpha4", Resource: "httproutegroups"}
	gvrTrafficSplit  = schema.GroupVersionResource{Group: "split.smi-spec.io", Version: "v1alpha2", Resource: "trafficsplits"}
	gvrMeshConfig    = schema.GroupVersionResource{Group: "config.openservicemesh.io", Version: "v1alpha1", Resource: "meshconfigs"}
)

// applyDemo creates the bookstore demo, idempotently: the MeshConfig, the
// bookstore apex and its v1 and v2 backends behind a 75/25 TrafficSplit,
// bookbuyer allowed to reach bookstore by two TrafficTargets (the HTTP
// routes of the Envoy demo, and the gRPC methods of bookstore.Books),
// bookthief not; the pods are made Ready by the kubelet stand-in (there
// is no kubelet). A demo pod whose flavour (proxyless or sidecar) is not
// the one demoPods gives, as left by an older dev stack in --dir, is
// replaced.
func applyDemo(ctx context.Context, c *kube.Cluster) error {
	cs := c.Clientset()
	dyn := c.Dynamic()
	create := func(gvr schema.GroupVersionResource, ns string, obj map[string]any) error {
		_, err := dyn.Resource(gvr).Namespace(ns).Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create %s %s/%v: %w", gvr.Resource, ns, obj["metadata"], err)
		}
		return nil
	}
	if err := create(gvrMeshConfig, controlPlaneNS, map[string]any{
		"apiVersion": "config.openservicemesh.io/v1alpha1", "kind": "MeshConfig",
		"metadata": map[string]any{"name": meshConfigName},
		"spec":     map[string]any{"traffic": map[string]any{"enablePermissiveTrafficPolicyMode": false}},
	}); err != nil {
		return err
	}
	for _, sa := range []struct{ ns, name string }{{"bookstore", "bookstore"}, {"bookbuyer", "bookbuyer"}, {"bookthief", "bookthief"}} {
		_, err := cs.CoreV1().ServiceAccounts(sa.ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa.name}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	http := "http"
	for name, selector := range map[string]map[string]string{
		"bookstore":    {"app": "bookstore"},
		"bookstore-v1": {"app": "bookstore", "version": "v1"},
		"bookstore-v2": {"app": "bookstore", "version": "v2"},
	} {
		_, err := cs.CoreV1().Services("bookstore").Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.ServiceSpec{Selector: selector, Ports: []corev1.ServicePort{{
				Name: "http", Port: 14001, TargetPort: intstr.FromInt32(14001), AppProtocol: &http}}},
		}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	if err := create(gvrRouteGroup, "bookstore", map[string]any{
		"apiVersion": "specs.smi-spec.io/v1alpha4", "kind": "HTTPRouteGroup",
		"metadata": map[string]any{"name": "bookstore-service-routes"},
		"spec": map[string]any{"matches": []any{
			map[string]any{"name": "buy-a-book", "pathRegex": ".*a-book.*new", "methods": []any{"GET"}},
			map[string]any{"name": "books-bought", "pathRegex": "/books-bought", "methods": []any{"GET"}},
		}},
	}); err != nil {
		return err
	}
	if err := create(gvrTrafficTarget, "bookstore", map[string]any{
		"apiVersion": "access.smi-spec.io/v1alpha3", "kind": "TrafficTarget",
		"metadata": map[string]any{"name": "bookstore"},
		"spec": map[string]any{
			"destination": map[string]any{"kind": "ServiceAccount", "name": "bookstore", "namespace": "bookstore"},
			"sources":     []any{map[string]any{"kind": "ServiceAccount", "name": "bookbuyer", "namespace": "bookbuyer"}},
			"rules": []any{map[string]any{"kind": "HTTPRouteGroup", "name": "bookstore-service-routes",
				"matches": []any{"buy-a-book", "books-bought"}}},
		},
	}); err != nil {
		return err
	}
	if err := create(gvrRouteGroup, "bookstore", map[string]any{
		"apiVersion": "specs.smi-spec.io/v1alpha4", "kind": "HTTPRouteGroup",
		"metadata": map[string]any{"name": grpcRouteGroup},
		"spec": map[string]any{"matches": []any{
			map[string]any{"name": "get", "pathRegex": "/bookstore.Books/Get", "methods": []any{"POST"}},
			map[string]any{"name": "buy", "pathRegex": "/bookstore.Books/Buy", "methods": []any{"POST"}},
		}},
	}); err != nil {
		return err
	}
	if err := create(gvrTrafficTarget, "bookstore", grpcTrafficTargetObject()); err != nil {
		return err
	}
	if err := create(gvrTrafficSplit, "bookstore", map[string]any{
		"apiVersion": "split.smi-spec.io/v1alpha2", "kind": "TrafficSplit",
		"metadata": map[string]any{"name": "bookstore-split"},
		"spec": map[string]any{"service": "bookstore", "backends": []any{
			map[string]any{"service": "bookstore-v1", "weight": int64(75)},
			map[string]any{"service": "bookstore-v2", "weight": int64(25)},
		}},
	}); err != nil {
		return err
	}
	kubelet := c.Kubelet("osm-dev-node", "zone-a")
	if _, err := kubelet.Register(ctx); err != nil {
		return err
	}
	for _, p := range demoPods {
		// An identity is in the mesh only while its ServiceAccount exists.
		if _, err := cs.CoreV1().ServiceAccounts(p.ns).Create(ctx, &corev1.ServiceAccount{
			ObjectMeta: metav1.ObjectMeta{Name: p.sa}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("demo ServiceAccount %s/%s: %w", p.ns, p.sa, err)
		}
		pod, err := cs.CoreV1().Pods(p.ns).Get(ctx, p.name, metav1.GetOptions{})
		if err == nil && isProxyless(pod) != p.proxyless {
			if err = deletePod(ctx, c, pod); err == nil {
				err = apierrors.NewNotFound(corev1.Resource("pods"), p.name)
			}
		}
		if apierrors.IsNotFound(err) {
			pod, err = cs.CoreV1().Pods(p.ns).Create(ctx, p.pod(), metav1.CreateOptions{})
		}
		if err != nil {
			return fmt.Errorf("demo pod %s/%s: %w", p.ns, p.name, err)
		}
		if _, err := kubelet.MakeReady(ctx, pod, p.ip); err != nil {
			return fmt.Errorf("demo pod %s/%s ready: %w", p.ns, p.name, err)
		}
	}
	return nil
}

// pod is the pod to create.
func (p demoPodSpec) pod() *corev1.Pod {
	app := p.labels["app"]
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.name, Labels: p.labels},
		Spec: corev1.PodSpec{ServiceAccountName: p.sa, Containers: []corev1.Container{{Name: app,
			Image: "openservicemesh/" + app + ":v1", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 14001}}}}},
	}
	if p.proxyless {
		pod.Annotations = map[string]string{layout.NodeMetadataProxyless: layout.ProxylessGRPC}
		pod.Spec.Containers[0].Image = "openservicemesh/bookstore-grpc:dev"
		if !strings.HasPrefix(p.name, "bookstore-") {
			pod.Spec.Containers[0].Ports = nil // a client
		}
	}
	return pod
}

// isProxyless reports whether pod asks for proxyless gRPC.
func isProxyless(pod *corev1.Pod) bool {
	return pod.Annotations[layout.NodeMetadataProxyless] == layout.ProxylessGRPC
}

// injected reports whether the injector mutated pod as its flavour asks:
// an Envoy sidecar beside the app, or gRPC's bootstrap in its environment.
func injected(pod *corev1.Pod) bool {
	if !isProxyless(pod) {
		return len(pod.Spec.Containers) == 2
	}
	for _, e := range pod.Spec.Containers[0].Env {
		if e.Name == stack.EnvGRPCBootstrap {
			return true
		}
	}
	return false
}

// deletePod deletes pod at once (there is no kubelet to confirm a graceful
// deletion) and waits until it is gone.
func deletePod(ctx context.Context, c *kube.Cluster, pod *corev1.Pod) error {
	pods := c.Clientset().CoreV1().Pods(pod.Namespace)
	zero := int64(0)
	if err := pods.Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("replace demo pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return stack.Eventually(ctx, 30*time.Second, func() error {
		_, err := pods.Get(ctx, pod.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("demo pod %s/%s still exists (%v)", pod.Namespace, pod.Name, err)
	})
}
