package command

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/openservicemesh/osm/libs/caclient"
	"github.com/openservicemesh/osm/libs/osmctx"
	"github.com/openservicemesh/osm/libs/osmpolicy"
	osmkube "github.com/openservicemesh/osm/tests/kube"
	"github.com/openservicemesh/osm/tests/stack"
)

// TestVerify runs osm verify against the mesh's services as processes
// (tests/stack, startTestMesh) on the harness cluster, through a context
// file as against the dev stack (NATS in-process, with its monitoring
// endpoint), with two
// edges: healthy, every check passes (golden table, the volatile
// figures masked); then each seeded fault is detected and named, and
// healed where the test can heal it: a stale webhook caBundle, a CRD
// missing, a rejected TrafficTarget, a rejected Retry, a selectorless
// Service without its service accounts, an edge behind the latest generation
// (cut off from NATS), the CA down.
func TestVerify(t *testing.T) {
	ctx := t.Context()
	cs := cluster.Clientset()
	start := time.Now()
	step := func(name string) { t.Logf("%s done at %s", name, time.Since(start).Round(time.Millisecond)) }
	tm := startTestMesh(t, testMeshOptions{name: "verifytest", smi: true})
	cpNS, appNS, m := tm.cpNS, tm.appNS, tm.Mesh
	crds, err := osmkube.CRDDir()
	if err != nil {
		t.Fatal(err)
	}
	mustCreate := func(_ any, err error) {
		t.Helper()
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	// A second edge, whose NATS connection goes through a proxy the test
	// can cut.
	natsURL, err := url.Parse(m.NATS().URL())
	if err != nil {
		t.Fatal(err)
	}
	cut := tcpProxy(t, natsURL.Host)
	debug1, err := stack.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.StartInstance(ctx, stack.Edge, "--nats-url", "nats://"+cut.addr, "--pod-name", "verifytest-edge-1", "--debug-addr", debug1); err != nil {
		t.Fatal(err)
	}
	tm.writeContext(t, osmctx.Endpoint{Name: "verifytest-edge-1", Addr: debug1})
	step("mesh ready")

	// The injector's webhook configuration, as the injector keeps it (no
	// injector runs here: it would heal the stale caBundle seeded below).
	// It selects no namespace.
	rootsPEM := caclient.RootsPEM(m.Bundle())
	hookName := "verifytest-sidecar-injector"
	mustCreate(cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: hookName},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    "osm-inject.k8s.io",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{Service: &admissionregistrationv1.ServiceReference{Namespace: cpNS, Name: "osm-injector", Path: ptrTo("/mutate")}, CABundle: rootsPEM},
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"verifytest-never": "true"}},
			FailurePolicy:           ptrTo(admissionregistrationv1.Ignore),
			SideEffects:             ptrTo(admissionregistrationv1.SideEffectClassNone),
			AdmissionReviewVersions: []string{"v1"},
			Rules: []admissionregistrationv1.RuleWithOperations{{Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}},
		}},
	}, metav1.CreateOptions{}))
	t.Cleanup(func() {
		_ = cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), hookName, metav1.DeleteOptions{})
	})

	verify := func(args ...string) (string, error) {
		return tm.osm(t, append([]string{"verify"}, args...)...)
	}
	// until runs verify until cond holds of its output, and returns it.
	until := func(what string, cond func(out string, err error) bool) string {
		t.Helper()
		deadline := time.Now().Add(45 * time.Second)
		for {
			out, err := verify()
			if cond(out, err) {
				return out
			}
			if time.Now().After(deadline) {
				t.Fatalf("verify: %s: not within 45 s; last (%v):\n%s", what, err, out)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}

	// Healthy: every check passes.
	out := until("all ✔", func(out string, err error) bool { return err == nil })
	golden(t, "verify.txt", maskVerify(out))
	var rep report
	js, err := verify("-o", "json")
	if err != nil || json.Unmarshal([]byte(js), &rep) != nil || rep.Failed != 0 || len(rep.Results) < 15 {
		t.Fatalf("verify -o json: %v, %+v\n%s", err, rep, js)
	}
	step("healthy")

	// Fault: a stale webhook caBundle (another root).
	hook, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, hookName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	hook.Webhooks[0].ClientConfig.CABundle = otherRootPEM(t)
	if _, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Update(ctx, hook, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	out, err = verify()
	wantFailure(t, "a stale caBundle", out, err, "✘ MutatingWebhookConfiguration "+hookName+" webhook osm-inject.k8s.io: caBundle is stale: lacks the bundle's ", "holds not-the-mesh-root ")
	hook, _ = cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, hookName, metav1.GetOptions{})
	hook.Webhooks[0].ClientConfig.CABundle = rootsPEM
	if _, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Update(ctx, hook, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	step("stale caBundle")

	// Fault: a CRD missing.
	const tcp = "tcproutes.specs.smi-spec.io"
	if err := cluster.Dynamic().Resource(crdGVR).Delete(ctx, tcp, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	out = until("the missing CRD named", func(out string, err error) bool {
		return err != nil && strings.Contains(out, "✘ CRD "+tcp+" is missing")
	})
	wantFailure(t, "a CRD missing", out, errFailed, "✘ CRD "+tcp+" is missing", "kubectl apply -f deploy/charts/osm/crds/")
	if err := cluster.ApplyCRDs(ctx, crds); err != nil {
		t.Fatal(err)
	}
	until("all ✔ with the CRD back", func(out string, err error) bool { return err == nil })
	step("CRD missing")

	// Fault: a TrafficTarget the compiler rejects (its route is missing).
	tt := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "access.smi-spec.io/v1alpha3", "kind": "TrafficTarget",
		"metadata": map[string]any{"name": "missing-route"},
		"spec": map[string]any{
			"destination": map[string]any{"kind": "ServiceAccount", "name": "bookstore", "namespace": appNS},
			"sources":     []any{map[string]any{"kind": "ServiceAccount", "name": "bookbuyer", "namespace": appNS}},
			"rules": []any{map[string]any{"kind": "HTTPRouteGroup", "name": "no-such-routes",
				"matches": []any{"buy-a-book"}}}}}}
	if _, err := cluster.Dynamic().Resource(osmkube.TrafficTargets).Namespace(appNS).Create(ctx, tt, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	out = until("the rejected TrafficTarget named", func(out string, err error) bool {
		return err != nil && strings.Contains(out, "✘ TrafficTarget "+appNS+"/missing-route is rejected: ")
	})
	wantFailure(t, "a rejected TrafficTarget", out, errFailed, "✘ policies rejected by the policy-compiler: 1", "no-such-routes", "kubectl describe traffictarget -n "+appNS+" missing-route")
	if err := cluster.Dynamic().Resource(osmkube.TrafficTargets).Namespace(appNS).Delete(ctx, "missing-route", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	until("all ✔ with the TrafficTarget deleted", func(out string, err error) bool { return err == nil })
	step("rejected TrafficTarget")

	// Fault: an OSM policy kind the compiler rejects (an unknown retry
	// condition), named by its served resource (retries, not "retrys").
	rt := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "policy.openservicemesh.io/v1alpha1", "kind": "Retry",
		"metadata": map[string]any{"name": "bad-retry"},
		"spec": map[string]any{
			"source":       map[string]any{"kind": "ServiceAccount", "name": "bookbuyer", "namespace": appNS},
			"destinations": []any{map[string]any{"kind": "Service", "name": "bookstore", "namespace": appNS}},
			"retryPolicy":  map[string]any{"retryOn": "not-a-condition", "numRetries": int64(1), "perTryTimeout": "1s", "retryBackoffBaseInterval": "25ms"}}}}
	if _, err := cluster.Dynamic().Resource(osmpolicy.RetryGVR).Namespace(appNS).Create(ctx, rt, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	out = until("the rejected Retry named", func(out string, err error) bool {
		return err != nil && strings.Contains(out, "✘ Retry "+appNS+"/bad-retry is rejected: ")
	})
	wantFailure(t, "a rejected Retry", out, errFailed, "✘ policies rejected by the policy-compiler: 1", "not-a-condition", "kubectl describe retry -n "+appNS+" bad-retry")
	if err := cluster.Dynamic().Resource(osmpolicy.RetryGVR).Namespace(appNS).Delete(ctx, "bad-retry", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	until("all ✔ with the Retry deleted", func(out string, err error) bool { return err == nil })
	step("rejected Retry")

	// Fault: a Service without a selector that does not declare its
	// service accounts (a core kind, judged too).
	mustCreate(cs.CoreV1().Services(appNS).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "legacy"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "pg", Port: 5432}}},
	}, metav1.CreateOptions{}))
	out = until("the refused Service named", func(out string, err error) bool {
		return err != nil && strings.Contains(out, "✘ Service "+appNS+"/legacy is rejected: ")
	})
	wantFailure(t, "a refused selectorless Service", out, errFailed, "✘ policies rejected by the policy-compiler: 1",
		"openservicemesh.io/service-accounts", "kubectl describe service -n "+appNS+" legacy")
	if err := cs.CoreV1().Services(appNS).Delete(ctx, "legacy", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	until("all ✔ with the Service deleted", func(out string, err error) bool { return err == nil })
	step("refused selectorless Service")

	// Fault: edge 1 cut off from NATS, then an edit (a new Service) makes
	// a generation it never gets.
	cut.close()
	mustCreate(cs.CoreV1().Services(appNS).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "bookstore"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "bookstore"}, Ports: []corev1.ServicePort{{
			Name: "http", Port: 14001, TargetPort: intstr.FromInt32(14001), AppProtocol: ptrTo("http")}}},
	}, metav1.CreateOptions{}))
	behind := regexp.MustCompile(`✘ edge verifytest-edge-1 serves generation \S+, behind the latest \S+ \((edge verifytest-edge-0|policy-compiler verifytest-compiler)\)`)
	out = until("edge 1 named behind", func(out string, err error) bool { return err != nil && behind.MatchString(out) })
	wantFailure(t, "an edge behind", out, errFailed, "✔ edge verifytest-edge-0 serves generation ", "kubectl logs -n "+cpNS+" verifytest-edge-1")
	step("edge behind")

	// Fault: the CA down. The edges cannot be reached without the operator
	// certificate, and verify says so.
	if err := m.Stop(stack.CertAuthority); err != nil {
		t.Fatal(err)
	}
	out, err = verify()
	wantFailure(t, "the CA down", out, err, "✘ the cert-authority does not issue the operator certificate: ", "✘ the edges: not checked, their debug API needs the operator certificate",
		"✘ the webhooks' caBundle: not checked")
	step("CA down")
}

