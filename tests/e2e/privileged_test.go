package e2e

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/tests/stack"
)

// TestMeshConfigPrivilegedInitContainer runs the MeshConfig's
// spec.sidecar.enablePrivilegedInitContainer through the real apiserver
// (the chart's CRD) and the real injector, called by the apiserver for each
// pod: unset, the injected osm-init container is not privileged and has
// NET_ADMIN only; after the MeshConfig is edited to true, the next pod's is
// privileged; after false, the next pod's is not again. Pods admitted
// before an edit keep what they were given (the webhook runs at admission).
func TestMeshConfigPrivilegedInitContainer(t *testing.T) {
	ctx := t.Context()
	cs := cluster.Clientset()
	run := uniq()
	ns, meshName, mcName := "privileged"+run, "privileged"+run, "privileged-mesh-config"+run
	namespace(t, "osm-system", nil)
	namespace(t, ns, map[string]string{layout.LabelMonitoredBy: meshName}, "bookstore")
	t.Cleanup(func() { _ = cs.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	meshConfig(t, mcName, true)
	m := startMesh(t, stack.Options{Name: "privileged", MeshName: meshName, MeshConfig: mcName}, stack.CertAuthority, stack.Injector)
	t.Cleanup(func() {
		_ = cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), m.WebhookConfigName(), metav1.DeleteOptions{})
		_ = cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Delete(context.Background(), m.ValidatingWebhookConfigName(), metav1.DeleteOptions{})
	})

	// initOf creates pod name and returns its injected osm-init container.
	n := 0
	initOf := func() corev1.Container {
		t.Helper()
		n++
		name := fmt.Sprintf("bookstore-%d", n)
		var init corev1.Container
		eventually(t, "an injected pod "+name, 30*time.Second, func() error {
			_ = cs.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{})
			p, err := cs.CoreV1().Pods(ns).Create(ctx, pod(name, nil), metav1.CreateOptions{})
			if err != nil {
				return err
			}
			if len(p.Spec.InitContainers) != 1 || p.Spec.InitContainers[0].Name != "osm-init" {
				return errors.New("pod created without the init container (webhook not called yet?)")
			}
			init = p.Spec.InitContainers[0]
			return nil
		})
		return init
	}
	privileged := func(c corev1.Container) bool {
		return c.SecurityContext != nil && c.SecurityContext.Privileged != nil && *c.SecurityContext.Privileged
	}
	// want waits until a new pod's init container is privileged as asked
	// (the injector follows the MeshConfig through a watch).
	want := func(step string, on bool) corev1.Container {
		t.Helper()
		var c corev1.Container
		deadline := time.Now().Add(30 * time.Second)
		for c = initOf(); privileged(c) != on; c = initOf() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: osm-init privileged %v after 30 s, want %v: %+v", step, privileged(c), on, c.SecurityContext)
			}
			time.Sleep(200 * time.Millisecond)
		}
		return c
	}

	c := want("unset", false)
	if caps := c.SecurityContext.Capabilities; caps == nil || !slices.Equal(caps.Add, []corev1.Capability{"NET_ADMIN"}) {
		t.Errorf("unprivileged osm-init capabilities %+v, want NET_ADMIN added", caps)
	}
	if err := patchMeshConfig(t, mcName, `{"spec":{"sidecar":{"enablePrivilegedInitContainer":true}}}`); err != nil {
		t.Fatal(err)
	}
	want("edited to true", true)
	if err := patchMeshConfig(t, mcName, `{"spec":{"sidecar":{"enablePrivilegedInitContainer":false}}}`); err != nil {
		t.Fatal(err)
	}
	want("edited back to false", false)
	first, err := cs.CoreV1().Pods(ns).Get(ctx, "bookstore-1", metav1.GetOptions{})
	if err != nil || privileged(first.Spec.InitContainers[0]) {
		t.Errorf("the first pod, admitted unprivileged, changed or is gone: %v", err)
	}
}
