package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	sotwclient "github.com/envoyproxy/go-control-plane/pkg/client/sotw/v3"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/tests/stack"
)

// listenerAddrs are the ip:port addresses of a listener, its address first.
func listenerAddrs(l *listenerv3.Listener) []string {
	addr := func(sa interface {
		GetAddress() string
		GetPortValue() uint32
	}) string {
		return fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue())
	}
	out := []string{addr(l.GetAddress().GetSocketAddress())}
	for _, a := range l.GetAdditionalAddresses() {
		out = append(out, addr(a.GetAddress().GetSocketAddress()))
	}
	return out
}

// clusterSANs are the exact URI SANs the named cluster's upstream TLS
// accepts; nil when the cluster is absent.
func clusterSANs(t *testing.T, rs []any, name string) []string {
	t.Helper()
	for _, r := range rs {
		c, ok := r.(*clusterv3.Cluster)
		if !ok || c.GetName() != name {
			continue
		}
		tls := &tlsv3.UpstreamTlsContext{}
		if err := c.GetTransportSocket().GetTypedConfig().UnmarshalTo(tls); err != nil {
			t.Fatal(err)
		}
		out := []string{}
		for _, m := range tls.GetCommonTlsContext().GetCombinedValidationContext().GetDefaultValidationContext().GetMatchTypedSubjectAltNames() {
			out = append(out, m.GetMatcher().GetExact())
		}
		return out
	}
	return nil
}

// fromFirst is nextUntil that checks the response already read (first)
// before waiting for the next ones: the EndpointSlice controller may
// publish after the first generation.
func fromFirst(t *testing.T, c sotwclient.ADSClient, first []any, what string, check func([]any) error) {
	t.Helper()
	if check(first) == nil {
		return
	}
	nextUntil(t, c, what, check)
}

// TestServiceShapesFlow runs the Service shapes through the real apiserver
// (its EndpointSlice controller), the watcher, the compiler and an edge to
// a real xDS client: a headless StatefulSet-style Service gets a listener
// on its pod's address and an ORIGINAL_DST cluster checking its identity,
// and a second pod that becomes ready is added to the listener; its UDP
// port compiles to nothing. A Service without a selector and without
// openservicemesh.io/service-accounts is refused with an Event naming the
// annotation and has no cluster; annotated, its cluster appears, accepting
// the declared identity, with the hand-written slice's endpoint.
func TestServiceShapesFlow(t *testing.T) {
	ctx := t.Context()
	run := uniq()
	appNS, meshName, mcName := "shapes-app"+run, "shapes"+run, "shapes-mesh-config"+run
	namespace(t, "osm-system", nil)
	namespace(t, appNS, map[string]string{layout.LabelMonitoredBy: meshName}, "client", "legacy")
	meshConfig(t, mcName, true)
	kubelet := node(t, "shapes-node")
	svcs := cluster.Clientset().CoreV1().Services(appNS)
	tcp := "tcp"
	if _, err := svcs.Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "cache"},
		Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Selector: map[string]string{"app": "cache"}, Ports: []corev1.ServicePort{
			{Name: "redis", Port: 14001, TargetPort: intstr.FromInt32(14001), AppProtocol: &tcp},
			{Name: "gossip", Port: 7946, Protocol: corev1.ProtocolUDP},
		}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := svcs.Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "legacy"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "pg", Port: 5432, AppProtocol: &tcp}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	port, ready, pg := int32(5432), true, "pg"
	if _, err := cluster.Clientset().DiscoveryV1().EndpointSlices(appNS).Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "legacy-1", Labels: map[string]string{
			discoveryv1.LabelServiceName: "legacy", discoveryv1.LabelManagedBy: "hand.example"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &pg, Port: &port}},
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.30.0.5"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	readyPod(t, kubelet, appNS, "cache-0", "cache", "cache", "10.244.12.10")
	readyPod(t, kubelet, appNS, "client-1", "client", "client", "10.244.12.20")

	m := startMesh(t, stack.Options{Name: "shapes", MeshName: meshName, MeshConfig: mcName},
		stack.CertAuthority, stack.Watcher, stack.Compiler, stack.Edge)
	cert, err := m.WorkloadCert(ctx, identityOf(appNS, "client"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := m.DialEdge(cert.Pair)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	client := &proxyConn{t: t, cc: cc, node: nodeOf("client-1-uuid", "client", appNS)}

	// Headless: the pod's address, and the identity behind it.
	listener, direct := "outbound-listener:"+appNS+"/cache|14001", appNS+"/cache|14001|direct"
	lds, listeners := client.fetch(typeLDS)
	fromFirst(t, lds, listeners, "the headless listener on cache-0", func(rs []any) error {
		if l := findListener(rs, listener); l == nil || !slices.Equal(listenerAddrs(l), []string{"10.244.12.10:14001"}) {
			return fmt.Errorf("headless listener %v (listeners %v)", l, names(rs))
		}
		return nil
	})
	cds, clusters := client.fetch(typeCDS)
	if got, want := clusterSANs(t, clusters, direct), []string{identityOf(appNS, "cache").String()}; !slices.Equal(got, want) {
		t.Errorf("%s SANs %v, want %v (clusters %v)", direct, got, want, names(clusters))
	}
	for _, n := range names(clusters) {
		if strings.Contains(n, "|7946") {
			t.Errorf("the UDP port compiled to cluster %s", n)
		}
	}
	start := time.Now()
	readyPod(t, kubelet, appNS, "cache-1", "cache", "cache", "10.244.12.11")
	nextUntil(t, lds, "cache-1 in the headless listener", func(rs []any) error {
		if l := findListener(rs, listener); l == nil || !slices.Equal(listenerAddrs(l), []string{"10.244.12.10:14001", "10.244.12.11:14001"}) {
			return fmt.Errorf("listener %v", l)
		}
		return nil
	})
	t.Logf("pod ready to the headless listener: %s", time.Since(start).Round(time.Millisecond))

	// Selectorless without its annotation: refused, with the field.
	legacy := appNS + "/legacy|5432"
	field := `metadata.annotations["` + layout.AnnotationServiceAccounts + `"]`
	eventually(t, "an Event on the refused Service", 30*time.Second, func() error {
		for _, ev := range watcherEvents(t, appNS) {
			if ev.InvolvedObject.Kind == "Service" && ev.InvolvedObject.Name == "legacy" && ev.Reason == "MissingField" &&
				strings.Contains(ev.Message, "Service "+appNS+"/legacy rejected: "+field) {
				return nil
			}
		}
		return fmt.Errorf("no Event on Service legacy yet: %v", watcherEvents(t, appNS))
	})
	if hasCluster(clusters, legacy) {
		t.Errorf("the refused Service has a cluster")
	}
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, layout.AnnotationServiceAccounts, appNS+"/legacy")
	if _, err := svcs.Patch(ctx, "legacy", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	nextUntil(t, cds, "the declared Service's cluster", func(rs []any) error {
		if got, want := clusterSANs(t, rs, legacy), []string{identityOf(appNS, "legacy").String()}; !slices.Equal(got, want) {
			return fmt.Errorf("%s SANs %v, want %v", legacy, got, want)
		}
		return nil
	})
	_, cla := client.fetch(typeEDS)
	if got := endpoints(cla, legacy); !slices.Equal(got, []string{"10.30.0.5"}) {
		t.Errorf("endpoints of %s = %v, want the hand-written slice's", legacy, got)
	}
}
