package service_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	accessv1alpha3 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/access/v1alpha3"
	specsv1alpha4 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/specs/v1alpha4"
	splitv1alpha2 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/split/v1alpha2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/openservicemesh/osm/libs/app/apptest"
	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/meshconfig"
	"github.com/openservicemesh/osm/libs/osmpolicy"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/smi-watcher/internal/service"
	"github.com/openservicemesh/osm/services/smi-watcher/internal/watch"
)

// fixture is what seed created in one meshed namespace.
type fixture struct {
	ns      string
	nsUID   string
	sa      *corev1.ServiceAccount
	defSA   *corev1.ServiceAccount
	svc     *corev1.Service
	pod     *corev1.Pod
	tt      *accessv1alpha3.TrafficTarget
	hrg     *specsv1alpha4.HTTPRouteGroup
	tcp     *specsv1alpha4.TCPRoute
	split   *splitv1alpha2.TrafficSplit
	egress  *unstructured.Unstructured
	uts     *unstructured.Unstructured
	ingress *unstructured.Unstructured
	kubelet interface {
		MakeReady(ctx context.Context, pod *corev1.Pod, ip string) (*corev1.Pod, error)
	}
}

// mustFail carries an error from must to recoverMust.
type mustFail struct{ err error }

// must returns v, or aborts the test on err: every test that uses it
// starts with defer recoverMust(t), which turns the abort into t.Fatal.
func must[T any](v T, err error) T {
	if err != nil {
		panic(mustFail{err})
	}
	return v
}

// recoverMust fails the test with the error must aborted on.
func recoverMust(t *testing.T) {
	if r := recover(); r != nil {
		f, ok := r.(mustFail)
		if !ok {
			panic(r)
		}
		t.Helper()
		t.Fatal(f.err)
	}
}

