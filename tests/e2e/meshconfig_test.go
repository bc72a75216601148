package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/tests/kube"
	"github.com/openservicemesh/osm/tests/stack"
)

// patchMeshConfig merge-patches the MeshConfig name in osm-system.
func patchMeshConfig(t *testing.T, name, patch string) error {
	t.Helper()
	_, err := cluster.Dynamic().Resource(kube.MeshConfigs).Namespace("osm-system").Patch(t.Context(), name,
		types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	return err
}

// TestMeshConfigTLSFlow runs the MeshConfig's sidecar TLS parameters
// through the real apiserver (the chart's CRD, which keeps them), the
// watcher, the compiler and an edge to real xDS clients: they become the
// tls_params of the client's upstream cluster and of the server's inbound
// listener; a version name the CRD does not know is refused by the
// apiserver naming the field; a cipher suite Envoy does not know (which the
// CRD lets through when the validating webhook is away) never reaches
// Envoy; removing them gives Envoy's defaults back.
func TestMeshConfigTLSFlow(t *testing.T) {
	ctx := t.Context()
	run := uniq()
	storeNS, buyerNS, meshName, mcName := "mctls-store"+run, "mctls-buyer"+run, "mctls"+run, "mctls-mesh-config"+run
	namespace(t, "osm-system", nil)
	for ns, sa := range map[string]string{storeNS: "bookstore", buyerNS: "bookbuyer"} {
		namespace(t, ns, map[string]string{layout.LabelMonitoredBy: meshName}, sa)
	}
	meshConfig(t, mcName, true)
	kubelet := node(t, "mctls-node")
	service(t, storeNS, "bookstore", 14001)
	readyPod(t, kubelet, storeNS, "bookstore-1", "bookstore", "bookstore", "10.244.9.10")
	readyPod(t, kubelet, buyerNS, "bookbuyer-1", "bookbuyer", "bookbuyer", "10.244.9.20")

	m := startMesh(t, stack.Options{Name: "mctls", MeshName: meshName, MeshConfig: mcName},
		stack.CertAuthority, stack.Watcher, stack.Compiler, stack.Edge)
	dial := func(ns, sa string) *proxyConn {
		t.Helper()
		cert, err := m.WorkloadCert(ctx, identityOf(ns, sa), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		cc, err := m.DialEdge(cert.Pair)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return &proxyConn{t: t, cc: cc, node: nodeOf(sa+"-1-uuid", sa, ns)}
	}
	buyer, store := dial(buyerNS, "bookbuyer"), dial(storeNS, "bookstore")
	clusterName, inbound := storeNS+"/bookstore|14001", "inbound-listener:"+storeNS+"/bookstore"

	upstream := func(rs []any) (*tlsv3.TlsParameters, error) {
		for _, r := range rs {
			if c, ok := r.(*clusterv3.Cluster); ok && c.GetName() == clusterName {
				u := &tlsv3.UpstreamTlsContext{}
				if err := c.GetTransportSocket().GetTypedConfig().UnmarshalTo(u); err != nil {
					return nil, err
				}
				return u.GetCommonTlsContext().GetTlsParams(), nil
			}
		}
		return nil, fmt.Errorf("no cluster %s in %v", clusterName, names(rs))
	}
	downstream := func(rs []any) (*tlsv3.TlsParameters, error) {
		l := findListener(rs, inbound)
		if l == nil || len(l.GetFilterChains()) == 0 {
			return nil, fmt.Errorf("no listener %s with chains in %v", inbound, names(rs))
		}
		var first *tlsv3.TlsParameters
		for i, fc := range l.GetFilterChains() {
			d := &tlsv3.DownstreamTlsContext{}
			if err := fc.GetTransportSocket().GetTypedConfig().UnmarshalTo(d); err != nil {
				return nil, err
			}
			if i == 0 {
				first = d.GetCommonTlsContext().GetTlsParams()
			} else if !proto.Equal(first, d.GetCommonTlsContext().GetTlsParams()) {
				return nil, fmt.Errorf("chains differ: %v and %v", first, d.GetCommonTlsContext().GetTlsParams())
			}
		}
		return first, nil
	}
	is := func(get func([]any) (*tlsv3.TlsParameters, error), want *tlsv3.TlsParameters) func([]any) error {
		return func(rs []any) error {
			got, err := get(rs)
			if err != nil {
				return err
			}
			if !proto.Equal(got, want) {
				return fmt.Errorf("tls_params %v, want %v", got, want)
			}
			return nil
		}
	}

	cds, clusters := buyer.fetch(typeCDS)
	lds, listeners := store.fetch(typeLDS)
	if err := is(upstream, nil)(clusters); err != nil {
		t.Fatalf("before: %v", err)
	}
	if err := is(downstream, nil)(listeners); err != nil {
		t.Fatalf("before: %v", err)
	}

	start := time.Now()
	if err := patchMeshConfig(t, mcName, `{"spec":{"sidecar":{"tlsMinProtocolVersion":"TLSv1_3","tlsMaxProtocolVersion":"TLSv1_3",`+
		`"cipherSuites":["ECDHE-ECDSA-AES128-GCM-SHA256","RC4-MD5"],"ecdhCurves":["X25519"]}}}`); err != nil {
		t.Fatal(err)
	}
	want := &tlsv3.TlsParameters{
		TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_3, TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3,
		CipherSuites: []string{"ECDHE-ECDSA-AES128-GCM-SHA256"}, EcdhCurves: []string{"X25519"},
	}
	nextUntil(t, cds, "the client's cluster with the MeshConfig's tls_params", is(upstream, want))
	nextUntil(t, lds, "the server's inbound listener with the MeshConfig's tls_params", is(downstream, want))
	t.Logf("MeshConfig TLS edit to both proxies: %s (shared machine)", time.Since(start).Round(time.Millisecond))

	err := patchMeshConfig(t, mcName, `{"spec":{"sidecar":{"tlsMaxProtocolVersion":"TLSv1.3"}}}`)
	if err == nil || !strings.Contains(err.Error(), "spec.sidecar.tlsMaxProtocolVersion") {
		t.Fatalf("a TLS version name the CRD does not know: %v, want a refusal naming spec.sidecar.tlsMaxProtocolVersion", err)
	}

	if err := patchMeshConfig(t, mcName, `{"spec":{"sidecar":{"tlsMinProtocolVersion":null,"tlsMaxProtocolVersion":null,"cipherSuites":null,"ecdhCurves":null}}}`); err != nil {
		t.Fatal(err)
	}
	nextUntil(t, cds, "the client's cluster back to Envoy's defaults", is(upstream, nil))
	nextUntil(t, lds, "the server's inbound listener back to Envoy's defaults", is(downstream, nil))
}
