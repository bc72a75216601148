package e2e

import (
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	sotwclient "github.com/envoyproxy/go-control-plane/pkg/client/sotw/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"

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
	cs := cluster.Clientset()
	run := uniq() // names differ between runs on one cluster (-count)
	storeNS, buyerNS, meshName, mcName := "flow-store"+run, "flow-buyer"+run, "flow"+run, "flow-mesh-config"+run
	namespace(t, "osm-system", nil)
	for ns, sa := range map[string]string{storeNS: "bookstore", buyerNS: "bookbuyer"} {
		namespace(t, ns, map[string]string{"openservicemesh.io/monitored-by": meshName}, sa)
	}
	mc := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "config.openservicemesh.io/v1alpha1", "kind": "MeshConfig",
		"metadata": map[string]any{"name": mcName, "namespace": "osm-system"},
		"spec":     map[string]any{"traffic": map[string]any{"enablePermissiveTrafficPolicyMode": true}},
	}}
	gvr := schema.GroupVersionResource{Group: "config.openservicemesh.io", Version: "v1alpha1", Resource: "meshconfigs"}
	if _, err := cluster.Dynamic().Resource(gvr).Namespace("osm-system").Create(ctx, mc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	kubelet := cluster.Kubelet("flow-node", "zone-a")
	if _, err := kubelet.Register(ctx); err != nil {
		t.Fatal(err)
	}
	http := "http"
	if _, err := cs.CoreV1().Services(storeNS).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "bookstore"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "bookstore"}, Ports: []corev1.ServicePort{{
			Name: "http", Port: 14001, TargetPort: intstr.FromInt32(14001), AppProtocol: &http}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	runPod := func(ns, name, sa, app, ip string) {
		t.Helper()
		p, err := cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": app}},
			Spec: corev1.PodSpec{ServiceAccountName: sa, Containers: []corev1.Container{{Name: app, Image: app,
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 14001}}}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kubelet.MakeReady(ctx, p, ip); err != nil {
			t.Fatal(err)
		}
	}
	runPod(storeNS, "bookstore-1", "bookstore", "bookstore", "10.244.7.10")
	runPod(buyerNS, "bookbuyer-1", "bookbuyer", "bookbuyer", "10.244.8.10")

	m := startMesh(t, stack.Options{Name: "flow", MeshName: meshName, MeshConfig: mcName},
		stack.CertAuthority, stack.Watcher, stack.Compiler, stack.Edge)

	// A proxy of bookbuyer, with the certificate the injector would have
	// put in its bootstrap Secret.
	buyer := identity.New(stack.TrustDomain, buyerNS, "bookbuyer")
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
	node := &corev3.Node{Id: "bookbuyer-1-uuid", Cluster: "bookbuyer." + buyerNS}
	fetch := func(typeURL string) (sotwclient.ADSClient, []any) {
		t.Helper()
		c := sotwclient.NewADSClient(ctx, node, typeURL)
		if err := c.InitConnect(cc); err != nil {
			t.Fatalf("%s: %v", typeURL, err)
		}
		resp, err := c.Fetch()
		if err != nil {
			t.Fatalf("%s: %v", typeURL, err)
		}
		if err := c.Ack(); err != nil {
			t.Fatal(err)
		}
		return c, unpack(t, resp.Resources)
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
	runPod(storeNS, "bookstore-2", "bookstore", "bookstore", "10.244.7.11")
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

func unpack(t *testing.T, rs []*anypbAny) []any {
	t.Helper()
	var out []any
	for _, a := range rs {
		m, err := a.UnmarshalNew()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
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