// seed creates, in a new namespace monitored by the env's mesh, a
// ServiceAccount, a Service, a pod made Ready by the kubelet stand-in, and
// one object of each SMI kind; the TrafficTarget is malformed (a UDPRoute
// rule and a Group source, which the CRD schema lets through).
func (e *env) seed(prefix, ip string) *fixture {
	t := e.t
	ctx := t.Context()
	cs := cluster.Clientset()
	clients := apiClients(t)
	ns := cluster.Namespace(t, prefix, map[string]string{layout.LabelMonitoredBy: e.mesh})
	f := &fixture{ns: ns}
	f.nsUID = string(must(cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})).UID)
	f.defSA = must(cs.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{}))
	f.sa = must(cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "bookstore"}}, metav1.CreateOptions{}))
	f.svc = must(cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "bookstore"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "bookstore"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}, metav1.CreateOptions{}))
	pod := must(cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "bookstore-0", Labels: map[string]string{"app": "bookstore", layout.LabelProxyUUID: "uuid-0"}},
		Spec: corev1.PodSpec{ServiceAccountName: "bookstore", Containers: []corev1.Container{{
			Name: "bookstore", Image: "example.com/bookstore:v1", Ports: []corev1.ContainerPort{{ContainerPort: 8080}},
		}}},
	}, metav1.CreateOptions{}))
	kubelet := cluster.Kubelet("node-"+e.mesh, "zone-a")
	f.kubelet = kubelet
	f.pod = must(kubelet.MakeReady(ctx, pod, ip))

	f.tt = must(clients.Access.AccessV1alpha3().TrafficTargets(ns).Create(ctx, &accessv1alpha3.TrafficTarget{
		ObjectMeta: metav1.ObjectMeta{Name: "bookstore-access"},
		Spec: accessv1alpha3.TrafficTargetSpec{
			Destination: accessv1alpha3.IdentityBindingSubject{Kind: "ServiceAccount", Name: "bookstore", Namespace: ns},
			Sources:     []accessv1alpha3.IdentityBindingSubject{{Kind: "Group", Name: "buyers"}},
			Rules: []accessv1alpha3.TrafficTargetRule{
				{Kind: "HTTPRouteGroup", Name: "bookstore-routes", Matches: []string{"buy"}},
				{Kind: "UDPRoute", Name: "dns"},
			},
		},
	}, metav1.CreateOptions{}))
	f.hrg = must(clients.Specs.SpecsV1alpha4().HTTPRouteGroups(ns).Create(ctx, &specsv1alpha4.HTTPRouteGroup{
		ObjectMeta: metav1.ObjectMeta{Name: "bookstore-routes"},
		Spec: specsv1alpha4.HTTPRouteGroupSpec{Matches: []specsv1alpha4.HTTPMatch{{
			Name: "buy", Methods: []string{"GET"}, PathRegex: "/buy", Headers: map[string]string{"user-agent": ".*"},
		}}},
	}, metav1.CreateOptions{}))
	f.tcp = must(clients.Specs.SpecsV1alpha4().TCPRoutes(ns).Create(ctx, &specsv1alpha4.TCPRoute{
		ObjectMeta: metav1.ObjectMeta{Name: "bookstore-tcp"},
		Spec:       specsv1alpha4.TCPRouteSpec{Matches: specsv1alpha4.TCPMatch{Name: "raw", Ports: []int{9000}}},
	}, metav1.CreateOptions{}))
	f.split = must(clients.Split.SplitV1alpha2().TrafficSplits(ns).Create(ctx, &splitv1alpha2.TrafficSplit{
		ObjectMeta: metav1.ObjectMeta{Name: "bookstore-split"},
		Spec: splitv1alpha2.TrafficSplitSpec{Service: "bookstore", Backends: []splitv1alpha2.TrafficSplitBackend{
			{Service: "bookstore-v1", Weight: 80}, {Service: "bookstore-v2", Weight: 20},
		}},
	}, metav1.CreateOptions{}))
	// An OSM Egress as OSM's docs write it, with a protocol the CRD lets
	// through (the compiler judges it).
	f.egress = must(cluster.Dynamic().Resource(osmpolicy.EgressGVR).Namespace(ns).Create(ctx, &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "policy.openservicemesh.io/v1alpha1", "kind": "Egress",
		"metadata": map[string]any{"name": "httpbin"},
		"spec": map[string]any{
			"sources": []any{map[string]any{"kind": "ServiceAccount", "name": "bookstore", "namespace": ns}},
			"hosts":   []any{"httpbin.org"},
			"ports":   []any{map[string]any{"number": int64(80), "protocol": "http"}, map[string]any{"number": int64(53), "protocol": "udp"}},
			"matches": []any{map[string]any{"apiGroup": "specs.smi-spec.io/v1alpha4", "kind": "HTTPRouteGroup", "name": "bookstore-routes"}},
		},
	}}, metav1.CreateOptions{}))
	// An OSM UpstreamTrafficSetting, with a duration that does not parse
	// (the compiler judges it).
	f.uts = must(cluster.Dynamic().Resource(osmpolicy.UpstreamTrafficSettingGVR).Namespace(ns).Create(ctx, &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "policy.openservicemesh.io/v1alpha1", "kind": "UpstreamTrafficSetting",
		"metadata": map[string]any{"name": "bookstore"},
		"spec": map[string]any{
			"host":               "bookstore." + ns + ".svc.cluster.local",
			"connectionSettings": map[string]any{"tcp": map[string]any{"maxConnections": int64(50), "connectTimeout": "2 seconds"}},
			"rateLimit":          map[string]any{"local": map[string]any{"tcp": map[string]any{"connections": int64(5), "unit": "second"}}},
		},
	}}, metav1.CreateOptions{}))
	// An OSM IngressBackend as OSM's ingress guide writes it, with a source
	// kind the CRD lets through (the compiler judges it).
	f.ingress = must(cluster.Dynamic().Resource(osmpolicy.IngressBackendGVR).Namespace(ns).Create(ctx, &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "policy.openservicemesh.io/v1alpha1", "kind": "IngressBackend",
		"metadata": map[string]any{"name": "bookstore"},
		"spec": map[string]any{
			"backends": []any{map[string]any{"name": "bookstore", "port": map[string]any{"number": int64(14001), "protocol": "https"},
				"tls": map[string]any{"skipClientCertValidation": false, "sniHosts": []any{"bookstore." + ns + ".svc.cluster.local"}}}},
			"sources": []any{map[string]any{"kind": "Service", "name": "ingress-nginx-controller", "namespace": "ingress-nginx"},
				map[string]any{"kind": "ServiceAccount", "name": "gateway"}},
		},
	}}, metav1.CreateOptions{}))
	return f
}

// createMeshConfig creates the MeshConfig in the env's control-plane
// namespace.
func (e *env) createMeshConfig() *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "config.openservicemesh.io/v1alpha1",
		"kind":       "MeshConfig",
		"metadata":   map[string]any{"name": "osm-mesh-config"},
		"spec": map[string]any{
			"traffic":     map[string]any{"enablePermissiveTrafficPolicyMode": true, "outboundPortExclusionList": []any{int64(6379)}},
			"certificate": map[string]any{"serviceCertValidityDuration": "12h"},
		},
	}}
	return must(cluster.Dynamic().Resource(meshconfig.GVR).Namespace(e.cp).Create(e.t.Context(), u, metav1.CreateOptions{}))
}

