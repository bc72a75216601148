package inject

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/openservicemesh/osm/libs/layout"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func settings() Settings {
	return Settings{
		MeshName: "osm", SidecarImage: "envoyproxy/envoy:v1.36.0", InitImage: "openservicemesh/init:v1",
		LogLevel: "error", ProxyUID: 1500,
		Resources:                 corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")}},
		OutboundIPRangeExclusions: []string{"169.254.169.254/32"},
	}
}

func meshNS(annotations map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bookstore",
		Labels: map[string]string{layout.LabelMonitoredBy: "osm"}, Annotations: annotations}}
}

func bookstorePod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "bookstore-v1-abc", Namespace: "bookstore",
			Labels:      map[string]string{"app": "bookstore"},
			Annotations: map[string]string{AnnotationOutboundPorts: "6379, 3306"}},
		Spec: corev1.PodSpec{
			ServiceAccountName: "bookstore",
			Containers: []corev1.Container{{
				Name: "bookstore", Image: "bookstore:v1",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 14001}},
				LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
					HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}}},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
					TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(14001)}}},
			}},
		},
	}
}

func TestDecide(t *testing.T) {
	s := settings()
	other := meshNS(nil)
	other.Labels[layout.LabelMonitoredBy] = "other-mesh"
	ignored := meshNS(nil)
	ignored.Labels[layout.LabelIgnore] = "true"
	hostNet := bookstorePod()
	hostNet.Spec.HostNetwork = true
	podOff := bookstorePod()
	podOff.Annotations[layout.AnnotationSidecarInjection] = "disabled"
	podOn := bookstorePod()
	podOn.Annotations[layout.AnnotationSidecarInjection] = "enabled"
	cases := []struct {
		name string
		ns   *corev1.Namespace
		pod  *corev1.Pod
		want bool
	}{
		{"meshed namespace", meshNS(nil), bookstorePod(), true},
		{"namespace of another mesh", other, bookstorePod(), false},
		{"unlabelled namespace", &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kube-system"}}, bookstorePod(), false},
		{"ignored namespace", ignored, bookstorePod(), false},
		{"host network", meshNS(nil), hostNet, false},
		{"pod disabled", meshNS(nil), podOff, false},
		{"namespace disabled", meshNS(map[string]string{layout.AnnotationSidecarInjection: "disabled"}), bookstorePod(), false},
		{"pod enabled wins over namespace disabled", meshNS(map[string]string{layout.AnnotationSidecarInjection: "disabled"}), podOn, true},
	}
	for _, c := range cases {
		d, err := Decide(s, c.ns, c.pod)
		if err != nil || d.Inject != c.want || d.Reason == "" {
			t.Errorf("%s: %+v, %v; want inject=%v with a reason", c.name, d, err, c.want)
		}
	}
	bad := bookstorePod()
	bad.Annotations[layout.AnnotationSidecarInjection] = "maybe"
	if _, err := Decide(s, meshNS(nil), bad); err == nil || !strings.Contains(err.Error(), layout.AnnotationSidecarInjection) {
		t.Errorf("bad annotation: %v", err)
	}
}

func apply(t *testing.T, pod *corev1.Pod, ops []Op) *corev1.Pod {
	t.Helper()
	raw, _ := json.Marshal(pod)
	p, _ := json.Marshal(ops)
	patch, err := jsonpatch.DecodePatch(p)
	if err != nil {
		t.Fatal(err)
	}
	out, err := patch.Apply(raw)
	if err != nil {
		t.Fatalf("apply patch: %v\n%s", err, p)
	}
	var res corev1.Pod
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatal(err)
	}
	return &res
}