// errFailed stands for a verify error already checked by until.
var errFailed = &verifyFailed{}

type verifyFailed struct{}

func (*verifyFailed) Error() string { return "verify: checks failed" }

// wantFailure checks that verify failed and that its output says each of
// wants.
func wantFailure(t *testing.T, fault, out string, err error, wants ...string) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), "checks failed") {
		t.Errorf("verify with %s: %v; want checks failed\n%s", fault, err, out)
	}
	for _, w := range wants {
		if !strings.Contains(out, w) {
			t.Errorf("verify with %s does not say %q:\n%s", fault, w, out)
		}
	}
}

// maskVerify masks what changes between runs: dates, durations,
// generations, fingerprints.
func maskVerify(s string) string {
	for _, r := range []struct{ re, with string }{
		{`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ`, "DATE"},
		{`in \d+(d|h0m0s)`, "in N"},
		{`generation \S+, the latest`, "generation G, the latest"},
		{`NATS server \S+ answers`, "NATS server NAME answers"},
		{`root [^\n]*? \(signing\)`, "root ROOT (signing)"},
	} {
		s = regexp.MustCompile(r.re).ReplaceAllString(s, r.with)
	}
	return s
}

// otherRootPEM is a self-signed root that is not the mesh's.
func otherRootPEM(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "not-the-mesh-root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// proxy is a TCP proxy to a backend that close cuts: it stops accepting
// and closes every connection.
type proxy struct {
	addr  string
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	done  bool
}

func tcpProxy(t *testing.T, backend string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{addr: ln.Addr().String(), ln: ln}
	t.Cleanup(p.close)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", backend)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			if p.done {
				p.mu.Unlock()
				c.Close()
				b.Close()
				return
			}
			p.conns = append(p.conns, c, b)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(b, c); b.Close() }()
			go func() { _, _ = io.Copy(c, b); c.Close() }()
		}
	}()
	return p
}

