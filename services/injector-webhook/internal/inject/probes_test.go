package inject

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TestProbesGolden: an HTTPS readiness probe and a gRPC startup probe move
// to the sidecar's probe ports (which pass them through to the app) with
// their scheme, path and service kept; an HTTP liveness probe is rewritten
// as before; TCP probes of two containers, of the same kind, become GETs of
// /osm-healthcheck on 15904 naming the app's port in Original-Tcp-Port,
// and 15904 escapes the inbound redirection; a TCP probe with a host is
// left alone. The annotation keeps the originals.
func TestProbesGolden(t *testing.T) {
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
					TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(6379)}}, TimeoutSeconds: 3},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
					TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(6379), Host: "cache.example"}}},
			}, {
				Name: "db", Image: "db:v1",
				Ports: []corev1.ContainerPort{{Name: "pg", ContainerPort: 5432}},
				LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
					TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromString("pg")}}},
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
	for i, port := range map[int]string{1: "6379", 2: "5432"} {
		l := c[i].LivenessProbe
		if l.TCPSocket != nil || l.HTTPGet == nil || l.HTTPGet.Port.IntValue() != PortHealthcheck || l.HTTPGet.Path != "/osm-healthcheck" ||
			l.HTTPGet.Scheme != corev1.URISchemeHTTP || len(l.HTTPGet.HTTPHeaders) != 1 ||
			l.HTTPGet.HTTPHeaders[0] != (corev1.HTTPHeader{Name: "Original-Tcp-Port", Value: port}) {
			t.Fatalf("container %s TCP liveness probe: %+v", c[i].Name, l)
		}
	}
	if c[1].LivenessProbe.TimeoutSeconds != 3 {
		t.Fatalf("the TCP probe's timing was lost: %+v", c[1].LivenessProbe)
	}
	if r := c[1].ReadinessProbe.TCPSocket; r == nil || r.Host != "cache.example" || r.Port.IntValue() != 6379 {
		t.Fatalf("the TCP probe with a host was changed: %+v", c[1].ReadinessProbe)
	}
	if args := apply(t, pod, res.Ops).Spec.InitContainers[0].Args[0]; !strings.Contains(args, "--dports 15010,15901,15902,15903,15904 -j RETURN") {
		t.Fatalf("15904 is redirected to the inbound listener:\n%s", args)
	}
	probes, err := InjectedProbes(apply(t, pod, res.Ops))
	if err != nil {
		t.Fatal(err)
	}
	wantProbes := []OriginalProbe{
		{Container: "api", Kind: "liveness", Port: 8080, Path: "/healthz", ListenPort: PortLiveness, ProbePath: "/osm-liveness-probe"},
		{Container: "api", Kind: "readiness", Protocol: ProbeHTTPS, Port: 8443, Path: "/ready", ListenPort: PortReadiness, ProbePath: "/ready"},
		{Container: "api", Kind: "startup", Protocol: ProbeGRPC, Port: 9090, Service: svc, ListenPort: PortStartup},
		{Container: "cache", Kind: "liveness", Protocol: ProbeTCP, Port: 6379, ListenPort: PortHealthcheck, ProbePath: "/osm-healthcheck"},
		{Container: "db", Kind: "liveness", Protocol: ProbeTCP, Port: 5432, ListenPort: PortHealthcheck, ProbePath: "/osm-healthcheck"},
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
	if ports["probe-readiness"] != PortReadiness || ports["probe-startup"] != PortStartup || ports["probe-tcp"] != PortHealthcheck || len(ports) != 5 {
		t.Fatalf("sidecar ports %v", ports)
	}

	// Without a TCP probe 15904 stays redirected: nothing serves it.
	noTCP := pod.DeepCopy()
	noTCP.Spec.Containers = noTCP.Spec.Containers[:1]
	res2, err := Build(settings(), Request{Pod: noTCP, Namespace: meshNS(nil), ProxyUUID: "7a2b-uuid"})
	if err != nil {
		t.Fatal(err)
	}
	if args := apply(t, noTCP, res2.Ops).Spec.InitContainers[0].Args[0]; strings.Contains(args, "15904") {
		t.Fatalf("15904 bypasses the sidecar in a pod without TCP probes:\n%s", args)
	}

	// Two containers' HTTPS readiness probes cannot share the one port.
	pod.Spec.Containers[1].ReadinessProbe = pod.Spec.Containers[0].ReadinessProbe.DeepCopy()
	pod.Spec.Containers[1].ReadinessProbe.HTTPGet.Port = intstr.FromInt32(9443)
	if _, err := Build(settings(), Request{Pod: pod, Namespace: meshNS(nil), ProxyUUID: "7a2b-uuid"}); err == nil {
		t.Fatal("two containers' readiness probes were both sent through the sidecar")
	}
}
