package command

import (
	"context"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"

	"github.com/openservicemesh/osm/libs/layout"
)

// testNamespace is the control plane's namespace in these tests.
const testNamespace = "osm-test"

// manifestObjects splits a dry run's output into its objects.
func manifestObjects(t *testing.T, manifest string) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	for _, doc := range strings.Split(manifest, "\n---") {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			t.Fatalf("decode a dry-run object: %v\n%s", err, doc)
		}
		if len(m) > 0 {
			out = append(out, &unstructured.Unstructured{Object: m})
		}
	}
	return out
}

// exists reports whether the live object of o exists, reading it through
// the discovery REST mapper.
func exists(ctx context.Context, t *testing.T, o *unstructured.Unstructured) bool {
	t.Helper()
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(cluster.Clientset().Discovery()))
	gvk := o.GroupVersionKind()
	m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		return false // its CRD is not installed
	}
	if err != nil {
		t.Fatalf("%s %s: %v", gvk.Kind, o.GetName(), err)
	}
	r := cluster.Dynamic().Resource(m.Resource)
	var err2 error
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		ns := o.GetNamespace()
		if ns == "" {
			ns = testNamespace
		}
		_, err2 = r.Namespace(ns).Get(ctx, o.GetName(), metav1.GetOptions{})
	} else {
		_, err2 = r.Get(ctx, o.GetName(), metav1.GetOptions{})
	}
	if apierrors.IsNotFound(err2) {
		return false
	}
	if err2 != nil {
		t.Fatalf("get %s %s: %v", gvk.Kind, o.GetName(), err2)
	}
	return true
}

