package webhookconfig

import (
	"os"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/openservicemesh/osm/tests/kube"
)

var cluster *kube.Cluster

func TestMain(m *testing.M) { os.Exit(kube.Main(m, &cluster, false)) }

func TestEnsureAgainstTheAPIServer(t *testing.T) {
	ctx := t.Context()
	cs := cluster.Clientset()
	o := Options{Name: "osm-sidecar-injector", MeshName: "osm", ControlPlaneNamespace: "osm-system",
		ServiceNamespace: "osm-system", ServiceName: "osm-injector", ServicePort: 443, CABundle: []byte("ca-1")}
	want, err := Desired(o)
	if err != nil {
		t.Fatal(err)
	}
	if wrote, err := Ensure(ctx, cs, want); err != nil || !wrote {
		t.Fatalf("create: wrote=%v err=%v", wrote, err)
	}
	got, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, o.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wh := got.Webhooks[0]
	if *wh.FailurePolicy != admissionregistrationv1.Fail || *wh.SideEffects != admissionregistrationv1.SideEffectClassNoneOnDryRun ||
		*wh.TimeoutSeconds > 10 || string(wh.ClientConfig.CABundle) != "ca-1" {
		t.Fatalf("stored webhook: %+v", wh)
	}
	sel, err := metav1.LabelSelectorAsSelector(wh.NamespaceSelector)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		labels map[string]string
		want   bool
	}{
		{map[string]string{"openservicemesh.io/monitored-by": "osm", "kubernetes.io/metadata.name": "bookstore"}, true},
		{map[string]string{"openservicemesh.io/monitored-by": "osm", "kubernetes.io/metadata.name": "kube-system"}, false},
		{map[string]string{"openservicemesh.io/monitored-by": "osm", "kubernetes.io/metadata.name": "osm-system"}, false},
		{map[string]string{"openservicemesh.io/monitored-by": "other", "kubernetes.io/metadata.name": "bookstore"}, false},
		{map[string]string{"kubernetes.io/metadata.name": "default"}, false},
	} {
		if got := sel.Matches(labels.Set(c.labels)); got != c.want {
			t.Errorf("selector on %v = %v, want %v", c.labels, got, c.want)
		}
	}

	// Unchanged: no write. A new caBundle: one update.
	if wrote, err := Ensure(ctx, cs, want); err != nil || wrote {
		t.Fatalf("unchanged: wrote=%v err=%v", wrote, err)
	}
	o.CABundle = []byte("ca-2")
	next, _ := Desired(o)
	if wrote, err := Ensure(ctx, cs, next); err != nil || !wrote {
		t.Fatalf("new caBundle: wrote=%v err=%v", wrote, err)
	}
	got, _ = cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, o.Name, metav1.GetOptions{})
	if string(got.Webhooks[0].ClientConfig.CABundle) != "ca-2" {
		t.Fatalf("caBundle not updated: %q", got.Webhooks[0].ClientConfig.CABundle)
	}
}

func TestDesiredRefusesIncompleteOptions(t *testing.T) {
	if _, err := Desired(Options{Name: "x", MeshName: "osm", ControlPlaneNamespace: "osm-system"}); err == nil {
		t.Fatal("accepted an empty caBundle")
	}
	if _, err := Desired(Options{MeshName: "osm", ControlPlaneNamespace: "osm-system", CABundle: []byte("x")}); err == nil {
		t.Fatal("accepted an empty name")
	}
}