func (p *proxy) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return
	}
	p.done = true
	p.ln.Close()
	for _, c := range p.conns {
		c.Close()
	}
}

// testVerifyInstalled runs osm verify on the chart as osm install created
// it in testNamespace. No pod runs on the harness (no kubelet), so the
// test stands in for the controllers and marks every workload rolled out:
// then the control plane and the CRDs pass, a version skew is named, and
// each check that must reach a process fails naming the pods it lacks.
func testVerifyInstalled(t *testing.T) {
	ctx := t.Context()
	markRolledOut(t, testNamespace)
	var rep report
	out, err := osm(t, "verify", "-n", testNamespace, "-o", "json")
	if jerr := json.Unmarshal([]byte(out), &rep); jerr != nil || err == nil {
		t.Fatalf("verify -o json with no pod running: %v, %v; want failures\n%s", err, jerr, out)
	}
	workloads := 0
	seen := map[string]bool{}
	for _, r := range rep.Results {
		seen[r.Category] = true
		switch r.Category {
		case catComponents, catVerifyCRDs:
			if !r.OK {
				t.Errorf("verify: %s: %q fails (%s); want it to pass once rolled out", r.Category, r.Check, r.Hint)
			}
			if strings.Contains(r.Check, ": 1/1 ready") || strings.Contains(r.Check, " ready, ") {
				workloads++
			}
		}
	}
	if workloads < 6 {
		t.Errorf("verify lists %d workloads of the release; want every Deployment and the NATS StatefulSet:\n%s", workloads, out)
	}
	for _, c := range []string{catComponents, catVerifyCRDs, catNATS, catTrust, catWebhooks, catEdges, catPolicies} {
		if !seen[c] {
			t.Errorf("verify has no %s check:\n%s", c, out)
		}
	}
	out, _ = osm(t, "verify", "-n", testNamespace)
	for _, want := range []string{
		"✔ no version skew: every component runs 0.1.0",
		"✘ NATS: no ready pod osm-nats in namespace " + testNamespace,
		"✘ the cert-authority does not issue the operator certificate: no ready pod behind Service " + testNamespace + "/osm-cert-authority",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("verify on the installed chart does not say %q:\n%s", want, out)
		}
	}

	// A half-done upgrade: the edge at another version.
	patch := []byte(`{"spec":{"template":{"metadata":{"labels":{"app.kubernetes.io/version":"0.0.9"}}}}}`)
	if _, err := cluster.Clientset().AppsV1().Deployments(testNamespace).Patch(ctx, "osm-xds-edge", "application/merge-patch+json", patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	markRolledOut(t, testNamespace)
	out, _ = osm(t, "verify", "-n", testNamespace)
	if !regexp.MustCompile(`✘ version skew: the components run 0\.0\.9 \(osm-xds-edge\), 0\.1\.0 \([a-z-, ]+\)`).MatchString(out) ||
		!strings.Contains(out, "✔ Deployment osm-xds-edge: ") || !strings.Contains(out, "version 0.0.9") {
		t.Errorf("verify does not name the skew:\n%s", out)
	}
}

// markRolledOut sets every Deployment's and StatefulSet's status of the
// release in ns to rolled out and ready, as the controllers would with a
// kubelet.
func markRolledOut(t *testing.T, ns string) {
	t.Helper()
	ctx := t.Context()
	cs := cluster.Clientset()
	sel := metav1.ListOptions{LabelSelector: labelInstance + "=" + ReleaseName}
	deps, err := cs.AppsV1().Deployments(ns).List(ctx, sel)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range deps.Items {
		n := *d.Spec.Replicas
		d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: n, ReadyReplicas: n, UpdatedReplicas: n, AvailableReplicas: n}
		if _, err := cs.AppsV1().Deployments(ns).UpdateStatus(ctx, &d, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	sets, err := cs.AppsV1().StatefulSets(ns).List(ctx, sel)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sets.Items {
		n := *s.Spec.Replicas
		s.Status = appsv1.StatefulSetStatus{ObservedGeneration: s.Generation, Replicas: n, ReadyReplicas: n, UpdatedReplicas: n, CurrentReplicas: n, AvailableReplicas: n}
		if _, err := cs.AppsV1().StatefulSets(ns).UpdateStatus(ctx, &s, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}
