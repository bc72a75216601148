package inject

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TestHTTPSAndGRPCProbesGolden: an HTTPS readiness probe and a gRPC startup
// probe move to the sidecar's probe ports (which pass them through to the
// app) with their scheme, path and service kept; an HTTP liveness probe is
// rewritten as before; a TCP probe is left alone. The annotation keeps the
// originals.
func TestHTTPSAndGRPCProbesGolden(t *testing.T) {
	svc := "grpc.health.v1.Health"
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "api-1", Namespace: "bookstore"},
		Spec: corev1.PodSpec{
			ServiceAccountName: "api",
			Containers: []corev1.Container{{
				Name: "api", Image: "api:v1",
				Ports: []corev1.ContainerPort{{Name: "https", ContainerPort: 8443}, {Name: "grpc", ContainerPort: 9090}},
				LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
					HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}}},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
					HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromString("https"), Scheme: corev1.URISchemeHTTPS}},
					PeriodSeconds: 7},
				StartupProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
					GRPC: &corev1.GRPCAction{Port: 9090, Service: &svc}}},
			}, {
				Name: "cache", Image: "cache:v1",
				LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
					TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(6379)}}},
			}},
		},
	}
	res, err := Build(settings(), Request{Pod: pod, Namespace: meshNS(nil), ProxyUUID: "7a2b-uuid"})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.MarshalIndent(res.Ops, "", "  ")
	got = append(got, '\n')
	path := filepath.Join("testdata", "probes.patch.json")
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

	c := apply(t, pod, res.Ops).Spec.Containers
	if r := c[0].ReadinessProbe; r.HTTPGet.Port.IntValue() != PortReadiness || r.HTTPGet.Scheme != corev1.URISchemeHTTPS ||
		r.HTTPGet.Path != "/ready" || r.PeriodSeconds != 7 {
		t.Fatalf("HTTPS readiness probe: %+v", r)
	}
	if s := c[0].StartupProbe.GRPC; s.Port != PortStartup || s.Service == nil || *s.Service != svc {
		t.Fatalf("gRPC startup probe: %+v", s)
	}
	if l := c[0].LivenessProbe.HTTPGet; l.Port.IntValue() != PortLiveness || l.Path != "/osm-liveness-probe" {
		t.Fatalf("HTTP liveness probe: %+v", l)
	}
	if c[1].LivenessProbe.TCPSocket.Port.IntValue() != 6379 {
		t.Fatalf("the TCP probe was changed: %+v", c[1].LivenessProbe)
	}
	probes, err := InjectedProbes(apply(t, pod, res.Ops))
	if err != nil {
		t.Fatal(err)
	}
	wantProbes := []OriginalProbe{
		{Container: "api", Kind: "liveness", Port: 8080, Path: "/healthz", ListenPort: PortLiveness, ProbePath: "/osm-liveness-probe"},
		{Container: "api", Kind: "readiness", Protocol: ProbeHTTPS, Port: 8443, Path: "/ready", ListenPort: PortReadiness, ProbePath: "/ready"},
		{Container: "api", Kind: "startup", Protocol: ProbeGRPC, Port: 9090, Service: svc, ListenPort: PortStartup},
	}
	if len(probes) != len(wantProbes) {
		t.Fatalf("annotation probes %+v", probes)
	}
	for i := range probes {
		if probes[i] != wantProbes[i] {
			t.Errorf("annotation probe %d = %+v, want %+v", i, probes[i], wantProbes[i])
		}
	}
	ports := map[string]int32{}
	for _, p := range c[len(c)-1].Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["probe-readiness"] != PortReadiness || ports["probe-startup"] != PortStartup {
		t.Fatalf("sidecar ports %v", ports)
	}

	// Two containers' HTTPS readiness probes cannot share the one port.
	pod.Spec.Containers[1].ReadinessProbe = pod.Spec.Containers[0].ReadinessProbe.DeepCopy()
	pod.Spec.Containers[1].ReadinessProbe.HTTPGet.Port = intstr.FromInt32(9443)
	if _, err := Build(settings(), Request{Pod: pod, Namespace: meshNS(nil), ProxyUUID: "7a2b-uuid"}); err == nil {
		t.Fatal("two containers' readiness probes were both sent through the sidecar")
	}
}
