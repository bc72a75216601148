package inject

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/openservicemesh/osm/libs/layout"
)

// proxylessPod is a bookstore pod asking for proxyless gRPC, with two
// containers: one that sets GRPC_XDS_BOOTSTRAP itself and has a volume
// mount, one with neither.
func proxylessPod() *corev1.Pod {
	pod := bookstorePod()
	pod.Annotations[AnnotationProxyless] = layout.ProxylessGRPC
	pod.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "LOG", Value: "debug"}, {Name: "GRPC_XDS_BOOTSTRAP", Value: "/mine.json"}}
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
	pod.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: "buyer", Image: "bookbuyer:v1"})
	return pod
}

// TestBuildProxylessGoldenAndIdempotent: a proxyless gRPC pod gets no
// sidecar, no init container and no probe rewrite; every container gets
// the bootstrap volume and GRPC_XDS_BOOTSTRAP (replacing its own), and the
// pod the proxy UUID label that the reconciler and the renewal follow.
func TestBuildProxylessGoldenAndIdempotent(t *testing.T) {
	pod := proxylessPod()
	res, err := BuildProxyless(Request{Pod: pod, Namespace: meshNS(nil), ProxyUUID: "6f1c1d0e-uuid"})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.MarshalIndent(res.Ops, "", "  ")
	got = append(got, '\n')
	path := filepath.Join("testdata", "proxyless.patch.json")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update)", err)
	}
	if string(got) != string(want) {
		t.Errorf("patch differs from %s:\n%s", path, got)
	}

	injected := apply(t, pod, res.Ops)
	if len(injected.Spec.InitContainers) != 0 {
		t.Fatalf("init containers: %+v", injected.Spec.InitContainers)
	}
	if len(injected.Spec.Containers) != 2 {
		t.Fatalf("containers: %d", len(injected.Spec.Containers))
	}
	for _, c := range injected.Spec.Containers {
		if c.Name == SidecarName {
			t.Fatal("a proxyless pod got the sidecar")
		}
		env := map[string]string{}
		for _, e := range c.Env {
			if _, dup := env[e.Name]; dup {
				t.Fatalf("container %s: %s set twice", c.Name, e.Name)
			}
			env[e.Name] = e.Value
		}
		if env["GRPC_XDS_BOOTSTRAP"] != "/etc/osm/grpc/bootstrap.json" || env["GRPC_EXPERIMENTAL_XDS_MTLS_SPIFFE"] != "true" {
			t.Fatalf("container %s env %v", c.Name, env)
		}
		mounted := false
		for _, m := range c.VolumeMounts {
			mounted = mounted || (m.Name == ProxylessVolume && m.MountPath == ProxylessMount && m.ReadOnly)
		}
		if !mounted {
			t.Fatalf("container %s mounts %+v", c.Name, c.VolumeMounts)
		}
	}
	if env := injected.Spec.Containers[0].Env; env[0].Name != "LOG" {
		t.Fatalf("the container's own variables changed: %+v", env)
	}
	if lp := injected.Spec.Containers[0].LivenessProbe.HTTPGet; lp.Port.StrVal != "http" || lp.Path != "/healthz" {
		t.Fatalf("the liveness probe was rewritten: %+v", lp)
	}
	vol := injected.Spec.Volumes[len(injected.Spec.Volumes)-1]
	if vol.Name != ProxylessVolume || vol.Secret == nil || vol.Secret.SecretName != "envoy-bootstrap-6f1c1d0e-uuid" {
		t.Fatalf("volumes %+v", injected.Spec.Volumes)
	}
	if injected.Labels[layout.LabelProxyUUID] != "6f1c1d0e-uuid" {
		t.Fatalf("labels %v", injected.Labels)
	}

	// A second admission of the pod changes nothing, with either builder.
	if again, err := BuildProxyless(Request{Pod: injected, Namespace: meshNS(nil), ProxyUUID: "other"}); err != nil || len(again.Ops) != 0 {
		t.Fatalf("second admission: %d ops, %v", len(again.Ops), err)
	}
	if again, err := Build(settings(), Request{Pod: injected, Namespace: meshNS(nil), ProxyUUID: "other"}); err != nil || len(again.Ops) != 0 {
		t.Fatalf("second admission as a sidecar pod: %d ops, %v", len(again.Ops), err)
	}
}

// TestProxylessAnnotation: only "grpc" is a proxyless flavour; any other
// value is an error naming the annotation and the value.
func TestProxylessAnnotation(t *testing.T) {
	for v, want := range map[string]bool{"grpc": true} {
		pod := bookstorePod()
		pod.Annotations[AnnotationProxyless] = v
		if got, err := Proxyless(pod); got != want || err != nil {
			t.Errorf("%q: %v, %v", v, got, err)
		}
	}
	if got, err := Proxyless(bookstorePod()); got || err != nil {
		t.Errorf("no annotation: %v, %v", got, err)
	}
	for _, v := range []string{"envoy", "GRPC", "", "true"} {
		pod := bookstorePod()
		pod.Annotations[AnnotationProxyless] = v
		_, err := Proxyless(pod)
		if err == nil || !strings.Contains(err.Error(), "openservicemesh.io/proxyless") || !strings.Contains(err.Error(), `"`+v+`"`) {
			t.Errorf("%q: %v, want an error naming the annotation and the value", v, err)
		}
	}
}

// TestBuildProxylessRefusesTheMountPath: a container that already mounts
// something at the bootstrap's path is refused, naming it.
func TestBuildProxylessRefusesTheMountPath(t *testing.T) {
	pod := proxylessPod()
	pod.Spec.Containers[1].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/etc/osm/grpc/"}}
	_, err := BuildProxyless(Request{Pod: pod, Namespace: meshNS(nil), ProxyUUID: "u"})
	if err == nil || !strings.Contains(err.Error(), "container buyer") || !strings.Contains(err.Error(), ProxylessMount) {
		t.Fatalf("got %v", err)
	}
}
