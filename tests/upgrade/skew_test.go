package upgrade

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	sotwclient "github.com/envoyproxy/go-control-plane/pkg/client/sotw/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/openservicemesh/osm/libs/caclient"
	"github.com/openservicemesh/osm/libs/identity"
	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/tests/kube"
	"github.com/openservicemesh/osm/tests/stack"
)

// flow are the components the mesh flow runs: every one.
var flow = stack.Components()

// bootstrapSecretPrefix and the pod's proxy UUID name its bootstrap Secret
// (the injector's inject.BootstrapSecretName).
const bootstrapSecretPrefix = "envoy-bootstrap-"

const (
	typeCDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	typeRDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	typeEDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
	typeSDS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
)

// TestVersionSkew runs the mesh flow once for each component with that
// component at HEAD and the others at the base release (BASE), and once
// with that component at the base and the others at HEAD. In each run a
// bookbuyer pod is injected (its bootstrap Secret holds an xDS client
// certificate from the CA), and the bookstore's SMI policies, applied
// through the apiserver while the mesh runs, reach the pod's proxy
// connected to the edge with that certificate: its cluster, route
// configuration, endpoint and service certificate.
func TestVersionSkew(t *testing.T) {
	if testing.Short() {
		t.Skip("builds every service at two commits and runs the mesh 10 times")
	}
	if baseErr != nil {
		t.Skip(baseErr)
	}
	ctx := t.Context()
	start := time.Now()
	baseB, err := baseBuilder(ctx, baseCommit, flow)
	if err != nil {
		t.Fatal(err)
	}
	at := map[string]map[stack.Component]string{"HEAD": {}, "base": {}}
	for _, c := range flow {
		if at["base"][c], err = baseB.Build(ctx, string(c)); err != nil {
			t.Fatal(err)
		}
		if at["HEAD"][c], err = head.Build(ctx, string(c)); err != nil {
			t.Fatal(err)
		}
		if same(t, at["base"][c], at["HEAD"][c]) {
			t.Logf("%s's binary is the same at base and HEAD: its runs prove only the others' skew", c)
		}
	}
	t.Logf("base %.12s and HEAD built in %s", baseCommit, time.Since(start).Round(time.Second))

	kubelet := cluster.Kubelet("upgrade-node", "zone-a")
	if _, err := kubelet.Register(ctx); err != nil {
		t.Fatal(err)
	}
	run := 0
	for _, c := range flow {
		for _, v := range [][2]string{{"HEAD", "base"}, {"base", "HEAD"}} {
			one, others := v[0], v[1]
			run++
			t.Run(fmt.Sprintf("%s@%s,others@%s", c, one, others), func(t *testing.T) {
				b := stack.NewBuilderAt(t.TempDir(), "/nonexistent") // builds nothing
				for _, d := range flow {
					b.Use(string(d), at[others][d])
				}
				b.Use(string(c), at[one][c])
				t0 := time.Now()
				meshFlow(t, kubelet, run, b)
				t.Logf("flow with %s at %s, the others at %s: %s", c, one, others, time.Since(t0).Round(time.Millisecond))
			})
		}
	}
	t.Logf("total %s", time.Since(start).Round(time.Second))
}

