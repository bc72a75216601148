package e2e

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/tests/stack"
)

// TestMeshConfigInjectionFields runs the MeshConfig's
// spec.sidecar.enablePrivilegedInitContainer through the real apiserver
// (the chart's CRD) and the real injector, called by the apiserver for each
// pod: unset, the injected osm-init container is not privileged and has
// NET_ADMIN only; after the MeshConfig is edited to true, the next pod's is
// privileged; after false, the next pod's is not again. Pods admitted
// before an edit keep what they were given (the webhook runs at admission).
// The edit to true also sets the MeshConfig's other injection fields
// (spec.sidecar image, initContainerImage, logLevel, resources, and
// spec.traffic's port and IP range lists), and the same pod carries them.
func TestMeshConfigInjectionFields(t *testing.T) {
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
	if err := patchMeshConfig(t, mcName, `{"spec":{"sidecar":{"enablePrivilegedInitContainer":true,
		"image":"registry.example/envoy:e2e","initContainerImage":"registry.example/init:e2e","logLevel":"debug",
		"resources":{"limits":{"memory":"300Mi"},"requests":{"cpu":"50m"}}},
		"traffic":{"outboundPortExclusionList":[6379],"inboundPortExclusionList":[9091],
		"outboundIPRangeExclusionList":["10.96.0.1/32"],"outboundIPRangeInclusionList":["10.244.0.0/16"]}}}`); err != nil {
		t.Fatal(err)
	}
	c = want("edited to true", true)
	// The other injection fields of the same MeshConfig reach the same pod
	// (the injector reads them with enablePrivilegedInitContainer).
	p, err := cs.CoreV1().Pods(ns).Get(ctx, fmt.Sprintf("bookstore-%d", n), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	envoy := p.Spec.Containers[len(p.Spec.Containers)-1]
	if c.Image != "registry.example/init:e2e" || envoy.Name != "envoy" || envoy.Image != "registry.example/envoy:e2e" {
		t.Errorf("images: init %s, %s %s; want the MeshConfig's", c.Image, envoy.Name, envoy.Image)
	}
	if args := strings.Join(envoy.Args, " "); !strings.Contains(args, "--log-level debug") {
		t.Errorf("envoy args %q lack the MeshConfig's --log-level debug", args)
	}
	if envoy.Resources.Limits.Memory().String() != "300Mi" || envoy.Resources.Requests.Cpu().String() != "50m" {
		t.Errorf("envoy resources %+v, want the MeshConfig's", envoy.Resources)
	}
	script := strings.Join(c.Args, " ")
	for _, want := range []string{"6379", "9091", "10.96.0.1/32", "10.244.0.0/16"} {
		if !strings.Contains(script, want) {
			t.Errorf("osm-init's rules lack the MeshConfig's %s:\n%s", want, script)
		}
	}
	if err := patchMeshConfig(t, mcName, `{"spec":{"sidecar":{"enablePrivilegedInitContainer":false}}}`); err != nil {
		t.Fatal(err)
	}
	want("edited back to false", false)
	first, err := cs.CoreV1().Pods(ns).Get(ctx, "bookstore-1", metav1.GetOptions{})
	if err != nil || privileged(first.Spec.InitContainers[0]) {
		t.Errorf("the first pod, admitted unprivileged, changed or is gone: %v", err)
	}
}