func TestBuildGoldenAndIdempotent(t *testing.T) {
	pod := bookstorePod()
	res, err := Build(settings(), Request{Pod: pod, Namespace: meshNS(map[string]string{layout.AnnotationMetrics: "enabled"}), ProxyUUID: "6f1c1d0e-uuid"})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.MarshalIndent(res.Ops, "", "  ")
	got = append(got, '\n')
	path := filepath.Join("testdata", "bookstore.patch.json")
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
	if len(injected.Spec.InitContainers) != 1 || injected.Spec.InitContainers[0].Name != InitContainerName {
		t.Fatalf("init containers: %+v", injected.Spec.InitContainers)
	}
	if n := len(injected.Spec.Containers); n != 2 || injected.Spec.Containers[1].Name != SidecarName {
		t.Fatalf("containers: %d", n)
	}
	lp := injected.Spec.Containers[0].LivenessProbe.HTTPGet
	if lp.Port.IntValue() != PortLiveness || lp.Path != "/osm-liveness-probe" {
		t.Fatalf("liveness probe not rewritten: %+v", lp)
	}
	if rp := injected.Spec.Containers[0].ReadinessProbe.HTTPGet; rp == nil || rp.Port.IntValue() != PortHealthcheck {
		t.Fatalf("the TCP readiness probe was not rewritten: %+v", injected.Spec.Containers[0].ReadinessProbe)
	}
	var probes []OriginalProbe
	if probes, err = InjectedProbes(injected); err != nil || len(probes) != 2 ||
		probes[0].Port != 14001 || probes[0].Path != "/healthz" || probes[1].Protocol != ProbeTCP || probes[1].Port != 14001 {
		t.Fatalf("original probe annotation = %q", injected.Annotations[AnnotationProbes])
	}
	if injected.Annotations["prometheus.io/scrape"] != "true" || injected.Labels[layout.LabelProxyUUID] != "6f1c1d0e-uuid" {
		t.Fatalf("labels %v annotations %v", injected.Labels, injected.Annotations)
	}
	if !strings.Contains(injected.Spec.InitContainers[0].Args[0], "--dports 3306,6379 -j RETURN") {
		t.Fatalf("pod port exclusions missing from the rules:\n%s", injected.Spec.InitContainers[0].Args[0])
	}
	if injected.Spec.Volumes[0].Secret.SecretName != "envoy-bootstrap-6f1c1d0e-uuid" {
		t.Fatalf("volumes %+v", injected.Spec.Volumes)
	}

	if p := injected.Spec.InitContainers[0].SecurityContext.Privileged; p == nil || *p {
		t.Fatalf("init container privileged %v without enablePrivilegedInitContainer", p)
	}
	ps := settings()
	ps.PrivilegedInit = true
	priv, err := Build(ps, Request{Pod: bookstorePod(), Namespace: meshNS(nil), ProxyUUID: "6f1c1d0e-uuid"})
	if err != nil {
		t.Fatal(err)
	}
	if p := apply(t, bookstorePod(), priv.Ops).Spec.InitContainers[0].SecurityContext.Privileged; p == nil || !*p {
		t.Fatalf("init container privileged %v with enablePrivilegedInitContainer", p)
	}

	// A second admission of the injected pod changes nothing.
	again, err := Build(settings(), Request{Pod: injected, Namespace: meshNS(nil), ProxyUUID: "other"})
	if err != nil || len(again.Ops) != 0 {
		t.Fatalf("second admission: %d ops, %v", len(again.Ops), err)
	}
}

func TestBuildRejectsBadInput(t *testing.T) {
	cases := map[string]func(*corev1.Pod){
		AnnotationOutboundPorts: func(p *corev1.Pod) { p.Annotations[AnnotationOutboundPorts] = "http" },
		"outboundIPRangeExclusionList": func(p *corev1.Pod) {
			p.Annotations[AnnotationOutboundExcl] = "not-a-cidr"
		},
		`named port "admin"`: func(p *corev1.Pod) {
			p.Spec.Containers[0].LivenessProbe.HTTPGet.Port = intstr.FromString("admin")
		},
	}
	for want, mutate := range cases {
		pod := bookstorePod()
		mutate(pod)
		_, err := Build(settings(), Request{Pod: pod, Namespace: meshNS(nil), ProxyUUID: "u"})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v", want, err)
		}
	}
}
