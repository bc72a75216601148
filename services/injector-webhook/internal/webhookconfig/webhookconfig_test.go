package webhookconfig

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"sync/atomic"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/openservicemesh/osm/libs/app/apptest"
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

func TestKeeperWritesOnceTheBundleArrivesAndRestoresEdits(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cs := cluster.Clientset()
	api := cs.AdmissionregistrationV1().MutatingWebhookConfigurations()
	var bundle atomic.Pointer[[]byte]
	changed := make(chan struct{}, 1)
	k := NewKeeper(KeeperOptions{Client: cs,
		Config: Options{Name: "osm-keeper-test", MeshName: "osm", ControlPlaneNamespace: "osm-system",
			ServiceNamespace: "osm-system", ServiceName: "osm-injector", ServicePort: 443},
		CABundle: func() ([]byte, error) {
			if b := bundle.Load(); b != nil {
				return *b, nil
			}
			return nil, errors.New("no trust bundle yet")
		},
		Changed: changed, Interval: 100 * time.Millisecond})
	done := make(chan error, 1)
	go func() { done <- k.Start(ctx) }()

	// No caBundle: nothing written, not ready.
	time.Sleep(300 * time.Millisecond)
	if err := k.Check(ctx); err == nil {
		t.Fatal("ready without a caBundle")
	}
	if _, err := api.Get(ctx, "osm-keeper-test", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("written without a caBundle: %v", err)
	}

	// The bundle arrives: written, ready.
	ca := []byte("ca-1")
	bundle.Store(&ca)
	changed <- struct{}{}
	caBundleIs(t, "ca-1")
	if err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 10*time.Second, true,
		func(context.Context) (bool, error) { return k.Check(ctx) == nil, nil }); err != nil {
		t.Fatal("not ready after the configuration was written")
	}

	// Someone edits the caBundle: restored within the interval.
	cur, err := api.Get(ctx, "osm-keeper-test", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.Webhooks[0].ClientConfig.CABundle = []byte("edited")
	if _, err := api.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	caBundleIs(t, "ca-1")

	cancel()
	apptest.Stopped(t, done, nil)
}

// caBundleIs waits until osm-keeper-test carries want as its caBundle.
func caBundleIs(t *testing.T, want string) {
	t.Helper()
	api := cluster.Clientset().AdmissionregistrationV1().MutatingWebhookConfigurations()
	var got string
	err := wait.PollUntilContextTimeout(t.Context(), 20*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		cur, err := api.Get(ctx, "osm-keeper-test", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		got = string(cur.Webhooks[0].ClientConfig.CABundle)
		return got == want, nil
	})
	if err != nil {
		t.Fatalf("caBundle %q, want %q", got, want)
	}
}

// TestEnsureLeavesAnInstallersLabelsAlone: the chart creates the
// configuration with server-side apply (field manager "helm", label
// managed-by=Helm); the injector then rotates its caBundle; Helm's next
// apply, carrying the current caBundle as the chart's lookup does, succeeds
// without a conflict and the labels stay Helm's. Before, Ensure replaced the
// labels with managed-by=osm-injector, and every helm upgrade after the
// injector's first write failed with a field-manager conflict.
func TestEnsureLeavesAnInstallersLabelsAlone(t *testing.T) {
	ctx := t.Context()
	cs := cluster.Clientset()
	o := Options{Name: "osm-sidecar-injector-helm", MeshName: "osm", ControlPlaneNamespace: "osm-system",
		ServiceNamespace: "osm-system", ServiceName: "osm-injector", ServicePort: 443, CABundle: []byte("ca-1")}
	helmLabels := map[string]string{"app.kubernetes.io/managed-by": "Helm", "app.kubernetes.io/name": "osm"}
	apply := func(bundle string) error {
		o.CABundle = []byte(bundle)
		d, err := Desired(o)
		if err != nil {
			return err
		}
		d.Labels = helmLabels
		d.TypeMeta = metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "MutatingWebhookConfiguration"}
		body, err := json.Marshal(d)
		if err != nil {
			return err
		}
		_, err = cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Patch(ctx, o.Name, types.ApplyPatchType, body,
			metav1.PatchOptions{FieldManager: "helm"})
		return err
	}
	if err := apply("ca-1"); err != nil {
		t.Fatalf("install: %v", err)
	}
	o.CABundle = []byte("ca-2")
	want, err := Desired(o)
	if err != nil {
		t.Fatal(err)
	}
	if wrote, err := Ensure(ctx, cs, want); err != nil || !wrote {
		t.Fatalf("the injector's rotation: wrote=%v err=%v", wrote, err)
	}
	if err := apply("ca-2"); err != nil {
		t.Fatalf("helm upgrade after the injector wrote: %v", err)
	}
	got, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, o.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Labels["app.kubernetes.io/managed-by"] != "Helm" || got.Labels["app.kubernetes.io/name"] != "osm" {
		t.Errorf("labels = %v, want Helm's kept", got.Labels)
	}
	if string(got.Webhooks[0].ClientConfig.CABundle) != "ca-2" {
		t.Errorf("caBundle = %q, want the injector's ca-2", got.Webhooks[0].ClientConfig.CABundle)
	}
}
