package scale

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/tests/kube"
)

// The synthetic mesh has the shape of the policy-compiler's synthetic
// benchmark mesh (its synth package), written as Kubernetes objects:
// service i is svc-NNNNN in namespace ns-(i mod namespaces), running as
// its own ServiceAccount, HTTP on 8080 for four services of five and TCP
// on 9090 for the fifth. Pod p backs service p mod services. TrafficTarget
// t lets three other identities, (7t+131s) mod services for s = 1..3, call
// service t with an HTTPRouteGroup of its namespace (a TCPRoute for TCP
// services). TrafficSplit s turns an apex service into 90/10 over two
// others of its namespace.
const (
	meshName   = "osm"
	meshConfig = "osm-mesh-config"
	controlNS  = "osm-system"
	nodeName   = "scale-node"
	httpPort   = 8080
	tcpPort    = 9090
	extraPort  = 8081 // the port the Service edit adds
)

// shape is the synthetic mesh's layout, computed from the Config.
type shape struct {
	services, pods, tts, groups, splits, namespaces int
}

func newShape(c Config) shape {
	return shape{services: c.Services, pods: c.Pods, tts: min(c.TrafficTargets, c.Services), groups: c.RouteGroups,
		splits: c.Splits, namespaces: min(100, max(1, c.Services/10))}
}

func svcName(i int) string        { return fmt.Sprintf("svc-%05d", i) }
func (s shape) ns(i int) string   { return fmt.Sprintf("ns-%03d", i%s.namespaces) }
func (s shape) port(i int) int32  { return map[bool]int32{true: tcpPort, false: httpPort}[i%5 == 4] }
func (s shape) isHTTP(i int) bool { return i%5 != 4 }
func (s shape) podName(p int) string {
	return fmt.Sprintf("%s-%d", svcName(p%s.services), p/s.services)
}
func (s shape) cluster(i int) string     { return clusterName(s.ns(i), svcName(i), s.port(i)) }
func (s shape) groupsIn(ns int) []string { return s.groupNames()[ns] }

// podIP is the IP of pod p: 10.16.0.1 onwards.
func podIP(p int) string {
	n := p + 1
	return fmt.Sprintf("10.%d.%d.%d", 16+(n>>16), (n>>8)&255, n&255)
}

// clusterName is the compiler's name of a service port's cluster, load
// assignment and outbound route configuration: "ns/svc|port".
func clusterName(ns, svc string, port int32) string { return fmt.Sprintf("%s/%s|%d", ns, svc, port) }

// spiffe is the service identity of ns/sa, as inbound RBAC names it.
func spiffe(ns, sa string) string { return fmt.Sprintf("spiffe://cluster.local/ns/%s/sa/%s", ns, sa) }

// groupNames are the HTTPRouteGroups of each namespace index.
func (s shape) groupNames() map[int][]string {
	out := map[int][]string{}
	for g := range s.groups {
		out[g%s.namespaces] = append(out[g%s.namespaces], fmt.Sprintf("routes-%04d", g))
	}
	return out
}

// sources are the identities (service indexes) TrafficTarget t lets in.
func (s shape) sources(t int) []int {
	var out []int
	for k := 1; k <= 3; k++ {
		j := (t*7 + k*131) % s.services
		if j == t {
			j = (j + 1) % s.services
		}
		out = append(out, j)
	}
	return out
}

// split is TrafficSplit k's apex and backends; ok is false when the mesh
// has too few services for it.
func (s shape) split(k int) (apex, b1, b2 int, ok bool) {
	n := s.namespaces
	apex = (k/n)*3*n + k%n
	b1, b2 = apex+n, apex+2*n
	return apex, b1, b2, b2 < s.services
}

// clients is a kube client with limits for thousands of writes.
type clients struct {
	cs  *kubernetes.Clientset
	dyn *dynamic.DynamicClient
}

func newClients(c *kube.Cluster) (*clients, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", c.KubeconfigPath())
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = 5000, 10000
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &clients{cs: cs, dyn: dyn}, nil
}

