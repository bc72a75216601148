package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/tests/kube"
	"github.com/openservicemesh/osm/tests/stack"
)

// TestUnrelatedChangesPublishNoPolicyStatus: with one rejected and several
// accepted policies in the mesh, a MeshConfig change, a namespace joining
// and an endpoint change each recompile the mesh but publish no policy
// status, and the rejection's Warning Event keeps count 1; its message
// names the field once.
func TestUnrelatedChangesPublishNoPolicyStatus(t *testing.T) {
	ctx := t.Context()
	run := uniq()
	storeNS, buyerNS, giftNS := "steady-store"+run, "steady-buyer"+run, "steady-gift"+run
	meshName, mcName := "steady"+run, "steady-mesh-config"+run
	member := map[string]string{layout.LabelMonitoredBy: meshName}
	namespace(t, "osm-system", nil)
	namespace(t, storeNS, member, "bookstore")
	namespace(t, buyerNS, member, "bookbuyer")
	namespace(t, giftNS, nil, "bookgift") // joins the mesh later
	meshConfig(t, mcName, false)

	kubelet := node(t, "steady-node"+run)
	service(t, storeNS, "bookstore", 14001)
	readyPod(t, kubelet, storeNS, "bookstore-1", "bookstore", "bookstore", "10.244.20.10")
	readyPod(t, kubelet, buyerNS, "bookbuyer-1", "bookbuyer", "bookbuyer", "10.244.21.10")
	readyPod(t, kubelet, giftNS, "bookgift-1", "bookgift", "bookgift", "10.244.22.10")

	create(t, kube.HTTPRouteGroups, storeNS, map[string]any{
		"apiVersion": "specs.smi-spec.io/v1alpha4", "kind": "HTTPRouteGroup",
		"metadata": map[string]any{"name": "bookstore-routes"},
		"spec": map[string]any{"matches": []any{
			map[string]any{"name": "buy", "pathRegex": "/buy", "methods": []any{"GET"}},
			map[string]any{"name": "books", "pathRegex": "/books", "methods": []any{"GET"}},
		}},
	})
	target := func(name, rule string) map[string]any {
		return map[string]any{
			"apiVersion": "access.smi-spec.io/v1alpha3", "kind": "TrafficTarget",
			"metadata": map[string]any{"name": name},
			"spec": map[string]any{
				"destination": map[string]any{"kind": "ServiceAccount", "name": "bookstore", "namespace": storeNS},
				"sources":     []any{map[string]any{"kind": "ServiceAccount", "name": "bookbuyer", "namespace": buyerNS}},
				"rules":       []any{map[string]any{"kind": "HTTPRouteGroup", "name": rule, "matches": []any{"buy"}}},
			},
		}
	}
	create(t, kube.TrafficTargets, storeNS, target("buyer-may-buy", "bookstore-routes"))
	create(t, kube.TrafficTargets, storeNS, target("buyer-may-browse", "bookstore-routes"))
	rejected := create(t, kube.TrafficTargets, storeNS, target("buyer-routes-missing", "no-such-routes"))

	// The statuses are recorded from before the compiler's first compile.
	nc, err := stack.StartNATS(ctx, stack.NATSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	statuses := subscribeStatuses(t, nc)
	m := startMesh(t, stack.Options{Name: "steady", NATS: nc, MeshName: meshName, MeshConfig: mcName}, stack.Watcher, stack.Compiler)

	// The first compile publishes a verdict on each policy, and the watcher
	// records the rejection as a Warning Event.
	policies := []string{"HTTPRouteGroup " + storeNS + "/bookstore-routes",
		"TrafficTarget " + storeNS + "/buyer-may-buy", "TrafficTarget " + storeNS + "/buyer-may-browse",
		"TrafficTarget " + storeNS + "/buyer-routes-missing"}
	eventually(t, "a verdict on every policy", 30*time.Second, func() error {
		seen := statuses.seen()
		for _, p := range policies {
			if _, ok := seen[p]; !ok {
				return fmt.Errorf("no verdict on %s; got %v", p, seen)
			}
		}
		return nil
	})
	if got := statuses.seen()[policies[3]]; got != meshv1.PolicyCondition_POLICY_CONDITION_REJECTED {
		t.Fatalf("%s is %v, want rejected", policies[3], got)
	}
	var ev corev1.Event
	eventually(t, "the rejection's Event", 30*time.Second, func() error {
		evs := watcherEvents(t, storeNS)
		if len(evs) != 1 {
			return fmt.Errorf("%d watcher Events, want 1: %v", len(evs), evs)
		}
		ev = evs[0]
		return nil
	})
	if ev.InvolvedObject.Name != "buyer-routes-missing" || ev.InvolvedObject.UID != types.UID(rejected.GetUID()) || ev.Type != corev1.EventTypeWarning {
		t.Fatalf("Event %s on %+v, want a Warning on the rejected TrafficTarget", ev.Type, ev.InvolvedObject)
	}
	if n := strings.Count(ev.Message, "spec.rules[0].name"); n != 1 {
		t.Errorf("Event message names the field %d times, want once: %q", n, ev.Message)
	}
	time.Sleep(time.Second) // anything the first compile still had to say has arrived by now
	first := statuses.count()

	gen := generation(t, m)
	changes := []struct {
		name  string
		apply func()
	}{
		{"a MeshConfig change", func() { meshConfigPermissive(t, mcName, true) }},
		{"a namespace joining", func() { joinMesh(t, giftNS, meshName) }},
		{"an endpoint change", func() {
			readyPod(t, kubelet, storeNS, "bookstore-2", "bookstore", "bookstore", "10.244.20.11")
		}},
	}
	for _, c := range changes {
		c.apply()
		eventually(t, "the generation of "+c.name, 30*time.Second, func() error {
			if g := generation(t, m); g <= gen {
				return fmt.Errorf("generation still %d", g)
			}
			return nil
		})
		gen = generation(t, m)
		time.Sleep(time.Second) // a status would follow its generation within milliseconds
		if n := statuses.count(); n != first {
			t.Errorf("%s published %d policy statuses: %v", c.name, n-first, statuses.since(first))
		}
		first = statuses.count()
	}
	evs := watcherEvents(t, storeNS)
	if len(evs) != 1 || evs[0].Count != 1 {
		t.Errorf("after the changes the watcher's Events are %d; want the one rejection, with count 1", len(evs))
		for _, e := range evs {
			t.Logf("Event on %s with count %d: %s", e.InvolvedObject.Name, e.Count, e.Message)
		}
	}
}

// TestEmptyMeshTurnsReady: right after an install there is a MeshConfig
// and no meshed namespace. Every component turns ready within seconds on
// that empty mesh; then a namespace joins and its proxy is configured.
func TestEmptyMeshTurnsReady(t *testing.T) {
	ctx := t.Context()
	run := uniq()
	storeNS, buyerNS := "empty-store"+run, "empty-buyer"+run
	meshName, mcName := "empty"+run, "empty-mesh-config"+run
	namespace(t, "osm-system", nil)
	namespace(t, storeNS, nil, "bookstore")
	namespace(t, buyerNS, nil, "bookbuyer")
	meshConfig(t, mcName, true)
	for _, c := range stack.Components() {
		if _, err := builder.Build(ctx, string(c)); err != nil { // the clock below times the start, not the build
			t.Fatal(err)
		}
	}

	start := time.Now()
	m := startMeshWithin(t, 20*time.Second, stack.Options{Name: "empty", MeshName: meshName, MeshConfig: mcName},
		stack.CertAuthority, stack.Watcher, stack.Compiler, stack.Edge)
	t.Logf("every component ready on the empty mesh in %s", time.Since(start).Round(time.Millisecond))
	if g := generation(t, m); g == 0 {
		t.Fatalf("the edge is ready but the compiler wrote no generation")
	}

	kubelet := node(t, "empty-node"+run)
	service(t, storeNS, "bookstore", 14001)
	readyPod(t, kubelet, storeNS, "bookstore-1", "bookstore", "bookstore", "10.244.23.10")
	readyPod(t, kubelet, buyerNS, "bookbuyer-1", "bookbuyer", "bookbuyer", "10.244.24.10")
	joinMesh(t, storeNS, meshName)
	joinMesh(t, buyerNS, meshName)

	// A proxy of bookbuyer gets the bookstore cluster and its endpoint.
	proxyCert, err := m.WorkloadCert(ctx, identityOf(buyerNS, "bookbuyer"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := m.DialEdge(proxyCert.Pair)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	store := storeNS + "/bookstore|14001"
	eventually(t, "bookbuyer's proxy configured", 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		node := nodeOf("bookbuyer-1-uuid", "bookbuyer", buyerNS)
		_, clusters, err := adsFetch(ctx, cc, node, typeCDS)
		if err != nil {
			return err
		}
		if !hasCluster(clusters, store) {
			return fmt.Errorf("clusters %v lack %s", names(clusters), store)
		}
		_, cla, err := adsFetch(ctx, cc, node, typeEDS)
		if err != nil {
			return err
		}
		if got := endpoints(cla, store); strings.Join(got, ",") != "10.244.23.10" {
			return fmt.Errorf("endpoints of %s = %v", store, got)
		}
		return nil
	})
}

// node registers the Node name, Ready, and returns the kubelet stand-in
// that runs pods on it.
func node(t testing.TB, name string) *kube.Kubelet {
	t.Helper()
	k := cluster.Kubelet(name, "zone-a")
	if _, err := k.Register(t.Context()); err != nil {
		t.Fatal(err)
	}
	return k
}

// joinMesh labels namespace ns as monitored by mesh.
func joinMesh(t testing.TB, ns, mesh string) {
	t.Helper()
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%q}}}`, layout.LabelMonitoredBy, mesh)
	if _, err := cluster.Clientset().CoreV1().Namespaces().Patch(t.Context(), ns, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// meshConfig creates the MeshConfig name in osm-system.
func meshConfig(t testing.TB, name string, permissive bool) {
	t.Helper()
	create(t, kube.MeshConfigs, "osm-system", map[string]any{
		"apiVersion": "config.openservicemesh.io/v1alpha1", "kind": "MeshConfig",
		"metadata": map[string]any{"name": name},
		"spec":     map[string]any{"traffic": map[string]any{"enablePermissiveTrafficPolicyMode": permissive}},
	})
}

// meshConfigPermissive sets the MeshConfig's permissive traffic mode.
func meshConfigPermissive(t testing.TB, name string, permissive bool) {
	t.Helper()
	patch := fmt.Sprintf(`{"spec":{"traffic":{"enablePermissiveTrafficPolicyMode":%t}}}`, permissive)
	if _, err := cluster.Dynamic().Resource(kube.MeshConfigs).Namespace("osm-system").Patch(t.Context(), name,
		types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// create creates obj in namespace ns.
func create(t testing.TB, gvr schema.GroupVersionResource, ns string, obj map[string]any) *unstructured.Unstructured {
	t.Helper()
	u, err := cluster.Dynamic().Resource(gvr).Namespace(ns).Create(t.Context(), &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create %s %s/%v: %v", gvr.Resource, ns, obj["metadata"], err)
	}
	return u
}

// service creates a Service selecting app=name on an HTTP port.
func service(t testing.TB, ns, name string, port int32) {
	t.Helper()
	http := "http"
	if _, err := cluster.Clientset().CoreV1().Services(ns).Create(t.Context(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": name}, Ports: []corev1.ServicePort{{
			Name: "http", Port: port, TargetPort: intstr.FromInt32(port), AppProtocol: &http}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// readyPod creates a pod of app with ServiceAccount sa (created too, if
// missing: an identity is in the mesh only while its ServiceAccount exists)
// and makes it Ready at ip, as the kubelet would.
func readyPod(t testing.TB, k *kube.Kubelet, ns, name, sa, app, ip string) {
	t.Helper()
	if _, err := cluster.Clientset().CoreV1().ServiceAccounts(ns).Create(t.Context(), &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	p, err := cluster.Clientset().CoreV1().Pods(ns).Create(t.Context(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": app}},
		Spec: corev1.PodSpec{ServiceAccountName: sa, Containers: []corev1.Container{{Name: app, Image: app,
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 14001}}}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.MakeReady(t.Context(), p, ip); err != nil {
		t.Fatal(err)
	}
}

// watcherEvents lists the Events the smi-watcher recorded in ns.
func watcherEvents(t testing.TB, ns string) []corev1.Event {
	t.Helper()
	list, err := cluster.Clientset().CoreV1().Events(ns).List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []corev1.Event
	for _, ev := range list.Items {
		if ev.Source.Component == "osm-smi-watcher" {
			out = append(out, ev)
		}
	}
	return out
}

// generation is the number of the compiler's last generation; 0 before
// the first.
func generation(t testing.TB, m *stack.Mesh) uint64 {
	t.Helper()
	compiled, err := m.NATS().Admin().Bucket(t.Context(), bus.BucketCompiled)
	if err != nil {
		t.Fatal(err)
	}
	g := &meshv1.Generation{}
	if _, err := compiled.Get(t.Context(), layout.GenerationKey, g); err != nil {
		return 0
	}
	return g.GetNumber()
}

// statusLog records the policy statuses the compiler publishes.
type statusLog struct {
	mu  sync.Mutex
	all []*meshv1.PolicyStatus
}

// subscribeStatuses records every policy status published on nc from now
// on.
func subscribeStatuses(t testing.TB, nc *stack.NATS) *statusLog {
	t.Helper()
	l := &statusLog{}
	sub, err := nc.Admin().NATS().Subscribe(layout.PolicyStatusAll, func(msg *nats.Msg) {
		st := &meshv1.PolicyStatus{}
		if err := proto.Unmarshal(msg.Data, st); err != nil {
			t.Errorf("policy status on %s: %v", msg.Subject, err)
			return
		}
		l.mu.Lock()
		l.all = append(l.all, st)
		l.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return l
}

func (l *statusLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.all)
}

// seen is the last verdict on each policy, by "Kind namespace/name".
func (l *statusLog) seen() map[string]meshv1.PolicyCondition {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]meshv1.PolicyCondition{}
	for _, st := range l.all {
		o := st.GetObject()
		out[o.GetKind()+" "+o.GetNamespace()+"/"+o.GetName()] = st.GetCondition()
	}
	return out
}

// since describes the statuses after the first n.
func (l *statusLog) since(n int) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, st := range l.all[n:] {
		o := st.GetObject()
		out = append(out, fmt.Sprintf("%s %s/%s %v %s", o.GetKind(), o.GetNamespace(), o.GetName(), st.GetCondition(), st.GetReason()))
	}
	return out
}
