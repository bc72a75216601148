package e2e

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	sotwclient "github.com/envoyproxy/go-control-plane/pkg/client/sotw/v3"
	"google.golang.org/grpc"

	"github.com/openservicemesh/osm/libs/caclient"
	"github.com/openservicemesh/osm/libs/identity"
	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/tests/stack"
)

const (
	typeCDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	typeEDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
	typeSDS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
)

// TestMeshFlow runs the whole control plane as processes: Kubernetes
// objects go through the smi-watcher, the policy-compiler and an xds-edge
// to a real xDS client (go-control-plane's ADS client) whose certificate
// comes from the cert-authority; an endpoint that becomes ready reaches it.
func TestMeshFlow(t *testing.T) {
	ctx := t.Context()
	run := uniq() // names differ between runs on one cluster (-count)
	storeNS, buyerNS, meshName, mcName := "flow-store"+run, "flow-buyer"+run, "flow"+run, "flow-mesh-config"+run
	namespace(t, "osm-system", nil)
	for ns, sa := range map[string]string{storeNS: "bookstore", buyerNS: "bookbuyer"} {
		namespace(t, ns, map[string]string{layout.LabelMonitoredBy: meshName}, sa)
	}
	meshConfig(t, mcName, true)
	kubelet := node(t, "flow-node")
	service(t, storeNS, "bookstore", 14001)
	readyPod(t, kubelet, storeNS, "bookstore-1", "bookstore", "bookstore", "10.244.7.10")
	readyPod(t, kubelet, buyerNS, "bookbuyer-1", "bookbuyer", "bookbuyer", "10.244.8.10")

	m := startMesh(t, stack.Options{Name: "flow", MeshName: meshName, MeshConfig: mcName},
		stack.CertAuthority, stack.Watcher, stack.Compiler, stack.Edge)

	// A proxy of bookbuyer, with the certificate the injector would have
	// put in its bootstrap Secret.
	buyer := identityOf(buyerNS, "bookbuyer")
	proxyCert, err := m.WorkloadCert(ctx, buyer, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	roots, _ := caclient.RootPool(m.Bundle())
	cc, err := m.DialEdge(proxyCert.Pair)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	node := nodeOf("bookbuyer-1-uuid", "bookbuyer", buyerNS)
	fetch := func(typeURL string) (sotwclient.ADSClient, []any) {
		t.Helper()
		c, rs, err := adsFetch(ctx, cc, node, typeURL)
		if err != nil {
			t.Fatal(err)
		}
		return c, rs
	}
	store := storeNS + "/bookstore|14001"
	_, clusters := fetch(typeCDS)
	if !hasCluster(clusters, store) {
		t.Fatalf("bookbuyer's clusters %v lack %s", names(clusters), store)
	}
	eds, cla := fetch(typeEDS)
	if got := endpoints(cla, store); strings.Join(got, ",") != "10.244.7.10" {
		t.Fatalf("endpoints of %s = %v", store, got)
	}
	// The edge gets the proxy's certificate from the CA on the proxy's
	// first request; it may arrive in a later response than the root.
	sds, secrets := fetch(typeSDS)
	var leaf *x509.Certificate
	for deadline := time.Now().Add(15 * time.Second); ; {
		for _, s := range secrets {
			if sec, ok := s.(*tlsv3.Secret); ok && sec.GetName() == layout.SecretServiceCert {
				block, _ := pem.Decode(sec.GetTlsCertificate().GetCertificateChain().GetInlineBytes())
				if block != nil {
					leaf, _ = x509.ParseCertificate(block.Bytes)
				}
			}
		}
		if leaf != nil || time.Now().After(deadline) {
			break
		}
		resp, err := sds.Fetch()
		if err != nil {
			t.Fatal(err)
		}
		if err := sds.Ack(); err != nil {
			t.Fatal(err)
		}
		secrets = unpack(t, resp.Resources)
	}
	if leaf == nil || len(leaf.URIs) != 1 || leaf.URIs[0].String() != buyer.String() {
		t.Fatalf("service-cert is not bookbuyer's: %v (secrets %v)", leaf, names(secrets))
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("service-cert does not chain to the mesh trust bundle: %v", err)
	}

	// A second bookstore pod becomes ready: the new endpoint reaches the
	// proxy through the watcher, the compiler and the edge.
	start := time.Now()
	readyPod(t, kubelet, storeNS, "bookstore-2", "bookstore", "bookstore", "10.244.7.11")
	for {
		resp, err := eds.Fetch()
		if err != nil {
			t.Fatal(err)
		}
		if err := eds.Ack(); err != nil {
			t.Fatal(err)
		}
		got := endpoints(unpack(t, resp.Resources), store)
		if strings.Join(got, ",") == "10.244.7.10,10.244.7.11" {
			t.Logf("pod ready to endpoint on the proxy: %s", time.Since(start).Round(time.Millisecond))
			break
		}
		if time.Since(start) > 30*time.Second {
			t.Fatalf("endpoints of %s = %v after 30s", store, got)
		}
	}
}

// identityOf is the SPIFFE identity of ServiceAccount sa in ns.
func identityOf(ns, sa string) identity.ID { return identity.New(stack.TrustDomain, ns, sa) }

// nodeOf is the xDS node of a sidecar of ServiceAccount sa in ns, as the
// injector's bootstrap names it.
func nodeOf(proxyID, sa, ns string) *corev3.Node {
	return &corev3.Node{Id: proxyID, Cluster: sa + "." + ns}
}

// adsFetch opens an ADS stream for typeURL on cc as node, takes the first
// response and ACKs it; the client stays open for later responses.
func adsFetch(ctx context.Context, cc grpc.ClientConnInterface, node *corev3.Node, typeURL string) (sotwclient.ADSClient, []any, error) {
	c := sotwclient.NewADSClient(ctx, node, typeURL)
	if err := c.InitConnect(cc); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", typeURL, err)
	}
	resp, err := c.Fetch()
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", typeURL, err)
	}
	if err := c.Ack(); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", typeURL, err)
	}
	rs, err := unpackAll(resp.Resources)
	return c, rs, err
}

func unpack(t *testing.T, rs []*anypbAny) []any {
	t.Helper()
	out, err := unpackAll(rs)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func unpackAll(rs []*anypbAny) ([]any, error) {
	var out []any
	for _, a := range rs {
		m, err := a.UnmarshalNew()
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

func hasCluster(rs []any, name string) bool {
	for _, r := range rs {
		if c, ok := r.(*clusterv3.Cluster); ok && c.GetName() == name {
			return true
		}
	}
	return false
}

func names(rs []any) []string {
	var out []string
	for _, r := range rs {
		if c, ok := r.(interface{ GetName() string }); ok {
			out = append(out, c.GetName())
		}
	}
	return out
}

func endpoints(rs []any, cluster string) []string {
	var out []string
	for _, r := range rs {
		cla, ok := r.(*endpointv3.ClusterLoadAssignment)
		if !ok || cla.GetClusterName() != cluster {
			continue
		}
		for _, l := range cla.GetEndpoints() {
			for _, e := range l.GetLbEndpoints() {
				out = append(out, e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress())
			}
		}
	}
	sortStrings(out)
	return out
}
