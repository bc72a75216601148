package command

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/osmctx"
	"github.com/openservicemesh/osm/libs/policy"
	osmkube "github.com/openservicemesh/osm/tests/kube"
)

// TestPolicyCheck runs osm policy check against the harness apiserver
// with OSM's bookstore demo policies: bookbuyer may GET /books-bought and
// /buy-a-book/new on bookstore, bookthief is named by no TrafficTarget.
func TestPolicyCheck(t *testing.T) {
	ctx := t.Context()
	cs, dyn := cluster.Clientset(), cluster.Dynamic()
	const cpNS, mesh, mcName = "osm-policytest", "policytest", "policytest-mesh-config"
	crds, err := osmkube.CRDDir()
	if err == nil {
		err = cluster.ApplyCRDs(ctx, crds)
	}
	if err != nil {
		t.Fatal(err)
	}
	mustCreate := func(_ any, err error) {
		t.Helper()
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	mustCreate(cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: cpNS}}, metav1.CreateOptions{}))
	// The demo's namespaces under names of their own (other tests of the
	// package use bookstore and bookbuyer), each with its ServiceAccount.
	nsOf := map[string]string{"bookstore": "store", "bookbuyer": "buyer", "bookthief": "thief", "bookwarehouse": "warehouse"}
	for sa, ns := range nsOf {
		lbl := map[string]string{layout.LabelMonitoredBy: mesh}
		if ns == "warehouse" {
			lbl = nil // not in the mesh
		}
		mustCreate(cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: lbl}}, metav1.CreateOptions{}))
		mustCreate(cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}))
	}
	mc := unstructuredMeshConfig(mcName)
	mc.Object["spec"] = map[string]any{"traffic": map[string]any{"enablePermissiveTrafficPolicyMode": false}}
	mustCreate(dyn.Resource(osmkube.MeshConfigs).Namespace(cpNS).Create(ctx, mc, metav1.CreateOptions{}))
	for _, sa := range []string{"bookstore", "bookwarehouse"} {
		ns := nsOf[sa]
		mustCreate(cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: sa},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": sa}, Ports: []corev1.ServicePort{{
				Name: "http", Port: 14001, TargetPort: intstr.FromString("web"), AppProtocol: ptrTo("http")}}},
		}, metav1.CreateOptions{}))
		mustCreate(cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: sa + "-v1-0", Labels: map[string]string{"app": sa}},
			Spec: corev1.PodSpec{ServiceAccountName: sa, Containers: []corev1.Container{{Name: "app", Image: "app",
				Ports: []corev1.ContainerPort{{Name: "web", ContainerPort: 14011}}}}},
		}, metav1.CreateOptions{}))
	}
	create := func(gvr schema.GroupVersionResource, kind string, name string, spec map[string]any) {
		t.Helper()
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": gvr.GroupVersion().String(), "kind": kind,
			"metadata": map[string]any{"name": name, "namespace": "store"}, "spec": spec}}
		mustCreate(dyn.Resource(gvr).Namespace("store").Create(ctx, u, metav1.CreateOptions{}))
	}
	create(osmkube.HTTPRouteGroups, "HTTPRouteGroup", "bookstore-service-routes", map[string]any{"matches": []any{
		map[string]any{"name": "books-bought", "pathRegex": "/books-bought", "methods": []any{"GET"}},
		map[string]any{"name": "buy-a-book", "pathRegex": ".*a-book.*new", "methods": []any{"GET"}},
	}})
	create(osmkube.TrafficTargets, "TrafficTarget", "bookbuyer-access-bookstore", map[string]any{
		"destination": map[string]any{"kind": "ServiceAccount", "name": "bookstore", "namespace": "store"},
		"sources":     []any{map[string]any{"kind": "ServiceAccount", "name": "bookbuyer", "namespace": "buyer"}},
		"rules":       []any{map[string]any{"kind": "HTTPRouteGroup", "name": "bookstore-service-routes", "matches": []any{"buy-a-book", "books-bought"}}},
	})

	check := func(args ...string) (string, error) {
		return osm(t, append([]string{"-n", cpNS, "policy", "check", "--mesh-name", mesh, "--mesh-config", mcName}, args...)...)
	}
	decide := func(args ...string) policy.Decision {
		t.Helper()
		out, err := check(append(args, "-o", "json")...)
		if err != nil && !errors.Is(err, errDenied) {
			t.Fatalf("osm policy check %s: %v", strings.Join(args, " "), err)
		}
		var d policy.Decision
		if jerr := json.Unmarshal([]byte(out), &d); jerr != nil {
			t.Fatalf("-o json: %v\n%s", jerr, out)
		}
		if (err == nil) != d.Allowed {
			t.Fatalf("osm policy check %s: error %v with allowed %v; want an error exactly when denied", strings.Join(args, " "), err, d.Allowed)
		}
		return d
	}

	// bookbuyer: allowed, naming the TrafficTarget and the match; the
	// named target port resolved from the pod.
	out, err := check("--from", "buyer/bookbuyer", "--to", "store/bookstore:14001", "--path", "/books-bought", "--method", "GET")
	if err != nil {
		t.Fatalf("bookbuyer: %v\n%s", err, out)
	}
	golden(t, "policy-check-allowed.txt", out)
	d := decide("--from", "buyer/bookbuyer", "--to", "store/bookstore:http", "--path", "/buy-a-book/new", "--method", "get")
	if l := d.Legs[0]; !d.Allowed || l.TrafficTarget != "store/bookbuyer-access-bookstore" || l.Route != "HTTPRouteGroup store/bookstore-service-routes match buy-a-book" || l.TargetPort != 14011 {
		t.Errorf("bookbuyer buy-a-book: %+v", d)
	}

	// bookthief: denied, no TrafficTarget lists it; exit code non-zero.
	out, err = check("--from", "thief/bookthief", "--to", "store/bookstore", "--path", "/books-bought", "--method", "GET")
	if !errors.Is(err, errDenied) {
		t.Fatalf("bookthief: %v, want denied\n%s", err, out)
	}
	golden(t, "policy-check-denied.txt", out)

	// A path the route does not match.
	out, err = check("--from", "buyer/bookbuyer", "--to", "store/bookstore", "--path", "/admin", "--method", "GET")
	if !errors.Is(err, errDenied) {
		t.Fatalf("bookbuyer /admin: %v, want denied\n%s", err, out)
	}
	golden(t, "policy-check-path.txt", out)
	if d := decide("--from", "buyer/bookbuyer", "--to", "store/bookstore", "--path", "/books-bought", "--method", "POST"); d.Reason != policy.CheckRouteNotMatched {
		t.Errorf("POST /books-bought: %s (%s), want %s", d.Reason, d.Message, policy.CheckRouteNotMatched)
	}

	// A TrafficTarget for bookthief naming a route that does not exist:
	// rejected, with its field path, in the compiler's words.
	create(osmkube.TrafficTargets, "TrafficTarget", "bookthief-access-bookstore", map[string]any{
		"destination": map[string]any{"kind": "ServiceAccount", "name": "bookstore", "namespace": "store"},
		"sources":     []any{map[string]any{"kind": "ServiceAccount", "name": "bookthief", "namespace": "thief"}},
		"rules":       []any{map[string]any{"kind": "HTTPRouteGroup", "name": "bookstore-routes"}},
	})
	out, err = check("--from", "thief/bookthief", "--to", "store/bookstore", "--path", "/books-bought")
	if !errors.Is(err, errDenied) {
		t.Fatalf("bookthief with a rejected TrafficTarget: %v, want denied\n%s", err, out)
	}
	golden(t, "policy-check-rejected.txt", out)
	d = decide("--from", "thief/bookthief", "--to", "store/bookstore")
	if d.Reason != policy.CheckTargetRejected || len(d.Rejected) != 1 || d.Rejected[0].FieldPath != "spec.rules[0].name" || d.Rejected[0].Reason != policy.ReasonRouteNotFound {
		t.Errorf("rejected TrafficTarget: %+v", d)
	}

	// The Service, its namespace, the source's namespace.
	for _, c := range []struct{ from, to, reason string }{
		{"buyer/bookbuyer", "store/bookshop", policy.CheckServiceNotFound},
		{"buyer/bookbuyer", "warehouse/bookwarehouse", policy.CheckNotMeshed},
		{"warehouse/bookwarehouse", "store/bookstore", policy.CheckNotMeshed},
		{"buyer/bookbuyer", "store/bookstore:80", policy.CheckPortNotFound},
	} {
		if d := decide("--from", c.from, "--to", c.to); d.Allowed || d.Reason != c.reason {
			t.Errorf("%s → %s: %v %s (%s), want denied %s", c.from, c.to, d.Allowed, d.Reason, d.Message, c.reason)
		}
	}

	// Permissive mode allows bookthief, naming the MeshConfig.
	if _, err := dyn.Resource(osmkube.MeshConfigs).Namespace(cpNS).Patch(ctx, mcName, types.MergePatchType,
		[]byte(`{"spec":{"traffic":{"enablePermissiveTrafficPolicyMode":true}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if d := decide("--from", "thief/bookthief", "--to", "store/bookstore", "--path", "/admin"); !d.Allowed || d.Reason != policy.CheckPermissive ||
		!strings.Contains(d.Message, "MeshConfig "+cpNS+"/"+mcName) {
		t.Errorf("permissive: %+v", d)
	}

	// Without a release in the namespace, the chart's default names, through
	// the context file's namespace as against the dev stack.
	ctxFile := filepath.Join(t.TempDir(), "osm-context.json")
	if err := osmctx.Write(ctxFile, &osmctx.File{Kubeconfig: cluster.KubeconfigPath(), Namespace: cpNS, CARootsFile: "roots.pem", CertAuthority: osmctx.Endpoint{Addr: "127.0.0.1:1", ServerName: "ca"}, Edges: []osmctx.Endpoint{{Name: "e", Addr: "127.0.0.1:1", ServerName: "e"}}}); err != nil {
		t.Fatal(err)
	}
	_, err = osm(t, "--osm-context", ctxFile, "policy", "check", "--from", "buyer/bookbuyer", "--to", "store/bookstore")
	if err == nil || !strings.Contains(err.Error(), "MeshConfig "+cpNS+"/"+defaultMeshConfigName+" not found") {
		t.Errorf("osm policy check without a release: %v, want the default MeshConfig %s/%s not found", err, cpNS, defaultMeshConfigName)
	}

	// Flag errors name the flag; a missing MeshConfig says what to set.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--from", "buyer", "--to", "store/bookstore"}, `--from "buyer": want NAMESPACE/SERVICEACCOUNT`},
		{[]string{"--from", "buyer/bookbuyer", "--to", "store/bookstore:"}, `--to "store/bookstore:": want NAMESPACE/SERVICE[:PORT]`},
		{[]string{"--from", "buyer/bookbuyer", "--to", "store/bookstore", "--path", "books"}, `--path "books": want an absolute path`},
		{[]string{"--from", "buyer/bookbuyer", "--to", "store/bookstore", "--mesh-config", "nope"}, "MeshConfig " + cpNS + "/nope not found"},
		{[]string{"--to", "store/bookstore"}, `required flag(s) "from" not set`},
	} {
		_, err := check(c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("osm policy check %s: %v, want %q", strings.Join(c.args, " "), err, c.want)
		}
	}
}