// parallel runs f(0..n-1) on workers goroutines and returns the first
// error.
func parallel(ctx context.Context, n, workers int, f func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var next atomic.Int64
	var once sync.Once
	var first error
	var wg sync.WaitGroup
	for range max(1, min(workers, n)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := f(ctx, i); err != nil {
					once.Do(func() { first = err; cancel() })
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

func (k *clients) create(ctx context.Context, gvr schema.GroupVersionResource, ns string, obj map[string]any) error {
	_, err := k.dyn.Resource(gvr).Namespace(ns).Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create %s %s/%v: %w", gvr.Resource, ns, obj["metadata"].(map[string]any)["name"], err)
	}
	return nil
}

func (k *clients) namespace(ctx context.Context, name string, meshed bool) error {
	obj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if meshed {
		obj.Labels = map[string]string{layout.LabelMonitoredBy: meshName}
	}
	if _, err := k.cs.CoreV1().Namespaces().Create(ctx, obj, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("namespace %s: %w", name, err)
	}
	return nil
}

func (k *clients) serviceAccount(ctx context.Context, ns, name string) error {
	_, err := k.cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("ServiceAccount %s/%s: %w", ns, name, err)
	}
	return nil
}

func servicePort(port int32, http bool) corev1.ServicePort {
	name, proto := "http", "http"
	if !http {
		name, proto = "tcp", "tcp"
	}
	return corev1.ServicePort{Name: name, Port: port, TargetPort: intstr.FromInt32(port), AppProtocol: &proto}
}

func (k *clients) service(ctx context.Context, ns, name string, ports ...corev1.ServicePort) error {
	_, err := k.cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": name}, Ports: ports},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("Service %s/%s: %w", ns, name, err)
	}
	return nil
}

// pod creates a pod of app on the stand-in's node (as if scheduled) and
// returns it, not ready yet.
func (k *clients) pod(ctx context.Context, ns, name, app string, port int32) (*corev1.Pod, error) {
	p, err := k.cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": app}},
		Spec: corev1.PodSpec{ServiceAccountName: app, NodeName: nodeName, Containers: []corev1.Container{{Name: "app", Image: "scale/" + app,
			Ports: []corev1.ContainerPort{{Name: "app", ContainerPort: port}}}}},
	}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return k.cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	}
	if err != nil {
		return nil, fmt.Errorf("pod %s/%s: %w", ns, name, err)
	}
	return p, nil
}

// setReady reports pod Running with ip, ready or not, as the kubelet
// stand-in does (kube.PodStatus), with one status update; the pod must be
// bound to the stand-in's registered Node.
func (k *clients) setReady(ctx context.Context, pod *corev1.Pod, ip string, ready bool) error {
	pods := k.cs.CoreV1().Pods(pod.Namespace)
	p := pod.DeepCopy()
	for {
		p.Status = kube.PodStatus(p, ip, ready)
		_, err := pods.UpdateStatus(ctx, p, metav1.UpdateOptions{})
		if !apierrors.IsConflict(err) {
			if err != nil {
				return fmt.Errorf("pod %s/%s status: %w", pod.Namespace, pod.Name, err)
			}
			return nil
		}
		if p, err = pods.Get(ctx, pod.Name, metav1.GetOptions{}); err != nil {
			return fmt.Errorf("pod %s/%s: %w", pod.Namespace, pod.Name, err)
		}
	}
}

func routeGroup(name string, g int) map[string]any {
	return map[string]any{
		"apiVersion": "specs.smi-spec.io/v1alpha4", "kind": "HTTPRouteGroup",
		"metadata": map[string]any{"name": name},
		"spec": map[string]any{"matches": []any{
			map[string]any{"name": "read", "pathRegex": fmt.Sprintf("/api/v%d/items.*", g%7), "methods": []any{"GET", "HEAD"}},
			map[string]any{"name": "write", "pathRegex": fmt.Sprintf("/api/v%d/items/[0-9]+", g%7), "methods": []any{"POST", "PUT"},
				"headers": []any{map[string]any{"x-tenant": "t-[a-z]+"}}},
		}},
	}
}

func tcpRoute() map[string]any {
	return map[string]any{
		"apiVersion": "specs.smi-spec.io/v1alpha4", "kind": "TCPRoute",
		"metadata": map[string]any{"name": "tcp"},
		"spec":     map[string]any{"matches": map[string]any{"ports": []any{int64(tcpPort)}}},
	}
}

// subject is a TrafficTarget's ServiceAccount subject.
type subject struct{ ns, name string }

// trafficTarget lets sources call dest (ns/dest) with rule, an
// HTTPRouteGroup's name or "" for the namespace's TCPRoute.
func trafficTarget(ns, name, dest, group string, sources ...subject) map[string]any {
	var src []any
	for _, s := range sources {
		src = append(src, map[string]any{"kind": "ServiceAccount", "name": s.name, "namespace": s.ns})
	}
	rule := map[string]any{"kind": "TCPRoute", "name": "tcp"}
	if group != "" {
		rule = map[string]any{"kind": "HTTPRouteGroup", "name": group, "matches": []any{"read", "write"}}
	}
	return map[string]any{
		"apiVersion": "access.smi-spec.io/v1alpha3", "kind": "TrafficTarget",
		"metadata": map[string]any{"name": name},
		"spec": map[string]any{
			"destination": map[string]any{"kind": "ServiceAccount", "name": dest, "namespace": ns},
			"sources":     src,
			"rules":       []any{rule},
		},
	}
}