// meshFlow starts the flow's components from b in a mesh of its own
// (namespaces, control-plane namespace, webhook configuration, NATS) on
// the shared cluster, creates a bookbuyer pod through the injector,
// connects its proxy, applies the bookstore's policies and checks that
// they reach it.
func meshFlow(t *testing.T, kubelet *kube.Kubelet, run int, b *stack.Builder) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	sfx := fmt.Sprintf("-%d-%d", time.Now().Unix()%100000, run) // unique under -count
	sys, storeNS, buyerNS, meshName := "up-sys"+sfx, "up-store"+sfx, "up-buyer"+sfx, "up"+sfx
	member := map[string]string{layout.LabelMonitoredBy: meshName}
	namespace(t, storeNS, member)
	namespace(t, buyerNS, member)
	namespace(t, sys, nil)
	create(t, kube.MeshConfigs, sys, map[string]any{
		"apiVersion": "config.openservicemesh.io/v1alpha1", "kind": "MeshConfig",
		"metadata": map[string]any{"name": "osm-mesh-config"},
		"spec":     map[string]any{"traffic": map[string]any{"enablePermissiveTrafficPolicyMode": false}},
	})
	service(t, storeNS, "bookstore", 14001)
	storeIP, buyerIP := fmt.Sprintf("10.245.%d.10", run), fmt.Sprintf("10.245.%d.20", run)
	readyPod(t, kubelet, storeNS, "bookstore-1", "bookstore", storeIP)

	m, err := stack.New(ctx, stack.Options{Cluster: cluster, Dir: t.TempDir(), Builder: b, Name: "up" + sfx,
		MeshName: meshName, Namespace: sys, MeshConfig: "osm-mesh-config", ReadyTimeout: 60 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cluster.Clientset().AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(
			context.Background(), m.WebhookConfigName(), metav1.DeleteOptions{})
		if err := m.Close(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Log(m.Logs())
		}
	})
	if err := m.Start(ctx, flow...); err != nil {
		t.Fatal(err)
	}

	// The proxy's checks take seconds; a missing resource fails in 30.
	ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// The injector admits the pod with a sidecar and writes its bootstrap
	// Secret, whose certificate the proxy presents to the edge.
	pod := readyPod(t, kubelet, buyerNS, "bookbuyer-1", "bookbuyer", buyerIP)
	uuid := pod.Labels[layout.LabelProxyUUID]
	if len(pod.Spec.Containers) != 2 || uuid == "" {
		t.Fatalf("bookbuyer-1 was not injected: %d containers, labels %v", len(pod.Spec.Containers), pod.Labels)
	}
	var sec *corev1.Secret
	if err := stack.Eventually(ctx, 30*time.Second, func() (err error) {
		sec, err = cluster.Clientset().CoreV1().Secrets(buyerNS).Get(ctx, bootstrapSecretPrefix+uuid, metav1.GetOptions{})
		return err
	}); err != nil {
		t.Fatalf("bookbuyer-1's bootstrap Secret: %v", err)
	}
	cert, err := tls.X509KeyPair(sec.Data["tls.crt"], sec.Data["tls.key"])
	if err != nil {
		t.Fatalf("bookbuyer-1's bootstrap Secret: %v", err)
	}
	cc, err := m.DialEdge(cert)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	buyer := identity.New(stack.TrustDomain, buyerNS, "bookbuyer")
	node := &corev3.Node{Id: uuid, Cluster: "bookbuyer." + buyerNS}
	store := storeNS + "/bookstore|14001"

	// The edge refuses the proxy until the pod's identity is in the mesh
	// (the watcher and the compiler have seen the pod); Envoy retries.
	// No policy yet (SMI mode): bookbuyer may not reach the bookstore.
	var cds sotwclient.ADSClient
	var clusters []string
	if err := stack.Eventually(ctx, 20*time.Second, func() (err error) {
		cds, clusters, err = tryFetch(t, ctx, cc, node, typeCDS)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(clusters, store) {
		t.Fatalf("bookbuyer has cluster %s before any policy allows it: %v", store, clusters)
	}
	policies(t, storeNS, buyerNS)
	for !slices.Contains(clusters, store) {
		resp, err := cds.Fetch()
		if err != nil {
			t.Fatalf("waiting for cluster %s after the policies (have %v): %v", store, clusters, err)
		}
		if err := cds.Ack(); err != nil {
			t.Fatal(err)
		}
		clusters = namesOf(t, resp.Resources)
	}
	_, routes := fetch(t, ctx, cc, node, typeRDS)
	if !slices.Contains(routes, store) {
		t.Fatalf("bookbuyer's route configurations %v lack %s", routes, store)
	}
	_, cla := fetch(t, ctx, cc, node, typeEDS)
	if !slices.Contains(cla, store+"="+storeIP) {
		t.Fatalf("bookbuyer's endpoints %v lack %s at %s", cla, store, storeIP)
	}
	serviceCert(t, ctx, m, cc, node, buyer)
}

// policies applies the bookstore's SMI policies: bookbuyer may GET /buy
// from bookstore.
func policies(t *testing.T, storeNS, buyerNS string) {
	t.Helper()
	create(t, kube.HTTPRouteGroups, storeNS, map[string]any{
		"apiVersion": "specs.smi-spec.io/v1alpha4", "kind": "HTTPRouteGroup",
		"metadata": map[string]any{"name": "bookstore-routes"},
		"spec": map[string]any{"matches": []any{
			map[string]any{"name": "buy", "pathRegex": "/buy", "methods": []any{"GET"}},
		}},
	})
	create(t, kube.TrafficTargets, storeNS, map[string]any{
		"apiVersion": "access.smi-spec.io/v1alpha3", "kind": "TrafficTarget",
		"metadata": map[string]any{"name": "bookbuyer-may-buy"},
		"spec": map[string]any{
			"destination": map[string]any{"kind": "ServiceAccount", "name": "bookstore", "namespace": storeNS},
			"sources":     []any{map[string]any{"kind": "ServiceAccount", "name": "bookbuyer", "namespace": buyerNS}},
			"rules":       []any{map[string]any{"kind": "HTTPRouteGroup", "name": "bookstore-routes", "matches": []any{"buy"}}},
		},
	})
}

// serviceCert checks that the edge sends the proxy its identity's
// certificate, signed by the CA for the edge, chaining to the bundle; it
// may come in a later response than the root.
func serviceCert(t *testing.T, ctx context.Context, m *stack.Mesh, cc grpc.ClientConnInterface, node *corev3.Node, id identity.ID) {
	t.Helper()
	c := sotwclient.NewADSClient(ctx, node, typeSDS)
	if err := c.InitConnect(cc); err != nil {
		t.Fatal(err)
	}
	var leaf *x509.Certificate
	for leaf == nil {
		resp, err := c.Fetch()
		if err != nil {
			t.Fatalf("waiting for %s: %v", layout.SecretServiceCert, err)
		}
		if err := c.Ack(); err != nil {
			t.Fatal(err)
		}
		for _, a := range resp.Resources {
			s := &tlsv3.Secret{}
			if err := a.UnmarshalTo(s); err != nil {
				t.Fatal(err)
			}
			if s.GetName() != layout.SecretServiceCert {
				continue
			}
			if block, _ := pem.Decode(s.GetTlsCertificate().GetCertificateChain().GetInlineBytes()); block != nil {
				leaf, _ = x509.ParseCertificate(block.Bytes)
			}
		}
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id.String() {
		t.Fatalf("%s is not %s's: %v", layout.SecretServiceCert, id, leaf.URIs)
	}
	roots, err := caclient.RootPool(m.Bundle())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("%s does not chain to the trust bundle: %v", layout.SecretServiceCert, err)
	}
}

// fetch opens an ADS stream for typeURL as node, takes the first response
// and ACKs it; it returns the stream for later responses and the names of
// the resources (for assignments, cluster=address per endpoint).
func fetch(t *testing.T, ctx context.Context, cc grpc.ClientConnInterface, node *corev3.Node, typeURL string) (sotwclient.ADSClient, []string) {
	t.Helper()
	c, names, err := tryFetch(t, ctx, cc, node, typeURL)
	if err != nil {
		t.Fatal(err)
	}
	return c, names
}

// tryFetch is fetch that returns its error.
func tryFetch(t *testing.T, ctx context.Context, cc grpc.ClientConnInterface, node *corev3.Node, typeURL string) (sotwclient.ADSClient, []string, error) {
	t.Helper()
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
	return c, namesOf(t, resp.Resources), nil
}

// namesOf names xDS resources; an assignment gives cluster=address for
// each of its endpoints.
func namesOf(t *testing.T, rs []*anypb.Any) []string {
	t.Helper()
	var out []string
	for _, a := range rs {
		m, err := a.UnmarshalNew()
		if err != nil {
			t.Fatal(err)
		}
		switch r := m.(type) {
		case *clusterv3.Cluster:
			out = append(out, r.GetName())
		case *routev3.RouteConfiguration:
			out = append(out, r.GetName())
		case *endpointv3.ClusterLoadAssignment:
			for _, l := range r.GetEndpoints() {
				for _, e := range l.GetLbEndpoints() {
					out = append(out, r.GetClusterName()+"="+e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress())
				}
			}
		default:
			out = append(out, fmt.Sprintf("%T", proto.Message(m)))
		}
	}
	return out
}

// same reports whether the files a and b have the same bytes.
func same(t *testing.T, a, b string) bool {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(x, y)
}

// namespace creates namespace name with labels.
func namespace(t *testing.T, name string, labels map[string]string) {
	t.Helper()
	if _, err := cluster.Clientset().CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// create creates obj in namespace ns.
func create(t *testing.T, gvr schema.GroupVersionResource, ns string, obj map[string]any) {
	t.Helper()
	if _, err := cluster.Dynamic().Resource(gvr).Namespace(ns).Create(t.Context(),
		&unstructured.Unstructured{Object: obj}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create %s %s/%v: %v", gvr.Resource, ns, obj["metadata"], err)
	}
}

// service creates a Service selecting app=name on an HTTP port.
func service(t *testing.T, ns, name string, port int32) {
	t.Helper()
	http := "http"
	if _, err := cluster.Clientset().CoreV1().Services(ns).Create(t.Context(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": name}, Ports: []corev1.ServicePort{{
			Name: "http", Port: port, TargetPort: intstr.FromInt32(port), AppProtocol: &http}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// readyPod creates ServiceAccount sa and a pod of app=sa running as it,
// Ready at ip, as the kubelet would, and returns the pod as stored.
func readyPod(t *testing.T, k *kube.Kubelet, ns, name, sa, ip string) *corev1.Pod {
	t.Helper()
	cs := cluster.Clientset()
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(t.Context(), &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p, err := cs.CoreV1().Pods(ns).Create(t.Context(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": sa}},
		Spec: corev1.PodSpec{ServiceAccountName: sa, Containers: []corev1.Container{{Name: sa, Image: sa,
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 14001}}}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.MakeReady(t.Context(), p, ip); err != nil {
		t.Fatal(err)
	}
	return p
}
