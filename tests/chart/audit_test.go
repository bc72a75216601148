package chart

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"

	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"sigs.k8s.io/yaml"

	osmkube "github.com/openservicemesh/osm/tests/kube"
	"github.com/openservicemesh/osm/tests/stack"
)

// grant is one verb on one resource (and one name, when the rule names
// them) that the chart's RBAC gives a ServiceAccount: a rule of a Role or
// ClusterRole expanded to single values.
type grant struct {
	sa, verb, group, resource, name string
	// ns is the Role's namespace; "" for a ClusterRole bound cluster-wide.
	ns string
	// role names the Role or ClusterRole, for the failure message.
	role string
}

func (g grant) String() string {
	s := fmt.Sprintf("%s: %s %s", g.sa, g.verb, groupResource(g.group, g.resource))
	if g.name != "" {
		s += " " + g.name
	}
	if g.ns != "" {
		s += " in " + g.ns
	}
	return s + " (" + g.role + ")"
}

func groupResource(group, resource string) string {
	if group == "" {
		return resource
	}
	return resource + "." + group
}

// chartGrants reads the Roles, ClusterRoles and their bindings of a
// release manifest and returns what each ServiceAccount of the release
// namespace is granted.
func chartGrants(t *testing.T, manifest string) []grant {
	t.Helper()
	roles := map[string][]rbacv1.PolicyRule{} // kind/namespace/name
	var bindings []struct {
		ns      string
		ref     rbacv1.RoleRef
		subject []rbacv1.Subject
	}
	for _, o := range objects(t, manifest) {
		switch o.Body["kind"] {
		case "Role", "ClusterRole":
			var r rbacv1.Role
			if err := yaml.Unmarshal([]byte(o.YAML), &r); err != nil {
				t.Fatalf("%s: %v", o.Key, err)
			}
			roles[fmt.Sprintf("%s/%s/%s", o.Body["kind"], r.Namespace, r.Name)] = r.Rules
		case "RoleBinding", "ClusterRoleBinding":
			var b rbacv1.RoleBinding
			if err := yaml.Unmarshal([]byte(o.YAML), &b); err != nil {
				t.Fatalf("%s: %v", o.Key, err)
			}
			bindings = append(bindings, struct {
				ns      string
				ref     rbacv1.RoleRef
				subject []rbacv1.Subject
			}{b.Namespace, b.RoleRef, b.Subjects})
		}
	}
	var out []grant
	for _, b := range bindings {
		roleNS := b.ns
		if b.ref.Kind == "ClusterRole" {
			roleNS = ""
		}
		key := fmt.Sprintf("%s/%s/%s", b.ref.Kind, roleNS, b.ref.Name)
		rules, ok := roles[key]
		if !ok {
			t.Fatalf("binding in %q refers to %s, which the release does not render", b.ns, key)
		}
		for _, s := range b.subject {
			if s.Kind != "ServiceAccount" || s.Namespace != namespace {
				t.Fatalf("binding of %s names subject %s %s/%s outside the release's ServiceAccounts", key, s.Kind, s.Namespace, s.Name)
			}
			for _, r := range rules {
				names := r.ResourceNames
				if len(names) == 0 {
					names = []string{""}
				}
				for _, g := range r.APIGroups {
					for _, res := range r.Resources {
						for _, v := range r.Verbs {
							for _, n := range names {
								out = append(out, grant{sa: s.Name, verb: v, group: g, resource: res, name: n,
									ns: b.ns, role: b.ref.Kind + " " + b.ref.Name})
							}
						}
					}
				}
			}
		}
	}
	return out
}

// use is one kind of request a chart identity made, from the audit log.
type use struct {
	sa, verb, group, resource, ns, name string
	// resource includes the subresource as resource/subresource; a
	// non-resource request has its path in name and no resource.
}

// usage is what the audit log says the release namespace's ServiceAccounts
// did: how many requests of each kind, with which response codes.
type usage struct {
	count map[use]int
	codes map[use][]int32
	// refused are the requests answered 403, with the apiserver's message.
	refused []string
}