// TestInstallNamespaceUninstall is the CLI's life on the harness cluster:
// a dry run creates nothing; a bad --set names the value; install creates
// every object of the chart, and --wait reports each component (on the
// harness no pod ever runs, so it times out naming them); namespace
// add/list/remove label and annotate namespaces as the injector's webhook
// selects them; uninstall leaves only the CRDs.
func TestInstallNamespaceUninstall(t *testing.T) {
	ctx := t.Context()
	cs := cluster.Clientset()
	start := time.Now()
	step := func(name string) { t.Logf("%s done at %s", name, time.Since(start).Round(time.Millisecond)) }
	defer step("all")

	// The dry run prints every object, CRDs included, and creates nothing.
	manifest := mustOSM(t, "install", "-n", testNamespace, "--dry-run")
	objs := manifestObjects(t, manifest)
	kinds := map[string]int{}
	for _, o := range objs {
		kinds[o.GetKind()]++
	}
	for _, k := range []string{"CustomResourceDefinition", "Deployment", "StatefulSet", "MutatingWebhookConfiguration", "ServiceAccount", "Service"} {
		if kinds[k] == 0 {
			t.Errorf("the dry run prints no %s (kinds: %v)", k, kinds)
		}
	}
	if _, err := cs.CoreV1().Namespaces().Get(ctx, testNamespace, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("after the dry run, namespace %s: %v; want not found", testNamespace, err)
	}
	for _, o := range objs {
		if exists(ctx, t, o) {
			t.Fatalf("the dry run created %s %s", o.GetKind(), o.GetName())
		}
	}

	step("dry run")
	// A bad value is named, and fails before anything is created.
	_, err := osm(t, "install", "-n", testNamespace, "--set", "xdsEdge.replicas=-1")
	if err == nil || !strings.Contains(err.Error(), "/xdsEdge/replicas") {
		t.Fatalf("install --set xdsEdge.replicas=-1: %v; want an error naming /xdsEdge/replicas", err)
	}
	_, err = osm(t, "install", "-n", testNamespace, "-f", "no-such-values.yaml")
	if err == nil || !strings.Contains(err.Error(), "no-such-values.yaml") {
		t.Fatalf("install -f no-such-values.yaml: %v; want an error naming the file", err)
	}
	if _, err := cs.CoreV1().Namespaces().Get(ctx, testNamespace, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("after the refused installs, namespace %s: %v; want not found", testNamespace, err)
	}

	step("bad values")
	// Install with --wait: the objects are created, and the progress names
	// each component; nothing runs on the harness, so it times out.
	out, err := osm(t, "install", "-n", testNamespace, "--timeout", "2s")
	if err == nil || !strings.Contains(err.Error(), "are not ready") {
		t.Fatalf("install --timeout 2s on a cluster without kubelet: %v; want the components not ready\n%s", err, out)
	}
	for _, o := range objs {
		if k := o.GetKind(); k == "Deployment" || k == "StatefulSet" {
			line := k + " " + o.GetName() + ": "
			if !strings.Contains(out, "… "+line) || !strings.Contains(out, "✘ "+line) {
				t.Errorf("the progress does not follow %s %s:\n%s", k, o.GetName(), out)
			}
			if !strings.Contains(err.Error(), k+" "+o.GetName()+" (") {
				t.Errorf("the timeout error does not name %s %s: %v", k, o.GetName(), err)
			}
		}
	}
	for _, o := range objs {
		if !exists(ctx, t, o) {
			t.Errorf("after install, %s %s does not exist", o.GetKind(), o.GetName())
		}
	}
	step("install --wait")
	if _, err := osm(t, "install", "-n", testNamespace, "--wait=false"); err == nil || !strings.Contains(err.Error(), "osm upgrade") {
		t.Fatalf("a second install: %v; want an error pointing at osm upgrade", err)
	}

	step("second install")
	// Upgrade without waiting says what to do next.
	out = mustOSM(t, "upgrade", "-n", testNamespace, "--reuse-values", "--wait=false", "--set", "policyCompiler.replicas=3")
	if !strings.Contains(out, "revision 2") || !strings.Contains(out, "osm namespace add NAMESPACE --namespace "+testNamespace) {
		t.Fatalf("upgrade's output lacks the revision or the next steps:\n%s", out)
	}
	compiler, err := cs.AppsV1().Deployments(testNamespace).Get(ctx, "osm-policy-compiler", metav1.GetOptions{})
	if err != nil || compiler.Spec.Replicas == nil || *compiler.Spec.Replicas != 3 {
		t.Fatalf("after upgrade --set policyCompiler.replicas=3, the compiler Deployment: %v", err)
	}

	step("upgrade")
	t.Run("namespace", func(t *testing.T) { testNamespaces(t, objs) })

	step("namespaces")
	t.Run("verify", testVerifyInstalled)
	step("verify")
	t.Run("bug-report", testBugReportInstalled)
	// Uninstall: only the CRDs stay.
	out = mustOSM(t, "uninstall", "-n", testNamespace)
	if !strings.Contains(out, "kubectl delete crd ") || !strings.Contains(out, " traffictargets.access.smi-spec.io") ||
		!strings.Contains(out, "osm namespace remove NAMESPACE --mesh-name osm") {
		t.Errorf("uninstall does not say how to delete the CRDs and unmesh the namespaces:\n%s", out)
	}
	// as it says, the namespaces leave the mesh without the release
	mustOSM(t, "namespace", "remove", "bookbuyer", "--mesh-name", "osm", "-n", testNamespace)
	if rows, err := listNamespaces(ctx, cs, "osm"); err != nil || len(rows) != 1 || rows[0].Namespace != "legacy" {
		t.Errorf("after removing bookbuyer, mesh osm has %+v, %v; want legacy alone", rows, err)
	}
	for _, o := range objs {
		if got := exists(ctx, t, o); got != (o.GetKind() == "CustomResourceDefinition") {
			t.Errorf("after uninstall, %s %s exists: %v", o.GetKind(), o.GetName(), got)
		}
	}
}

