package normalize

import (
	"bytes"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

func ptr[T any](v T) *T { return &v }

func meta(ns, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name), Generation: 3, ResourceVersion: "100"}
}

func wantMeta(ns, name string) *meshv1.ObjectMeta {
	return &meshv1.ObjectMeta{Namespace: ns, Name: name, Uid: "uid-" + name, Generation: 3}
}

func TestNamespace(t *testing.T) {
	cases := []struct {
		name string
		in   *corev1.Namespace
		want *meshv1.Namespace
	}{{
		name: "meshed with injection and metrics",
		in: &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
			Name: "bookstore", UID: "uid-bookstore",
			Labels: map[string]string{layout.LabelMonitoredBy: "osm", "team": "books", "openservicemesh.io/x": "label"},
			Annotations: map[string]string{layout.AnnotationSidecarInjection: "enabled", layout.AnnotationMetrics: "enabled",
				"openservicemesh.io/x": "annotation", "unrelated": "y"},
		}},
		want: &meshv1.Namespace{
			Meta:             &meshv1.ObjectMeta{Name: "bookstore", Uid: "uid-bookstore"},
			MonitoredBy:      "osm",
			SidecarInjection: meshv1.SidecarInjection_SIDECAR_INJECTION_ENABLED,
			MetricsEnabled:   true,
			OsmAnnotations: map[string]string{layout.LabelMonitoredBy: "osm", layout.AnnotationSidecarInjection: "enabled",
				layout.AnnotationMetrics: "enabled", "openservicemesh.io/x": "annotation"},
		},
	}, {
		name: "ignored with an invalid injection value",
		in: &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
			Name:        "legacy",
			Labels:      map[string]string{layout.LabelMonitoredBy: "osm", layout.LabelIgnore: "true"},
			Annotations: map[string]string{layout.AnnotationSidecarInjection: "maybe"},
		}},
		want: &meshv1.Namespace{
			Meta:             &meshv1.ObjectMeta{Name: "legacy"},
			MonitoredBy:      "osm",
			Ignored:          true,
			SidecarInjection: meshv1.SidecarInjection_SIDECAR_INJECTION_INVALID,
			OsmAnnotations:   map[string]string{layout.LabelMonitoredBy: "osm", layout.LabelIgnore: "true", layout.AnnotationSidecarInjection: "maybe"},
			InvalidFields: []*meshv1.InvalidField{{
				FieldPath: "metadata.annotations[openservicemesh.io/sidecar-injection]",
				Value:     "maybe",
				Message:   `must be one of "enabled", "yes", "true", "disabled", "no" or "false"`,
			}},
		},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if d := cmp.Diff(c.want, Namespace(c.in), protocmp.Transform()); d != "" {
				t.Errorf("Namespace (-want +got):\n%s", d)
			}
		})
	}
}

func TestMembership(t *testing.T) {
	ns := func(labels map[string]string) *corev1.Namespace {
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "n", Labels: labels}}
	}
	cases := []struct {
		name              string
		ns                *corev1.Namespace
		monitored, inMesh bool
	}{
		{"monitored by this mesh", ns(map[string]string{layout.LabelMonitoredBy: "osm"}), true, true},
		{"monitored by another mesh", ns(map[string]string{layout.LabelMonitoredBy: "other"}), false, false},
		{"not labelled", ns(nil), false, false},
		{"ignored", ns(map[string]string{layout.LabelMonitoredBy: "osm", layout.LabelIgnore: "true"}), true, false},
		{"ignore label not true", ns(map[string]string{layout.LabelMonitoredBy: "osm", layout.LabelIgnore: "no"}), true, true},
		{"nil", nil, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := Monitored(c.ns, "osm"); got != c.monitored {
				t.Errorf("Monitored = %v, want %v", got, c.monitored)
			}
			if got := InMesh(c.ns, "osm"); got != c.inMesh {
				t.Errorf("InMesh = %v, want %v", got, c.inMesh)
			}
		})
	}
}