// auditUsage reads the audit events from offset on and keeps those of the
// release namespace's ServiceAccounts, one per request (the audit ID).
func auditUsage(t *testing.T, offset int64) usage {
	t.Helper()
	evs, err := cluster.AuditEvents(offset)
	if err != nil {
		t.Fatal(err)
	}
	prefix := "system:serviceaccount:" + namespace + ":"
	u := usage{count: map[use]int{}, codes: map[use][]int32{}}
	seen := map[string]bool{}
	for _, e := range evs {
		sa, ok := strings.CutPrefix(e.User.Username, prefix)
		if !ok || seen[e.AuditID] || (e.Stage != "ResponseComplete" && e.Stage != "ResponseStarted" && e.Stage != "Panic") {
			continue
		}
		seen[e.AuditID] = true
		k := use{sa: sa, verb: e.Verb}
		if r := e.ObjectRef; r != nil {
			k.group, k.resource, k.ns, k.name = r.APIGroup, r.Resource, r.Namespace, r.Name
			if r.Subresource != "" {
				k.resource += "/" + r.Subresource
			}
		} else {
			k.name = strings.SplitN(e.RequestURI, "?", 2)[0]
		}
		u.count[k]++
		if e.ResponseStatus != nil {
			if !slices.Contains(u.codes[k], e.ResponseStatus.Code) {
				u.codes[k] = append(u.codes[k], e.ResponseStatus.Code)
			}
			if e.ResponseStatus.Code == 403 {
				u.refused = append(u.refused, fmt.Sprintf("%s %s %s: %s", sa, e.Verb, e.RequestURI, e.ResponseStatus.Message))
			}
		}
	}
	return u
}

// uses reports whether request k is one grant g allows.
func (g grant) uses(k use) bool {
	return k.sa == g.sa && k.verb == g.verb && k.group == g.group && k.resource == g.resource &&
		(g.name == "" || k.name == g.name) && (g.ns == "" || k.ns == g.ns)
}

// table is the usage as text, one kind of request a line, each with the
// grants of the chart that allow it ("-" for none: a request the
// apiserver's default roles allow, such as discovery).
func (u usage) table(grants []grant) string {
	keys := make([]use, 0, len(u.count))
	for k := range u.count {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		return strings.Join([]string{a.sa, a.group, a.resource, a.verb, a.ns, a.name}, "\x00") <
			strings.Join([]string{b.sa, b.group, b.resource, b.verb, b.ns, b.name}, "\x00")
	})
	var sb strings.Builder
	fmt.Fprintf(&sb, "%-22s %-7s %-50s %-14s %-36s %6s %-9s %s\n", "serviceaccount", "verb", "resource", "namespace", "name", "count", "codes", "chart rule")
	for _, k := range keys {
		var by []string
		for _, g := range grants {
			if g.uses(k) {
				by = append(by, g.role)
			}
		}
		rule := "-"
		if len(by) > 0 {
			rule = strings.Join(slices.Compact(by), ", ")
		}
		res := groupResource(k.group, k.resource)
		if k.resource == "" {
			res = "(non-resource)"
		}
		codes := fmt.Sprint(u.codes[k])
		fmt.Fprintf(&sb, "%-22s %-7s %-50s %-14s %-36s %6d %-9s %s\n", k.sa, k.verb, res, k.ns, k.name, u.count[k], codes, rule)
	}
	return sb.String()
}

// checkLeastPrivilege fails the test for each request of a chart identity
// the apiserver refused and each grant of the chart (in manifest, the
// installed release's) no request used, after logging the table of
// requests. A test that failed already may have stopped before it used
// every grant: only the refusals are checked then.
func checkLeastPrivilege(t *testing.T, manifest string, offset int64) {
	t.Helper()
	var grants []grant
	if manifest != "" {
		grants = chartGrants(t, manifest)
	}
	u := auditUsage(t, offset)
	t.Logf("requests of the chart's ServiceAccounts (system:serviceaccount:%s:*), from the apiserver's audit log:\n%s", namespace, u.table(grants))
	for _, r := range u.refused {
		t.Errorf("a chart identity was refused (403): %s", r)
	}
	if t.Failed() {
		t.Log("the test failed: whether every rule of the chart's RBAC was used is not checked")
		return
	}
	for _, g := range grants {
		used := false
		for k := range u.count {
			if g.uses(k) && slices.ContainsFunc(u.codes[k], func(c int32) bool { return c != 403 }) {
				used = true
				break
			}
		}
		if !used {
			t.Errorf("the chart grants %s, and no request used it", g)
		}
	}
}

// Names of the injector's bootstrap Secrets (services/injector-webhook:
// webhook and libs/layout), which the test edits as an older injector or
// a lost pod would leave them.
const (
	labelProxyUUID       = "osm-proxy-uuid"
	labelManagedBy       = "app.kubernetes.io/managed-by"
	managedByInjector    = "osm-injector"
	annotationNotBefore  = "openservicemesh.io/bootstrap-cert-not-before"
	annotationNotAfter   = "openservicemesh.io/bootstrap-cert-not-after"
	bootstrapSecretStart = "envoy-bootstrap-"
)