// expected is the exact normalised content the fixture must produce, except
// the EndpointSlice, whose name the controller picks (see expectSlice).
func (f *fixture) expected() map[string]proto.Message {
	ns := f.ns
	m := func(o metav1.Object) *meshv1.ObjectMeta {
		return &meshv1.ObjectMeta{Namespace: o.GetNamespace(), Name: o.GetName(), Uid: string(o.GetUID()), Generation: o.GetGeneration()}
	}
	egressHosts, _, _ := unstructured.NestedStringSlice(f.egress.Object, "spec", "hosts")
	return map[string]proto.Message{
		layout.NamespaceKey(ns): &meshv1.Namespace{
			Meta:           &meshv1.ObjectMeta{Name: ns, Uid: f.nsUID},
			MonitoredBy:    f.monitoredBy(),
			OsmAnnotations: map[string]string{layout.LabelMonitoredBy: f.monitoredBy()},
		},
		layout.ObservedKey(layout.KindServiceAccount, ns, "default"):   &meshv1.ServiceAccount{Meta: m(f.defSA)},
		layout.ObservedKey(layout.KindServiceAccount, ns, "bookstore"): &meshv1.ServiceAccount{Meta: m(f.sa)},
		layout.ObservedKey(layout.KindService, ns, "bookstore"): &meshv1.Service{
			Meta:       m(f.svc),
			Ports:      []*meshv1.ServicePort{{Name: "http", Port: 80, TargetPort: &meshv1.ServicePort_TargetPortNumber{TargetPortNumber: 8080}, Protocol: "TCP"}},
			Selector:   map[string]string{"app": "bookstore"},
			ClusterIps: f.svc.Spec.ClusterIPs,
			Type:       "ClusterIP",
		},
		layout.ObservedKey(layout.KindPod, ns, "bookstore-0"): &meshv1.Pod{
			Meta:           m(f.pod),
			Labels:         map[string]string{"app": "bookstore", layout.LabelProxyUUID: "uuid-0"},
			ServiceAccount: "bookstore",
			PodIps:         []string{f.pod.Status.PodIP},
			ProxyUuid:      "uuid-0",
			NodeName:       f.pod.Spec.NodeName,
			Phase:          meshv1.PodPhase_POD_PHASE_RUNNING,
			Ready:          true,
		},
		layout.ObservedKey(layout.KindTrafficTarget, ns, "bookstore-access"): &meshv1.TrafficTarget{
			Meta:        m(f.tt),
			ApiVersion:  "access.smi-spec.io/v1alpha3",
			Destination: &meshv1.IdentityBindingSubject{Kind: "ServiceAccount", Name: "bookstore", Namespace: ns},
			Sources:     []*meshv1.IdentityBindingSubject{{Kind: "Group", Name: "buyers"}},
			Rules: []*meshv1.TrafficTargetRule{
				{Kind: "HTTPRouteGroup", Name: "bookstore-routes", Matches: []string{"buy"}},
				{Kind: "UDPRoute", Name: "dns"},
			},
		},
		layout.ObservedKey(layout.KindHTTPRouteGroup, ns, "bookstore-routes"): &meshv1.HTTPRouteGroup{
			Meta:       m(f.hrg),
			ApiVersion: "specs.smi-spec.io/v1alpha4",
			Matches:    []*meshv1.HTTPMatch{{Name: "buy", Methods: []string{"GET"}, PathRegex: "/buy", Headers: map[string]string{"user-agent": ".*"}}},
		},
		layout.ObservedKey(layout.KindTCPRoute, ns, "bookstore-tcp"): &meshv1.TCPRoute{
			Meta:       m(f.tcp),
			ApiVersion: "specs.smi-spec.io/v1alpha4",
			Matches:    &meshv1.TCPMatch{Name: "raw", Ports: []int32{9000}},
		},
		layout.ObservedKey(layout.KindTrafficSplit, ns, "bookstore-split"): &meshv1.TrafficSplit{
			Meta:       m(f.split),
			ApiVersion: "split.smi-spec.io/v1alpha2",
			Service:    "bookstore",
			Backends:   []*meshv1.TrafficSplitBackend{{Service: "bookstore-v1", Weight: 80}, {Service: "bookstore-v2", Weight: 20}},
		},
		layout.ObservedKey(layout.KindEgress, ns, "httpbin"): &meshv1.Egress{
			Meta:       m(f.egress),
			ApiVersion: "policy.openservicemesh.io/v1alpha1",
			Sources:    []*meshv1.EgressSource{{Kind: "ServiceAccount", Name: "bookstore", Namespace: ns}},
			Hosts:      egressHosts,
			Ports:      []*meshv1.EgressPort{{Number: 80, Protocol: "http"}, {Number: 53, Protocol: "udp"}},
			Matches:    []*meshv1.TypedLocalObjectReference{{ApiGroup: "specs.smi-spec.io/v1alpha4", Kind: "HTTPRouteGroup", Name: "bookstore-routes"}},
		},
		layout.ObservedKey(layout.KindUpstreamTrafficSetting, ns, "bookstore"): &meshv1.UpstreamTrafficSetting{
			Meta:               m(f.uts),
			ApiVersion:         "policy.openservicemesh.io/v1alpha1",
			Host:               "bookstore." + ns + ".svc.cluster.local",
			ConnectionSettings: &meshv1.UpstreamConnectionSettings{Tcp: &meshv1.UpstreamTCPConnectionSettings{MaxConnections: proto.Int64(50), ConnectTimeout: "2 seconds"}},
			RateLimit:          &meshv1.UpstreamRateLimit{Local: &meshv1.UpstreamLocalRateLimit{Tcp: &meshv1.TCPLocalRateLimit{Connections: 5, Unit: "second"}}},
		},
		layout.ObservedKey(layout.KindIngressBackend, ns, "bookstore"): &meshv1.IngressBackend{
			Meta:       m(f.ingress),
			ApiVersion: "policy.openservicemesh.io/v1alpha1",
			Backends: []*meshv1.IngressBackendBackend{{Name: "bookstore", Port: &meshv1.IngressBackendPort{Number: 14001, Protocol: "https"},
				Tls: &meshv1.IngressBackendTLS{SniHosts: []string{"bookstore." + ns + ".svc.cluster.local"}}}},
			Sources: []*meshv1.IngressSource{{Kind: "Service", Name: "ingress-nginx-controller", Namespace: "ingress-nginx"},
				{Kind: "ServiceAccount", Name: "gateway"}},
		},
	}
}

