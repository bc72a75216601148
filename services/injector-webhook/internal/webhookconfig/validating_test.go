package webhookconfig

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/openservicemesh/osm/libs/app/apptest"
	"github.com/openservicemesh/osm/services/injector-webhook/internal/validate"
)

func TestDesiredValidating(t *testing.T) {
	o := ValidatingOptions{Name: "osm-policy-validator", MeshName: "osm", ControlPlaneNamespace: "osm-system",
		ServiceNamespace: "osm-system", ServiceName: "osm-injector", ServicePort: 443, CABundle: []byte("ca")}
	d, err := DesiredValidating(o)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Webhooks) != 2 || d.Webhooks[0].Name != PolicyWebhookName || d.Webhooks[1].Name != MeshConfigWebhookName {
		t.Fatalf("webhooks %+v", d.Webhooks)
	}
	// One rule per kind: the four SMI kinds and Retry and Egress in the mesh's namespaces,
	// MeshConfig in the control plane's; every kind of validate.Kinds.
	var resources []string
	for _, h := range d.Webhooks {
		if *h.FailurePolicy != admissionregistrationv1.Ignore || *h.TimeoutSeconds != 5 || *h.ClientConfig.Service.Path != "/validate-policy" {
			t.Errorf("webhook %s: %s %d %s", h.Name, *h.FailurePolicy, *h.TimeoutSeconds, *h.ClientConfig.Service.Path)
		}
		for _, r := range h.Rules {
			resources = append(resources, r.Resources...)
		}
	}
	if len(resources) != len(validate.Kinds()) || len(d.Webhooks[0].Rules) != len(validate.Kinds())-1 || d.Webhooks[1].Rules[0].Resources[0] != "meshconfigs" {
		t.Fatalf("rules for %v", resources)
	}
	o.FailurePolicy = "Sometimes"
	if _, err := DesiredValidating(o); err == nil {
		t.Fatal("accepted an unknown failure policy")
	}
	o.FailurePolicy, o.CABundle = admissionregistrationv1.Fail, nil
	if _, err := DesiredValidating(o); err == nil {
		t.Fatal("accepted an empty caBundle")
	}
}

// TestKeeperKeepsBothConfigurations: one Keeper writes the mutating and
// the validating configuration with the same caBundle, writes nothing
// while both are as desired (the apiserver's defaults are no change), and
// rewrites both when the trust bundle changes.
func TestKeeperKeepsBothConfigurations(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cs := cluster.Clientset()
	mut := cs.AdmissionregistrationV1().MutatingWebhookConfigurations()
	val := cs.AdmissionregistrationV1().ValidatingWebhookConfigurations()
	t.Cleanup(func() {
		_ = mut.Delete(context.Background(), "osm-both-test", metav1.DeleteOptions{})
		_ = val.Delete(context.Background(), "osm-both-test-validator", metav1.DeleteOptions{})
	})
	var bundle atomic.Pointer[[]byte]
	ca := []byte("ca-1")
	bundle.Store(&ca)
	changed := make(chan struct{}, 1)
	k := NewKeeper(KeeperOptions{Client: cs,
		Config: Options{Name: "osm-both-test", MeshName: "osm", ControlPlaneNamespace: "osm-system",
			ServiceNamespace: "osm-system", ServiceName: "osm-injector", ServicePort: 443},
		Validating: ValidatingOptions{Name: "osm-both-test-validator", MeshName: "osm", ControlPlaneNamespace: "osm-system",
			ServiceNamespace: "osm-system", ServiceName: "osm-injector", ServicePort: 443},
		CABundle: func() ([]byte, error) {
			if b := bundle.Load(); b != nil {
				return *b, nil
			}
			return nil, errors.New("no trust bundle")
		},
		Changed: changed, Interval: time.Hour})
	done := make(chan error, 1)
	go func() { done <- k.Start(ctx) }()
	bundlesAre(t, "osm-both-test", "osm-both-test-validator", "ca-1")

	// As desired: Ensure writes neither (no rewrite at every interval).
	for _, name := range []string{"osm-both-test", "osm-both-test-validator"} {
		var wrote bool
		var err error
		if name == "osm-both-test" {
			d, _ := Desired(Options{Name: name, MeshName: "osm", ControlPlaneNamespace: "osm-system", ServiceNamespace: "osm-system",
				ServiceName: "osm-injector", ServicePort: 443, CABundle: []byte("ca-1")})
			wrote, err = Ensure(ctx, cs, d)
		} else {
			d, _ := DesiredValidating(ValidatingOptions{Name: name, MeshName: "osm", ControlPlaneNamespace: "osm-system", ServiceNamespace: "osm-system",
				ServiceName: "osm-injector", ServicePort: 443, CABundle: []byte("ca-1")})
			wrote, err = EnsureValidating(ctx, cs, d)
		}
		if err != nil || wrote {
			t.Fatalf("%s as desired: wrote=%v err=%v", name, wrote, err)
		}
	}

	// A new trust bundle: both follow.
	ca2 := []byte("ca-2")
	bundle.Store(&ca2)
	changed <- struct{}{}
	bundlesAre(t, "osm-both-test", "osm-both-test-validator", "ca-2")
	cancel()
	apptest.Stopped(t, done, nil)
}

// bundlesAre waits until both configurations' webhooks carry want.
func bundlesAre(t *testing.T, mutating, validating, want string) {
	t.Helper()
	cs := cluster.Clientset().AdmissionregistrationV1()
	var got []string
	err := wait.PollUntilContextTimeout(t.Context(), 20*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		got = nil
		m, err := cs.MutatingWebhookConfigurations().Get(ctx, mutating, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		got = append(got, string(m.Webhooks[0].ClientConfig.CABundle))
		v, err := cs.ValidatingWebhookConfigurations().Get(ctx, validating, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, h := range v.Webhooks {
			got = append(got, string(h.ClientConfig.CABundle))
		}
		for _, g := range got {
			if g != want {
				return false, nil
			}
		}
		return len(got) == 3, nil
	})
	if err != nil {
		t.Fatalf("caBundles %q, want %q in all three webhooks", got, want)
	}
}