// exerciseGrants makes the components use the rules of the chart's RBAC
// that the bookstore demo alone does not, each through the code path that
// needs it, and waits until each has acted:
//   - the smi-watcher records a policy rejection as an Event (events
//     create) and, when the restarted compiler reports it again, counts
//     the repeat on the same Event (events patch);
//   - the injector re-mirrors the certificate annotations an older
//     injector did not write (secrets get, update), sets the pod as owner
//     of a Secret that lacks it (secrets patch), and deletes a bootstrap
//     Secret with no owner and no pod after asking the apiserver for its
//     pods (pods list, secrets delete).
func exerciseGrants(t *testing.T, m *chartMesh) {
	t.Helper()
	ctx := t.Context()
	cs := cluster.Clientset()
	start := time.Now()

	// A TrafficTarget the compiler rejects: the HTTPRouteGroup it names
	// does not exist. (The injector's validating webhook admits it: at
	// admission a route may come later. One it refuses on its own, such as
	// a destination in another namespace, would never reach the compiler.)
	if _, err := cluster.Dynamic().Resource(osmkube.TrafficTargets).Namespace("bookstore").Create(ctx,
		&unstructured.Unstructured{Object: map[string]any{"apiVersion": "access.smi-spec.io/v1alpha3", "kind": "TrafficTarget",
			"metadata": map[string]any{"name": "missing-route"},
			"spec": map[string]any{
				"destination": map[string]any{"kind": "ServiceAccount", "name": "bookstore", "namespace": "bookstore"},
				"sources":     []any{map[string]any{"kind": "ServiceAccount", "name": "bookbuyer", "namespace": "bookbuyer"}},
				"rules": []any{map[string]any{"kind": "HTTPRouteGroup", "name": "no-such-routes",
					"matches": []any{"buy-a-book"}}}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Gone at the end: later tests of the package (osm verify's) share the
	// apiserver and would see it rejected.
	t.Cleanup(func() {
		_ = cluster.Dynamic().Resource(osmkube.TrafficTargets).Namespace("bookstore").Delete(context.Background(), "missing-route", metav1.DeleteOptions{})
	})
	eventCount := func() (int32, error) {
		evs, err := cs.CoreV1().Events("bookstore").List(ctx, metav1.ListOptions{
			FieldSelector: "involvedObject.kind=TrafficTarget,involvedObject.name=missing-route"})
		if err != nil {
			return 0, err
		}
		if len(evs.Items) != 1 {
			return 0, fmt.Errorf("%d Events for TrafficTarget bookstore/missing-route, want 1", len(evs.Items))
		}
		return evs.Items[0].Count, nil
	}
	if err := stack.Eventually(ctx, 30*time.Second, func() error { _, err := eventCount(); return err }); err != nil {
		t.Fatalf("the smi-watcher recorded no Event of the rejection: %v", err)
	}
	m.restart(stack.Compiler)
	if err := stack.Eventually(ctx, 30*time.Second, func() error {
		n, err := eventCount()
		if err == nil && n < 2 {
			err = fmt.Errorf("the Event of the rejection counts %d, want 2 once the restarted compiler reported it again", n)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}

	// The injector's bootstrap Secrets of the demo's pods.
	secretOf := func(ns, pod string) *corev1.Secret {
		t.Helper()
		p, err := cs.CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s, err := cs.CoreV1().Secrets(ns).Get(ctx, bootstrapSecretStart+p.Labels[labelProxyUUID], metav1.GetOptions{})
		if err != nil {
			t.Fatalf("the bootstrap Secret of pod %s/%s: %v", ns, pod, err)
		}
		return s
	}
	secrets := func(ns string) typedcorev1.SecretInterface { return cs.CoreV1().Secrets(ns) }
	store := secretOf("bookstore", "bookstore-1")
	delete(store.Annotations, annotationNotBefore)
	delete(store.Annotations, annotationNotAfter)
	if _, err := secrets("bookstore").Update(ctx, store, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	buyer := secretOf("bookbuyer", "bookbuyer-1")
	if len(buyer.OwnerReferences) == 0 {
		t.Fatalf("bootstrap Secret bookbuyer/%s has no owner", buyer.Name)
	}
	buyer.OwnerReferences = nil
	if _, err := secrets("bookbuyer").Update(ctx, buyer, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	orphan := bootstrapSecretStart + "00000000-0000-4000-8000-00000000dead"
	if _, err := secrets("bookstore").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: orphan,
		Labels: map[string]string{labelManagedBy: managedByInjector, labelProxyUUID: strings.TrimPrefix(orphan, bootstrapSecretStart)}}},
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := stack.Eventually(ctx, 30*time.Second, func() error {
		if s := secretOf("bookstore", "bookstore-1"); s.Annotations[annotationNotAfter] == "" {
			return fmt.Errorf("bootstrap Secret bookstore/%s: annotation %s not written back", s.Name, annotationNotAfter)
		}
		if s := secretOf("bookbuyer", "bookbuyer-1"); len(s.OwnerReferences) == 0 {
			return fmt.Errorf("bootstrap Secret bookbuyer/%s: no owner set back", s.Name)
		}
		if _, err := secrets("bookstore").Get(ctx, orphan, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("orphaned bootstrap Secret bookstore/%s not deleted (%v)", orphan, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("the rules the demo does not use exercised in %s", time.Since(start).Round(time.Millisecond))
}