func (f *fixture) monitoredBy() string {
	ns, _ := cluster.Clientset().CoreV1().Namespaces().Get(context.Background(), f.ns, metav1.GetOptions{})
	return ns.Labels[layout.LabelMonitoredBy]
}

// expectSlice adds the EndpointSlice the controller wrote for the fixture's
// Service, with the pod as its one ready endpoint.
func (f *fixture) expectSlice(t *testing.T, want map[string]proto.Message, ip string) error {
	slices, err := cluster.Clientset().DiscoveryV1().EndpointSlices(f.ns).List(context.Background(),
		metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=bookstore"})
	if err != nil {
		return err
	}
	if len(slices.Items) != 1 || len(slices.Items[0].Endpoints) != 1 || slices.Items[0].Endpoints[0].Addresses[0] != ip {
		return fmt.Errorf("endpointslice controller has not listed %s yet", ip)
	}
	s := slices.Items[0]
	want[layout.ObservedKey(layout.KindEndpointSlice, f.ns, s.Name)] = &meshv1.EndpointSlice{
		Meta:        &meshv1.ObjectMeta{Namespace: f.ns, Name: s.Name, Uid: string(s.UID)},
		Service:     &meshv1.NamespacedName{Namespace: f.ns, Name: "bookstore"},
		AddressType: meshv1.AddressType_ADDRESS_TYPE_IPV4,
		Ports:       []*meshv1.EndpointPort{{Name: "http", Port: proto.Int32(8080), Protocol: "TCP"}},
		Endpoints: []*meshv1.Endpoint{{
			Addresses:  []string{ip},
			Conditions: &meshv1.EndpointConditions{Ready: true, Serving: true},
			TargetRef:  &meshv1.ObjectRef{Kind: "Pod", Namespace: f.ns, Name: "bookstore-0", Uid: string(f.pod.UID)},
			NodeName:   f.pod.Spec.NodeName,
			Zone:       "zone-a",
		}},
	}
	return nil
}

// waitContent waits until the bucket's keys for namespace ns (plus the
// MeshConfig when mc is set) are exactly want.
func (e *env) waitContent(ns string, want func() (map[string]proto.Message, error)) {
	e.t.Helper()
	var diff string
	apptest.Eventually(e.t, "the bucket to hold the expected content", 30*time.Second, func() error {
		w, err := want()
		if err != nil {
			return err
		}
		c := e.contents()
		got := map[string]proto.Message{}
		for _, k := range keysUnder(c, ns) {
			got[k] = c[k]
		}
		if diff = cmp.Diff(w, got, protocmp.Transform()); diff != "" {
			return fmt.Errorf("bucket content for %s (-want +got):\n%s", ns, diff)
		}
		return nil
	})
}

func TestPublishesExactNormalisedState(t *testing.T) {
	defer recoverMust(t)
	e := newEnv(t)
	const ip = "10.244.10.10"
	f := e.seed("books", ip)
	mc := e.createMeshConfig()
	plainNS := cluster.Namespace(t, "plain", nil)
	ctx := t.Context()
	cs := cluster.Clientset()
	must(cs.CoreV1().Services(plainNS).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "outside"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}, metav1.CreateOptions{}))
	otherMesh := cluster.Namespace(t, "othermesh", map[string]string{layout.LabelMonitoredBy: "another-mesh"})

	e.start("watcher-a")
	marker := e.waitSynced(0, time.Minute)
	if marker.Epoch != 1 || marker.WatcherId != "watcher-a" {
		t.Errorf("first marker: epoch %d watcher %q, want epoch 1 by watcher-a", marker.Epoch, marker.WatcherId)
	}
	e.waitContent(f.ns, func() (map[string]proto.Message, error) {
		want := f.expected()
		return want, f.expectSlice(t, want, ip)
	})

	c := e.contents()
	mcKey := layout.ObservedKey(layout.KindMeshConfig, e.cp, "osm-mesh-config")
	wantMC := &meshv1.MeshConfig{
		Meta:        &meshv1.ObjectMeta{Namespace: e.cp, Name: "osm-mesh-config", Uid: string(mc.GetUID()), Generation: mc.GetGeneration()},
		ApiVersion:  "config.openservicemesh.io/v1alpha1",
		Traffic:     &meshv1.TrafficSpec{EnablePermissiveTrafficPolicyMode: true, OutboundPortExclusionList: []int32{6379}},
		Certificate: &meshv1.CertificateSpec{ServiceCertValidityDuration: durationpb.New(12 * time.Hour)},
	}
	if d := cmp.Diff(wantMC, c[mcKey], protocmp.Transform()); d != "" {
		t.Errorf("MeshConfig (-want +got):\n%s", d)
	}
	// Nothing outside the mesh: the whole bucket is the fixture's namespace
	// and the MeshConfig.
	for k := range c {
		if k == mcKey {
			continue
		}
		if o, _ := layout.ParseObserved(k); o.Namespace != f.ns && o.Name != f.ns {
			t.Errorf("key %s published from outside the mesh (plain %s, other mesh %s)", k, plainNS, otherMesh)
		}
	}
	// The marker counts what was published at the end of the initial list.
	if marker.ObjectCounts["MeshConfig"] != 1 || marker.ObjectCounts["TrafficTarget"] != 1 || marker.ObjectCounts["Namespace"] != 1 || marker.ObjectCounts["Egress"] != 1 {
		t.Errorf("marker object counts = %v", marker.ObjectCounts)
	}
}