func TestService(t *testing.T) {
	cases := []struct {
		name string
		in   *corev1.Service
		want *meshv1.Service
	}{{
		name: "cluster IP with numbered and named target ports",
		in: &corev1.Service{ObjectMeta: meta("bookstore", "bookstore.v1"), Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeClusterIP, ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10", "fd00::10"},
			Selector: map[string]string{"app": "bookstore"},
			Ports: []corev1.ServicePort{
				{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP, AppProtocol: ptr("http")},
				{Name: "grpc", Port: 9090, TargetPort: intstr.FromString("grpc-port"), Protocol: corev1.ProtocolTCP},
				{Name: "raw", Port: 7000, Protocol: corev1.ProtocolUDP},
			},
		}},
		want: &meshv1.Service{
			Meta: wantMeta("bookstore", "bookstore.v1"), Type: "ClusterIP",
			ClusterIps: []string{"10.96.0.10", "fd00::10"}, Selector: map[string]string{"app": "bookstore"},
			Ports: []*meshv1.ServicePort{
				{Name: "http", Port: 80, TargetPort: &meshv1.ServicePort_TargetPortNumber{TargetPortNumber: 8080}, Protocol: "TCP", AppProtocol: "http"},
				{Name: "grpc", Port: 9090, TargetPort: &meshv1.ServicePort_TargetPortName{TargetPortName: "grpc-port"}, Protocol: "TCP"},
				{Name: "raw", Port: 7000, Protocol: "UDP"},
			},
		},
	}, {
		name: "headless",
		in: &corev1.Service{ObjectMeta: meta("db", "mysql"), Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeClusterIP, ClusterIP: corev1.ClusterIPNone, ClusterIPs: []string{corev1.ClusterIPNone},
		}},
		want: &meshv1.Service{Meta: wantMeta("db", "mysql"), Type: "ClusterIP", Headless: true},
	}, {
		name: "selectorless, with its declared service accounts",
		in: func() *corev1.Service {
			m := meta("db", "legacy")
			m.Annotations = map[string]string{layout.AnnotationServiceAccounts: "db/mysql", "kubectl.kubernetes.io/last-applied-configuration": "{}"}
			return &corev1.Service{ObjectMeta: m, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: "10.96.0.20"}}
		}(),
		want: &meshv1.Service{Meta: wantMeta("db", "legacy"), Type: "ClusterIP", ClusterIps: []string{"10.96.0.20"},
			OsmAnnotations: map[string]string{layout.AnnotationServiceAccounts: "db/mysql"}},
	}, {
		name: "external name",
		in: &corev1.Service{ObjectMeta: meta("ext", "api"), Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeExternalName, ExternalName: "api.example.com",
		}},
		want: &meshv1.Service{Meta: wantMeta("ext", "api"), Type: "ExternalName", ExternalName: "api.example.com"},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if d := cmp.Diff(c.want, Service(c.in), protocmp.Transform()); d != "" {
				t.Errorf("Service (-want +got):\n%s", d)
			}
		})
	}
	if got := layout.ObservedKey(layout.KindService, "bookstore", "bookstore.v1"); got != "service.bookstore.bookstore_2Ev1" {
		t.Errorf("ServiceKey = %q", got)
	}
}