// testNamespaces runs namespace add, list and remove against the installed
// mesh (mesh name osm, read from the release).
func testNamespaces(t *testing.T, objs []*unstructured.Unstructured) {
	ctx := t.Context()
	cs := cluster.Clientset()
	for _, ns := range []string{"bookstore", "bookbuyer", "legacy", "other-mesh", "plain"} {
		if _, err := cluster.CreateNamespace(ctx, ns, nil); err != nil {
			t.Fatal(err)
		}
	}
	// another mesh's namespace, ignored by it
	if err := patchNamespace(ctx, cs, "other-mesh", map[string]any{layout.LabelMonitoredBy: "blue", layout.LabelIgnore: "true"}, nil); err != nil {
		t.Fatal(err)
	}

	out := mustOSM(t, "namespace", "add", "bookstore", "bookbuyer", "-n", testNamespace)
	if !strings.Contains(out, "namespace bookbuyer is in mesh osm (sidecar injection enabled)") {
		t.Fatalf("namespace add says:\n%s", out)
	}
	mustOSM(t, "namespace", "add", "legacy", "--disable-sidecar-injection", "-n", testNamespace)
	for _, c := range []struct{ args, want string }{
		{"namespace add no-such-ns", "namespace no-such-ns does not exist"},
		{"namespace add other-mesh", "namespace other-mesh is in mesh blue"},
		{"namespace add " + testNamespace, "namespace " + testNamespace + ": the mesh's control plane"},
		{"namespace remove plain", "namespace plain is in no mesh"},
		{"namespace remove other-mesh", "set --mesh-name blue"},
		{"namespace add plain -n nowhere", "no mesh is installed in namespace nowhere"},
	} {
		args := strings.Fields(c.args)
		if !strings.Contains(c.args, " -n ") {
			args = append(args, "-n", testNamespace)
		}
		if _, err := osm(t, args...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("osm %s: %v; want an error saying %q", c.args, err, c.want)
		}
	}

	// The label and annotation are the injector's (libs/layout), and the
	// webhook the chart installed selects the added namespace.
	bookstore, err := cs.CoreV1().Namespaces().Get(ctx, "bookstore", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if bookstore.Labels[layout.LabelMonitoredBy] != "osm" || bookstore.Annotations[layout.AnnotationSidecarInjection] != "enabled" {
		t.Fatalf("bookstore after add: labels %v, annotations %v", bookstore.Labels, bookstore.Annotations)
	}
	var mwc *admissionregistrationv1.MutatingWebhookConfiguration
	for _, o := range objs {
		if o.GetKind() == "MutatingWebhookConfiguration" {
			mwc, err = cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, o.GetName(), metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	if mwc == nil {
		t.Fatal("the chart has no MutatingWebhookConfiguration")
	}
	sel, err := metav1.LabelSelectorAsSelector(mwc.Webhooks[0].NamespaceSelector)
	if err != nil {
		t.Fatal(err)
	}
	if !sel.Matches(labels.Set(bookstore.Labels)) {
		t.Fatalf("the injector's webhook (%s) does not select namespace bookstore (labels %v)", sel, bookstore.Labels)
	}

	// The apiserver sends a pod created in bookstore to the injector. No
	// injector runs here (no kubelet) and the webhook fails closed, so the
	// create fails naming it; in a namespace not added, it succeeds.
	pod := func(ns string) error {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "app"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
		_, err := cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err
	}
	if err := pod("bookstore"); err == nil || !strings.Contains(err.Error(), mwc.Webhooks[0].Name) {
		t.Fatalf("a pod in bookstore: %v; want it sent to the webhook %s", err, mwc.Webhooks[0].Name)
	}
	if err := pod("plain"); err != nil {
		t.Fatalf("a pod in the namespace not added: %v", err)
	}

	golden(t, "namespace-list.txt", mustOSM(t, "namespace", "list", "-n", testNamespace))
	var rows []namespaceRow
	if err := yaml.Unmarshal([]byte(mustOSM(t, "namespace", "list", "--mesh-name", "osm", "-o", "json")), &rows); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 3 || rows[2] != (namespaceRow{"legacy", "osm", "disabled"}) {
		t.Fatalf("namespace list --mesh-name osm -o json: %+v", rows)
	}
	if y := mustOSM(t, "namespace", "list", "-o", "yaml"); !strings.Contains(y, "- mesh: blue\n  namespace: other-mesh\n  sidecarInjection: ignored\n") {
		t.Fatalf("namespace list -o yaml:\n%s", y)
	}

	mustOSM(t, "namespace", "remove", "bookstore", "-n", testNamespace)
	bookstore, err = cs.CoreV1().Namespaces().Get(ctx, "bookstore", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := bookstore.Labels[layout.LabelMonitoredBy]; ok || bookstore.Annotations[layout.AnnotationSidecarInjection] != "" {
		t.Fatalf("bookstore after remove: labels %v, annotations %v", bookstore.Labels, bookstore.Annotations)
	}
	if err := pod("bookstore"); err != nil {
		t.Fatalf("a pod in bookstore after remove: %v", err)
	}
}