func TestFollowsUpdatesAndDeletes(t *testing.T) {
	defer recoverMust(t)
	e := newEnv(t)
	const ip = "10.244.11.10"
	f := e.seed("follow", ip)
	in := e.start("watcher-a")
	e.waitSynced(0, time.Minute)
	e.waitContent(f.ns, func() (map[string]proto.Message, error) {
		want := f.expected()
		return want, f.expectSlice(t, want, ip)
	})
	ctx := t.Context()
	cs := cluster.Clientset()
	clients := apiClients(t)
	if n, err := apptest.MetricValue(in.admin, "osm_watcher_leader", ""); err != nil || n != 1 {
		t.Errorf("osm_watcher_leader = %v, %v; want 1", n, err)
	}
	if n, err := apptest.MetricValue(in.admin, "osm_watcher_objects", `kind="Pod"`); err != nil || n != 1 {
		t.Errorf("osm_watcher_objects{kind=Pod} = %v, %v; want 1", n, err)
	}

	// A pod IP change reaches the pod and its EndpointSlice.
	const ip2 = "10.244.11.20"
	pod := must(cs.CoreV1().Pods(f.ns).Get(ctx, "bookstore-0", metav1.GetOptions{}))
	f.pod = must(f.kubelet.MakeReady(ctx, pod, ip2))
	// A Service port change, a TrafficSplit weight change and a TCPRoute delete.
	svc := must(cs.CoreV1().Services(f.ns).Get(ctx, "bookstore", metav1.GetOptions{}))
	svc.Spec.Ports[0].Port = 8000
	f.svc = must(cs.CoreV1().Services(f.ns).Update(ctx, svc, metav1.UpdateOptions{}))
	split := must(clients.Split.SplitV1alpha2().TrafficSplits(f.ns).Get(ctx, "bookstore-split", metav1.GetOptions{}))
	split.Spec.Backends[0].Weight = 50
	f.split = must(clients.Split.SplitV1alpha2().TrafficSplits(f.ns).Update(ctx, split, metav1.UpdateOptions{}))
	if err := clients.Specs.SpecsV1alpha4().TCPRoutes(f.ns).Delete(ctx, "bookstore-tcp", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// And an Egress host added.
	eg := must(cluster.Dynamic().Resource(osmpolicy.EgressGVR).Namespace(f.ns).Get(ctx, "httpbin", metav1.GetOptions{}))
	must(0, unstructured.SetNestedStringSlice(eg.Object, []string{"httpbin.org", "api.example.com"}, "spec", "hosts"))
	f.egress = must(cluster.Dynamic().Resource(osmpolicy.EgressGVR).Namespace(f.ns).Update(ctx, eg, metav1.UpdateOptions{}))
	e.waitContent(f.ns, func() (map[string]proto.Message, error) {
		want := f.expected()
		if h := want[layout.ObservedKey(layout.KindEgress, f.ns, "httpbin")].(*meshv1.Egress).Hosts; len(h) != 2 {
			return nil, fmt.Errorf("the Egress update was not stored: hosts %v", h)
		}
		delete(want, layout.ObservedKey(layout.KindTCPRoute, f.ns, "bookstore-tcp"))
		want[layout.ObservedKey(layout.KindService, f.ns, "bookstore")].(*meshv1.Service).Ports[0].Port = 8000
		want[layout.ObservedKey(layout.KindTrafficSplit, f.ns, "bookstore-split")].(*meshv1.TrafficSplit).Backends[0].Weight = 50
		return want, f.expectSlice(t, want, ip2)
	})

	// An irrelevant change writes nothing. (The endpointslice controller
	// may still be settling the slice: wait until the bucket is quiet.)
	e.quiesce(time.Second)
	before := e.lastSeq()
	beforeContent := e.contents()
	pod = must(cs.CoreV1().Pods(f.ns).Get(ctx, "bookstore-0", metav1.GetOptions{}))
	pod.Annotations = map[string]string{"example.com/last-seen": time.Now().String()}
	must(cs.CoreV1().Pods(f.ns).Update(ctx, pod, metav1.UpdateOptions{}))
	svc = must(cs.CoreV1().Services(f.ns).Get(ctx, "bookstore", metav1.GetOptions{}))
	svc.Labels = map[string]string{"release": "r2"}
	must(cs.CoreV1().Services(f.ns).Update(ctx, svc, metav1.UpdateOptions{}))
	time.Sleep(time.Second)
	apptest.Eventually(t, "both no-op changes counted as skipped", 10*time.Second, func() error {
		// Both changes reached the watcher and were skipped as no-ops.
		for _, kind := range []string{"pod", "service"} {
			if n, err := apptest.MetricValue(in.admin, "osm_watcher_kv_skipped_total", `kind="`+kind+`"`); err != nil || n < 1 {
				return fmt.Errorf("skipped %s writes = %v, %v", kind, n, err)
			}
		}
		return nil
	})
	if after := e.lastSeq(); after != before {
		t.Errorf("irrelevant changes wrote %d KV entries, want 0: %s", after-before, cmp.Diff(beforeContent, e.contents(), protocmp.Transform()))
	}

	// The namespace leaves the mesh: every key of it is deleted.
	nsObj := must(cs.CoreV1().Namespaces().Get(ctx, f.ns, metav1.GetOptions{}))
	delete(nsObj.Labels, layout.LabelMonitoredBy)
	must(cs.CoreV1().Namespaces().Update(ctx, nsObj, metav1.UpdateOptions{}))
	e.waitContent(f.ns, func() (map[string]proto.Message, error) { return map[string]proto.Message{}, nil })

	// It joins again, marked ignored: only the Namespace itself is published.
	nsObj = must(cs.CoreV1().Namespaces().Get(ctx, f.ns, metav1.GetOptions{}))
	nsObj.Labels[layout.LabelMonitoredBy] = e.mesh
	nsObj.Labels[layout.LabelIgnore] = "true"
	must(cs.CoreV1().Namespaces().Update(ctx, nsObj, metav1.UpdateOptions{}))
	e.waitContent(f.ns, func() (map[string]proto.Message, error) {
		return map[string]proto.Message{layout.NamespaceKey(f.ns): &meshv1.Namespace{
			Meta:           &meshv1.ObjectMeta{Name: f.ns, Uid: f.nsUID},
			MonitoredBy:    e.mesh,
			Ignored:        true,
			OsmAnnotations: map[string]string{layout.LabelMonitoredBy: e.mesh, layout.LabelIgnore: "true"},
		}}, nil
	})

	// The ignore label goes: everything comes back.
	nsObj = must(cs.CoreV1().Namespaces().Get(ctx, f.ns, metav1.GetOptions{}))
	delete(nsObj.Labels, layout.LabelIgnore)
	must(cs.CoreV1().Namespaces().Update(ctx, nsObj, metav1.UpdateOptions{}))
	e.waitContent(f.ns, func() (map[string]proto.Message, error) {
		want := f.expected()
		delete(want, layout.ObservedKey(layout.KindTCPRoute, f.ns, "bookstore-tcp"))
		want[layout.ObservedKey(layout.KindService, f.ns, "bookstore")].(*meshv1.Service).Ports[0].Port = 8000
		want[layout.ObservedKey(layout.KindTrafficSplit, f.ns, "bookstore-split")].(*meshv1.TrafficSplit).Backends[0].Weight = 50
		return want, f.expectSlice(t, want, ip2)
	})
}

func TestRestartWritesNothingButANewEpoch(t *testing.T) {
	defer recoverMust(t)
	e := newEnv(t)
	const ip = "10.244.12.10"
	f := e.seed("restart", ip)
	e.createMeshConfig()
	a := e.start("watcher-a")
	first := e.waitSynced(0, time.Minute)
	e.waitContent(f.ns, func() (map[string]proto.Message, error) {
		want := f.expected()
		return want, f.expectSlice(t, want, ip)
	})
	a.stop(t)
	before := e.lastSeq()
	content := e.contents()

	e.start("watcher-b")
	second := e.waitSynced(first.Epoch, time.Minute)
	if second.Epoch != first.Epoch+1 {
		t.Errorf("epoch after restart = %d, want %d", second.Epoch, first.Epoch+1)
	}
	// The new epoch's claim of the bucket and its two markers (LISTING,
	// then SYNCED) are the only writes.
	if got := e.lastSeq() - before; got != 3 {
		t.Errorf("restart wrote %d KV entries, want 3 (the claim, the LISTING and SYNCED markers)", got)
	}
	if d := cmp.Diff(content, e.contents(), protocmp.Transform()); d != "" {
		t.Errorf("content changed across the restart (-before +after):\n%s", d)
	}
	var n uint64
	for _, c := range second.ObjectCounts {
		n += c
	}
	if n != uint64(len(content)) {
		t.Errorf("marker counts %v total %d, the bucket holds %d keys", second.ObjectCounts, n, len(content))
	}
}

func TestStandbyTakesOverAndReconciles(t *testing.T) {
	defer recoverMust(t)
	e := newEnv(t)
	const ip = "10.244.13.10"
	f := e.seed("ha", ip)
	// watcher-a keeps its Lease at shutdown, like a crashed process.
	a := e.start("watcher-a", "--release-lease=false")
	first := e.waitSynced(0, time.Minute)
	e.waitContent(f.ns, func() (map[string]proto.Message, error) {
		want := f.expected()
		return want, f.expectSlice(t, want, ip)
	})
	b := e.start("watcher-b")
	apptest.Eventually(t, "watcher-b ready", 10*time.Second, func() error { return apptest.Ready(b.admin) })
	seq := e.lastSeq()
	time.Sleep(time.Second)
	if got := e.lastSeq(); got != seq {
		t.Fatalf("the standby wrote %d KV entries while the leader was alive", got-seq)
	}

	killed := time.Now()
	a.stop(t)
	// While no instance leads: a new Service (no selector, so no
	// EndpointSlice) and a deleted TrafficSplit.
	ctx := t.Context()
	cs := cluster.Clientset()
	clients := apiClients(t)
	late := must(cs.CoreV1().Services(f.ns).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "late"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "tcp", Port: 9000, TargetPort: intstr.FromInt32(9000)}}}}, metav1.CreateOptions{}))
	if err := clients.Split.SplitV1alpha2().TrafficSplits(f.ns).Delete(ctx, "bookstore-split", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if m := e.marker(); m.Epoch != first.Epoch {
		t.Fatalf("a new epoch started before the lease expired: %v", m)
	}

	second := e.waitSynced(first.Epoch, 15*time.Second)
	took := time.Since(killed)
	if second.WatcherId != "watcher-b" || second.Epoch != first.Epoch+1 {
		t.Errorf("marker after takeover: %v, want epoch %d by watcher-b", second, first.Epoch+1)
	}
	if took > 3*time.Second+5*time.Second {
		t.Errorf("takeover took %s; the lease duration is 3s", took)
	}
	t.Logf("standby took over and synced %s after the leader died (lease 3s)", took)
	e.waitContent(f.ns, func() (map[string]proto.Message, error) {
		want := f.expected()
		delete(want, layout.ObservedKey(layout.KindTrafficSplit, f.ns, "bookstore-split"))
		want[layout.ObservedKey(layout.KindService, f.ns, "late")] = &meshv1.Service{
			Meta:       &meshv1.ObjectMeta{Namespace: f.ns, Name: "late", Uid: string(late.UID)},
			Ports:      []*meshv1.ServicePort{{Name: "tcp", Port: 9000, TargetPort: &meshv1.ServicePort_TargetPortNumber{TargetPortNumber: 9000}, Protocol: "TCP"}},
			ClusterIps: late.Spec.ClusterIPs,
			Type:       "ClusterIP",
		}
		return want, f.expectSlice(t, want, ip)
	})
	// Only the claim, the two changes and the two markers were written: the
	// takeover did not rewrite what was already right.
	if got := e.lastSeq() - seq; got != 5 {
		t.Errorf("takeover wrote %d KV entries, want 5 (the claim, LISTING, one put, one delete, SYNCED)", got)
	}
}