func trafficSplit(name, apex, b1, b2 string, w1, w2 int64) map[string]any {
	return map[string]any{
		"apiVersion": "split.smi-spec.io/v1alpha2", "kind": "TrafficSplit",
		"metadata": map[string]any{"name": name},
		"spec": map[string]any{"service": apex, "backends": []any{
			map[string]any{"service": b1, "weight": w1}, map[string]any{"service": b2, "weight": w2},
		}},
	}
}

// ttRule is the rule TrafficTarget t (or another to service t) uses: an
// HTTPRouteGroup of its namespace, or "" for the TCPRoute.
func (s shape) ttRule(t int) string {
	gs := s.groupsIn(t % s.namespaces)
	if !s.isHTTP(t) || len(gs) == 0 {
		return ""
	}
	return gs[t%len(gs)]
}

// createMesh writes the synthetic mesh through the API and makes every
// pod Ready through the kubelet stand-in. progress is told each step.
func createMesh(ctx context.Context, k *clients, kubelet *kube.Kubelet, s shape, workers int, progress func(string, ...any)) error {
	if err := k.namespace(ctx, controlNS, false); err != nil {
		return err
	}
	if err := k.create(ctx, kube.MeshConfigs, controlNS, map[string]any{
		"apiVersion": "config.openservicemesh.io/v1alpha1", "kind": "MeshConfig",
		"metadata": map[string]any{"name": meshConfig},
		"spec":     map[string]any{"traffic": map[string]any{"enablePermissiveTrafficPolicyMode": false}},
	}); err != nil {
		return err
	}
	if _, err := kubelet.Register(ctx); err != nil {
		return err
	}
	if err := parallel(ctx, s.namespaces, workers, func(ctx context.Context, n int) error {
		ns := fmt.Sprintf("ns-%03d", n)
		if err := k.namespace(ctx, ns, true); err != nil {
			return err
		}
		return k.create(ctx, kube.TCPRoutes, ns, tcpRoute())
	}); err != nil {
		return err
	}
	if err := parallel(ctx, s.groups, workers, func(ctx context.Context, g int) error {
		return k.create(ctx, kube.HTTPRouteGroups, fmt.Sprintf("ns-%03d", g%s.namespaces), routeGroup(fmt.Sprintf("routes-%04d", g), g))
	}); err != nil {
		return err
	}
	progress("%d namespaces, %d HTTPRouteGroups", s.namespaces, s.groups)
	if err := parallel(ctx, s.services, workers, func(ctx context.Context, i int) error {
		if err := k.serviceAccount(ctx, s.ns(i), svcName(i)); err != nil {
			return err
		}
		return k.service(ctx, s.ns(i), svcName(i), servicePort(s.port(i), s.isHTTP(i)))
	}); err != nil {
		return err
	}
	progress("%d Services and ServiceAccounts", s.services)
	if err := parallel(ctx, s.tts, workers, func(ctx context.Context, t int) error {
		var src []subject
		for _, j := range s.sources(t) {
			src = append(src, subject{s.ns(j), svcName(j)})
		}
		return k.create(ctx, kube.TrafficTargets, s.ns(t), trafficTarget(s.ns(t), svcName(t)+"-access", svcName(t), s.ttRule(t), src...))
	}); err != nil {
		return err
	}
	n := 0
	for sp := range s.splits {
		apex, b1, b2, ok := s.split(sp)
		if !ok {
			break
		}
		if err := k.create(ctx, kube.TrafficSplits, s.ns(apex), trafficSplit(svcName(apex)+"-split", svcName(apex), svcName(b1), svcName(b2), 90, 10)); err != nil {
			return err
		}
		n++
	}
	progress("%d TrafficTargets, %d TrafficSplits", s.tts, n)
	var ready atomic.Int64
	if err := parallel(ctx, s.pods, workers, func(ctx context.Context, p int) error {
		i := p % s.services
		pod, err := k.pod(ctx, s.ns(i), s.podName(p), svcName(i), s.port(i))
		if err != nil {
			return err
		}
		if err := k.setReady(ctx, pod, podIP(p), true); err != nil {
			return err
		}
		if n := ready.Add(1); n%10000 == 0 && int(n) < s.pods {
			progress("%d pods Ready", n)
		}
		return nil
	}); err != nil {
		return err
	}
	progress("%d pods Ready", s.pods)
	return nil
}
