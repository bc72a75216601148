package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	sotwclient "github.com/envoyproxy/go-control-plane/pkg/client/sotw/v3"
	"google.golang.org/grpc"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/osmpolicy"
	"github.com/openservicemesh/osm/tests/kube"
	"github.com/openservicemesh/osm/tests/stack"
)

// nextUntil reads responses of c (ACKing each) until check passes on one,
// for up to 30 s.
func nextUntil(t *testing.T, c sotwclient.ADSClient, what string, check func([]any) error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := c.Fetch()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if err := c.Ack(); err != nil {
			t.Fatal(err)
		}
		err = check(unpack(t, resp.Resources))
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s after 30s: %v", what, err)
		}
	}
}

func findListener(rs []any, name string) *listenerv3.Listener {
	for _, r := range rs {
		if l, ok := r.(*listenerv3.Listener); ok && l.GetName() == name {
			return l
		}
	}
	return nil
}

// TestEgressFlow runs an Egress through the real apiserver, the watcher,
// the compiler and an edge to a real xDS client of its source: the source
// gets its egress listeners, route and clusters, and another identity
// none; a host added reaches the route; an invalid edit is rejected with
// its field in an Event and the last good egress stays; enableEgress turns
// the OutboundListener's default chain into passthrough for everyone.
func TestEgressFlow(t *testing.T) {
	ctx := t.Context()
	run := uniq()
	appNS, meshName, mcName := "egress-app"+run, "egress"+run, "egress-mesh-config"+run
	namespace(t, "osm-system", nil)
	namespace(t, appNS, map[string]string{layout.LabelMonitoredBy: meshName}, "curl", "other")
	meshConfig(t, mcName, false)
	kubelet := node(t, "egress-node")
	readyPod(t, kubelet, appNS, "curl-1", "curl", "curl", "10.244.9.10")
	readyPod(t, kubelet, appNS, "other-1", "other", "other", "10.244.9.11")
	egress := create(t, osmpolicy.EgressGVR, appNS, map[string]any{
		"apiVersion": "policy.openservicemesh.io/v1alpha1", "kind": "Egress",
		"metadata": map[string]any{"name": "httpbin"},
		"spec": map[string]any{
			"sources":     []any{map[string]any{"kind": "ServiceAccount", "name": "curl", "namespace": appNS}},
			"hosts":       []any{"httpbin.org"},
			"ipAddresses": []any{"10.20.0.0/16"},
			"ports":       []any{map[string]any{"number": int64(80), "protocol": "http"}, map[string]any{"number": int64(5432), "protocol": "tcp"}},
		},
	})

	m := startMesh(t, stack.Options{Name: "egress", MeshName: meshName, MeshConfig: mcName},
		stack.CertAuthority, stack.Watcher, stack.Compiler, stack.Edge)
	dial := func(sa string) *proxyConn {
		t.Helper()
		cert, err := m.WorkloadCert(ctx, identityOf(appNS, sa), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		cc, err := m.DialEdge(cert.Pair)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return &proxyConn{t: t, cc: cc, node: nodeOf(sa+"-1-uuid", sa, appNS)}
	}
	curl, other := dial("curl"), dial("other")
	http80, db := "egress-listener:"+appNS+"/curl|80", "egress-listener:"+appNS+"/curl|5432"
	route := "egress:" + appNS + "/curl|80"

	lds, listeners := curl.fetch(typeLDS)
	for _, want := range []string{http80, db, "outbound-listener"} {
		if findListener(listeners, want) == nil {
			t.Fatalf("curl's listeners %v lack %s", names(listeners), want)
		}
	}
	if pr := findListener(listeners, db).GetFilterChains()[0].GetFilterChainMatch().GetPrefixRanges(); len(pr) != 1 || pr[0].GetAddressPrefix() != "10.20.0.0" {
		t.Errorf("5432's chain ranges %v", pr)
	}
	_, clusters := curl.fetch(typeCDS)
	for _, want := range []string{"egress:httpbin.org:80", "passthrough-outbound"} {
		if !hasCluster(clusters, want) {
			t.Fatalf("curl's clusters %v lack %s", names(clusters), want)
		}
	}
	_, otherListeners := other.fetch(typeLDS)
	for _, n := range names(otherListeners) {
		if strings.HasPrefix(n, "egress") {
			t.Errorf("other, no source of the Egress, is served %s", n)
		}
	}

	// A host added reaches curl's route.
	rds, routes := curl.fetch(typeRDS)
	domains := func(rs []any) []string {
		var out []string
		for _, r := range rs {
			if rc, ok := r.(*routev3.RouteConfiguration); ok && rc.GetName() == route {
				for _, vh := range rc.GetVirtualHosts() {
					out = append(out, vh.GetDomains()...)
				}
			}
		}
		return out
	}
	if d := domains(routes); !slices.Contains(d, "httpbin.org") || !slices.Contains(d, "httpbin.org:80") {
		t.Fatalf("route %s domains %v", route, d)
	}
	start := time.Now()
	patchEgress(t, appNS, "httpbin", `{"spec":{"hosts":["httpbin.org","api.example.com"]}}`)
	nextUntil(t, rds, "the host added in the route", func(rs []any) error {
		if d := domains(rs); !slices.Contains(d, "api.example.com:80") {
			return fmt.Errorf("domains %v", d)
		}
		return nil
	})
	t.Logf("Egress edit to the source's route: %s", time.Since(start).Round(time.Millisecond))

	// An invalid edit (the CRD lets a malformed CIDR through) is rejected
	// with its field, and curl keeps its egress.
	patchEgress(t, appNS, "httpbin", `{"spec":{"ipAddresses":["10.20.0.0"]}}`)
	eventually(t, "an Event naming the field", 30*time.Second, func() error {
		for _, ev := range watcherEvents(t, appNS) {
			if ev.InvolvedObject.Kind == "Egress" && ev.InvolvedObject.Name == "httpbin" &&
				strings.Contains(ev.Message, "Egress "+appNS+"/httpbin rejected: spec.ipAddresses[0]: \"10.20.0.0\" is not a CIDR range") {
				return nil
			}
		}
		return fmt.Errorf("no Event on Egress httpbin yet: %v", watcherEvents(t, appNS))
	})
	if _, err := cluster.Dynamic().Resource(osmpolicy.EgressGVR).Namespace(appNS).Get(ctx, egress.GetName(), metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	_, listeners = curl.fetch(typeLDS)
	if findListener(listeners, db) == nil {
		t.Fatalf("after a rejected edit curl lost its egress listener %s: %v", db, names(listeners))
	}

	// enableEgress: unknown destinations pass through, for every proxy.
	if _, err := cluster.Dynamic().Resource(kube.MeshConfigs).Namespace("osm-system").Patch(ctx, mcName,
		types.MergePatchType, []byte(`{"spec":{"traffic":{"enableEgress":true}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	nextUntil(t, lds, "the OutboundListener passing unknown destinations through", func(rs []any) error {
		out := findListener(rs, "outbound-listener")
		if out == nil {
			return fmt.Errorf("no outbound-listener in %v", names(rs))
		}
		f := out.GetDefaultFilterChain().GetFilters()
		if len(f) != 1 || f[0].GetName() != "envoy.filters.network.tcp_proxy" {
			return fmt.Errorf("default chain %v", out.GetDefaultFilterChain())
		}
		tp := &tcpproxyv3.TcpProxy{}
		if err := f[0].GetTypedConfig().UnmarshalTo(tp); err != nil || tp.GetCluster() != "passthrough-outbound" {
			return fmt.Errorf("default chain to %q (%v)", tp.GetCluster(), err)
		}
		return nil
	})
	_, otherClusters := other.fetch(typeCDS)
	if !hasCluster(otherClusters, "passthrough-outbound") {
		t.Fatalf("with enableEgress, other's clusters %v lack passthrough-outbound", names(otherClusters))
	}
}

// proxyConn is a simulated proxy's connection to the edge.
type proxyConn struct {
	t    *testing.T
	cc   *grpc.ClientConn
	node *corev3.Node
}

// fetch opens an ADS stream of typeURL and returns its first response.
func (p *proxyConn) fetch(typeURL string) (sotwclient.ADSClient, []any) {
	p.t.Helper()
	c, rs, err := adsFetch(p.t.Context(), p.cc, p.node, typeURL)
	if err != nil {
		p.t.Fatal(err)
	}
	return c, rs
}

func patchEgress(t *testing.T, ns, name, patch string) {
	t.Helper()
	if _, err := cluster.Dynamic().Resource(osmpolicy.EgressGVR).Namespace(ns).Patch(t.Context(), name,
		types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}