func TestRejectionBecomesAnEvent(t *testing.T) {
	defer recoverMust(t)
	e := newEnv(t)
	f := e.seed("status", "10.244.14.10")
	e.start("watcher-a")
	e.waitSynced(0, time.Minute)

	st := &meshv1.PolicyStatus{
		Object: &meshv1.ObjectRef{ApiVersion: "access.smi-spec.io/v1alpha3", Kind: "TrafficTarget",
			Namespace: f.ns, Name: f.tt.Name, Uid: string(f.tt.UID)},
		ObservedGeneration: f.tt.Generation,
		Condition:          meshv1.PolicyCondition_POLICY_CONDITION_REJECTED,
		Reason:             "UnknownRuleKind",
		FieldPath:          "spec.rules[1].kind",
		Message:            `rule kind "UDPRoute" is not supported; use HTTPRouteGroup or TCPRoute`,
	}
	accepted := proto.Clone(st).(*meshv1.PolicyStatus)
	accepted.Object.Name = f.hrg.Name
	accepted.Object.Kind = "HTTPRouteGroup"
	accepted.Condition = meshv1.PolicyCondition_POLICY_CONDITION_ACCEPTED
	accepted.Reason = "Accepted"
	for _, m := range []*meshv1.PolicyStatus{st, accepted} {
		data, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		subj := strings.Join([]string{"mesh.status.policy", strings.ToLower(m.Object.Kind), f.ns, m.Object.Name}, ".")
		if err := e.conn.NATS().Publish(subj, data); err != nil {
			t.Fatal(err)
		}
	}
	var got []corev1.Event
	apptest.Eventually(t, "the watcher's Events", 20*time.Second, func() error {
		list, err := cluster.Clientset().CoreV1().Events(f.ns).List(t.Context(), metav1.ListOptions{})
		if err != nil {
			return err
		}
		got = nil
		for _, ev := range list.Items {
			if ev.Source.Component == "osm-smi-watcher" {
				got = append(got, ev)
			}
		}
		if len(got) == 0 {
			return errors.New("not yet")
		}
		return nil
	})
	time.Sleep(500 * time.Millisecond) // an Event for the accepted verdict would have arrived by now
	list := must(cluster.Clientset().CoreV1().Events(f.ns).List(t.Context(), metav1.ListOptions{}))
	got = got[:0]
	for _, ev := range list.Items {
		if ev.Source.Component == "osm-smi-watcher" {
			got = append(got, ev)
		}
	}
	if len(got) != 1 {
		t.Fatalf("got %d watcher Events, want 1 (only the rejection): %+v", len(got), got)
	}
	ev := got[0]
	wantRef := corev1.ObjectReference{APIVersion: "access.smi-spec.io/v1alpha3", Kind: "TrafficTarget", Namespace: f.ns, Name: f.tt.Name, UID: types.UID(f.tt.UID)}
	if ev.InvolvedObject != wantRef {
		t.Errorf("involved object = %+v, want %+v", ev.InvolvedObject, wantRef)
	}
	wantMsg := `spec.rules[1].kind: rule kind "UDPRoute" is not supported; use HTTPRouteGroup or TCPRoute (generation 1)`
	if ev.Type != corev1.EventTypeWarning || ev.Reason != "UnknownRuleKind" || ev.Message != wantMsg {
		t.Errorf("event = %s %s %q, want Warning UnknownRuleKind %q", ev.Type, ev.Reason, ev.Message, wantMsg)
	}
}