func TestEndpointSlice(t *testing.T) {
	in := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "bookstore", Name: "bookstore-abcde", UID: "u1", Generation: 2, Labels: map[string]string{discoveryv1.LabelServiceName: "bookstore"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr[int32](8080), Protocol: ptr(corev1.ProtocolTCP), AppProtocol: ptr("http")}},
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{"10.244.0.10"},
			Conditions: discoveryv1.EndpointConditions{}, // all unset: ready, serving, not terminating
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: "bookstore", Name: "bookstore-0", UID: "pod-uid"},
			NodeName:   ptr("node-a"), Zone: ptr("zone-a"),
		}, {
			Addresses:  []string{"10.244.0.11"},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr(false), Serving: ptr(true), Terminating: ptr(true)},
			Hostname:   ptr("bookstore-1"),
		}},
	}
	want := &meshv1.EndpointSlice{
		Meta:        &meshv1.ObjectMeta{Namespace: "bookstore", Name: "bookstore-abcde", Uid: "u1"},
		Service:     &meshv1.NamespacedName{Namespace: "bookstore", Name: "bookstore"},
		AddressType: meshv1.AddressType_ADDRESS_TYPE_IPV4,
		Ports:       []*meshv1.EndpointPort{{Name: "http", Port: ptr[int32](8080), Protocol: "TCP", AppProtocol: "http"}},
		Endpoints: []*meshv1.Endpoint{{
			Addresses:  []string{"10.244.0.10"},
			Conditions: &meshv1.EndpointConditions{Ready: true, Serving: true},
			TargetRef:  &meshv1.ObjectRef{Kind: "Pod", Namespace: "bookstore", Name: "bookstore-0", Uid: "pod-uid"},
			NodeName:   "node-a", Zone: "zone-a",
		}, {
			Addresses:  []string{"10.244.0.11"},
			Conditions: &meshv1.EndpointConditions{Ready: false, Serving: true, Terminating: true},
			Hostname:   "bookstore-1",
		}},
	}
	got, ok := EndpointSlice(in)
	if !ok {
		t.Fatal("EndpointSlice with a service-name label not published")
	}
	if d := cmp.Diff(want, got, protocmp.Transform()); d != "" {
		t.Errorf("EndpointSlice (-want +got):\n%s", d)
	}
	// The controller rewrites a slice after any pod update, bumping its
	// generation and trigger-time annotation: nothing the mesh reads.
	touched := in.DeepCopy()
	touched.Generation = 9
	touched.Annotations = map[string]string{"endpoints.kubernetes.io/last-change-trigger-time": "2026-11-25T11:00:00Z"}
	again, _ := EndpointSlice(touched)
	if !bytes.Equal(marshal(t, got), marshal(t, again)) {
		t.Error("a controller refresh of the slice altered the normalised bytes")
	}
	orphan := in.DeepCopy()
	delete(orphan.Labels, discoveryv1.LabelServiceName)
	if _, ok := EndpointSlice(orphan); ok {
		t.Error("EndpointSlice without a service-name label is published")
	}
}

func readyPod() *corev1.Pod {
	start := metav1.NewTime(time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC))
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "bookstore", Name: "bookstore-0", UID: "pod-uid", Generation: 1, ResourceVersion: "42",
			Labels:      map[string]string{"app": "bookstore", layout.LabelProxyUUID: "5f4a"},
			Annotations: map[string]string{layout.AnnotationSidecarInjection: "disabled", "openservicemesh.io/outbound-port-exclusion-list": "6379", "kubectl.kubernetes.io/restartedAt": "x"},
		},
		Spec: corev1.PodSpec{ServiceAccountName: "bookstore", NodeName: "node-a",
			Containers: []corev1.Container{{Name: "app", Image: "bookstore:v1"}}},
		Status: corev1.PodStatus{
			Phase: corev1.PodRunning, PodIP: "10.244.0.10", PodIPs: []corev1.PodIP{{IP: "10.244.0.10"}, {IP: "fd00::a"}},
			StartTime: &start,
			Conditions: []corev1.PodCondition{
				{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: start},
				{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: start},
			},
			ContainerStatuses: []corev1.ContainerStatus{{Name: "app", Ready: true,
				State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: start}}}},
		},
	}
}

func TestPod(t *testing.T) {
	want := &meshv1.Pod{
		Meta:             &meshv1.ObjectMeta{Namespace: "bookstore", Name: "bookstore-0", Uid: "pod-uid", Generation: 1},
		Labels:           map[string]string{"app": "bookstore", layout.LabelProxyUUID: "5f4a"},
		ServiceAccount:   "bookstore",
		PodIps:           []string{"10.244.0.10", "fd00::a"},
		ProxyUuid:        "5f4a",
		NodeName:         "node-a",
		SidecarInjection: meshv1.SidecarInjection_SIDECAR_INJECTION_DISABLED,
		OsmAnnotations:   map[string]string{layout.AnnotationSidecarInjection: "disabled", "openservicemesh.io/outbound-port-exclusion-list": "6379"},
		Phase:            meshv1.PodPhase_POD_PHASE_RUNNING,
		Ready:            true,
	}
	if d := cmp.Diff(want, Pod(readyPod()), protocmp.Transform()); d != "" {
		t.Errorf("Pod (-want +got):\n%s", d)
	}
	p := readyPod()
	p.Status.PodIPs = nil
	p.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	got := Pod(p)
	if !got.Terminating || len(got.PodIps) != 1 || got.PodIps[0] != "10.244.0.10" {
		t.Errorf("terminating pod with only status.podIP: terminating=%v pod_ips=%v", got.Terminating, got.PodIps)
	}
}