func apiClients(t testing.TB) watch.Clients {
	t.Helper()
	c, err := service.Clients(cluster.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestTooLargeObjectDoesNotStallTheTakeover: an object whose normalised
// value exceeds the NATS payload limit is reported and skipped, not retried
// forever: the takeover still reaches SYNCED and the rest is published.
func TestTooLargeObjectDoesNotStallTheTakeover(t *testing.T) {
	defer recoverMust(t)
	e := newEnv(t)
	const ip = "10.244.12.30"
	f := e.seed("toolarge", ip)
	e.createMeshConfig()
	// About 1.1 MB of path regexes: under etcd's limit, over NATS's; in
	// 250 matches, as the CRD allows at most 256.
	matches := make([]specsv1alpha4.HTTPMatch, 0, 250)
	for i := range cap(matches) {
		matches = append(matches, specsv1alpha4.HTTPMatch{Name: fmt.Sprintf("m%d", i), PathRegex: "/" + strings.Repeat("x", 4400) + fmt.Sprint(i)})
	}
	must(apiClients(t).Specs.SpecsV1alpha4().HTTPRouteGroups(f.ns).Create(t.Context(), &specsv1alpha4.HTTPRouteGroup{
		ObjectMeta: metav1.ObjectMeta{Name: "huge"},
		Spec:       specsv1alpha4.HTTPRouteGroupSpec{Matches: matches},
	}, metav1.CreateOptions{}))
	w := e.start("watcher-a")
	e.waitSynced(0, time.Minute)
	e.waitContent(f.ns, func() (map[string]proto.Message, error) {
		want := f.expected()
		return want, f.expectSlice(t, want, ip)
	})
	if !strings.Contains(w.logs.String(), "too large to publish") {
		t.Errorf("no log line names the object that is too large:\n%s", w.logs.String())
	}
}