// marshal is how the store serialises values.
func marshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestIrrelevantChangesGiveIdenticalBytes is the contract behind "a resync
// or an irrelevant field change writes nothing".
func TestIrrelevantChangesGiveIdenticalBytes(t *testing.T) {
	later := metav1.NewTime(time.Date(2026, 11, 25, 11, 0, 0, 0, time.UTC))
	podCases := map[string]func(p *corev1.Pod){
		"status timestamps": func(p *corev1.Pod) {
			for i := range p.Status.Conditions {
				p.Status.Conditions[i].LastProbeTime = later
				p.Status.Conditions[i].LastTransitionTime = later
			}
			p.Status.ContainerStatuses[0].State.Running.StartedAt = later
		},
		"resourceVersion":   func(p *corev1.Pod) { p.ResourceVersion = "43" },
		"managed fields":    func(p *corev1.Pod) { p.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl", Time: &later}} },
		"restart count":     func(p *corev1.Pod) { p.Status.ContainerStatuses[0].RestartCount = 4 },
		"other annotations": func(p *corev1.Pod) { p.Annotations["kubectl.kubernetes.io/restartedAt"] = "y" },
		"container image":   func(p *corev1.Pod) { p.Spec.Containers[0].Image = "bookstore:v2" },
	}
	base := marshal(t, Pod(readyPod()))
	for name, mutate := range podCases {
		t.Run("pod "+name, func(t *testing.T) {
			p := readyPod()
			mutate(p)
			if got := marshal(t, Pod(p)); !bytes.Equal(got, base) {
				t.Error("an irrelevant change altered the normalised bytes")
			}
		})
	}
	t.Run("pod relevant change", func(t *testing.T) {
		p := readyPod()
		p.Status.PodIPs[0].IP = "10.244.0.99"
		if bytes.Equal(marshal(t, Pod(p)), base) {
			t.Error("a pod IP change left the normalised bytes unchanged")
		}
	})
	t.Run("service status and labels", func(t *testing.T) {
		svc := &corev1.Service{ObjectMeta: meta("a", "b"), Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "b"},
			Ports: []corev1.ServicePort{{Port: 80}}}}
		b1 := marshal(t, Service(svc))
		svc.ResourceVersion = "999"
		svc.Labels = map[string]string{"release": "x"}
		svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "1.2.3.4"}}
		if !bytes.Equal(b1, marshal(t, Service(svc))) {
			t.Error("service status or labels altered the normalised bytes")
		}
	})
	t.Run("map order", func(t *testing.T) {
		sel := map[string]string{}
		for _, k := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
			sel[k] = k
		}
		svc := &corev1.Service{ObjectMeta: meta("a", "b"), Spec: corev1.ServiceSpec{Selector: sel}}
		b1 := marshal(t, Service(svc))
		for range 20 {
			if !bytes.Equal(b1, marshal(t, Service(svc))) {
				t.Fatal("map iteration order leaked into the bytes")
			}
		}
	})
}

func TestServiceAccount(t *testing.T) {
	sa := &corev1.ServiceAccount{ObjectMeta: meta("bookstore", "bookstore"), Secrets: []corev1.ObjectReference{{Name: "tok"}}}
	if d := cmp.Diff(&meshv1.ServiceAccount{Meta: wantMeta("bookstore", "bookstore")}, ServiceAccount(sa), protocmp.Transform()); d != "" {
		t.Errorf("ServiceAccount (-want +got):\n%s", d)
	}
}
