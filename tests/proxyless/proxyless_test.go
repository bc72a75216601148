package proxyless

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math"
	"os"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/openservicemesh/osm/libs/app/apptest"
	"github.com/openservicemesh/osm/libs/caclient"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/tests/kube"
	"github.com/openservicemesh/osm/tests/netns"
	"github.com/openservicemesh/osm/tests/stack"
)

const (
	meshName   = "osm"
	meshConfig = "osm-mesh-config"
	storePort  = 14001
	target     = "xds:///bookstore.bookstore:14001"
)

// create creates obj in namespace ns.
func create(t *testing.T, gvr schema.GroupVersionResource, ns string, obj map[string]any) {
	t.Helper()
	if _, err := cluster.Dynamic().Resource(gvr).Namespace(ns).Create(t.Context(), &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create %s %s/%v: %v", gvr.Resource, ns, obj["metadata"], err)
	}
}

// patch merge-patches the object name of gvr in ns.
func patch(t *testing.T, gvr schema.GroupVersionResource, ns, name, p string) {
	t.Helper()
	if _, err := cluster.Dynamic().Resource(gvr).Namespace(ns).Patch(t.Context(), name, types.MergePatchType, []byte(p), metav1.PatchOptions{}); err != nil {
		t.Fatalf("patch %s %s/%s: %v", gvr.Resource, ns, name, err)
	}
}

// service creates a Service with a gRPC port selecting labels.
func service(t *testing.T, ns, name string, labels map[string]string) {
	t.Helper()
	grpc := "grpc"
	if _, err := cluster.Clientset().CoreV1().Services(ns).Create(t.Context(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{
			Name: "grpc", Port: storePort, TargetPort: intstr.FromInt32(storePort), AppProtocol: &grpc}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// readyPod creates pod name of ServiceAccount sa (created too) with labels
// and the proxyless annotation through the apiserver, so that the
// injector admits it (its Secret volume and environment), makes it Ready
// at ip, as the kubelet would, and mounts its bootstrap Secret volume.
func readyPod(t *testing.T, k *kube.Kubelet, ns, name, sa, ip string, labels map[string]string) *workload {
	t.Helper()
	if _, err := cluster.Clientset().CoreV1().ServiceAccounts(ns).Create(t.Context(), &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	p, err := cluster.Clientset().CoreV1().Pods(ns).Create(t.Context(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels,
			Annotations: map[string]string{layout.NodeMetadataProxyless: layout.ProxylessGRPC}},
		Spec: corev1.PodSpec{ServiceAccountName: sa, Containers: []corev1.Container{{Name: "app", Image: appName,
			Ports: []corev1.ContainerPort{{Name: "grpc", ContainerPort: storePort}}}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.MakeReady(t.Context(), p, ip); err != nil {
		t.Fatal(err)
	}
	return mount(t, p)
}

// trafficTarget lets bookbuyer call bookstore's identity sa with the
// matches of the route group bookstore-routes.
func trafficTarget(sa string, matches ...any) map[string]any {
	return map[string]any{
		"apiVersion": "access.smi-spec.io/v1alpha3", "kind": "TrafficTarget",
		"metadata": map[string]any{"name": "bookbuyer-access-" + sa},
		"spec": map[string]any{
			"destination": map[string]any{"kind": "ServiceAccount", "name": sa, "namespace": "bookstore"},
			"rules":       []any{map[string]any{"kind": "HTTPRouteGroup", "name": "bookstore-routes", "matches": matches}},
			"sources":     []any{map[string]any{"kind": "ServiceAccount", "name": "bookbuyer", "namespace": "bookbuyer"}},
		},
	}
}

// splitPatch sets the bookstore split's weights.
func splitPatch(v1, v2 int) string {
	return fmt.Sprintf(`{"spec":{"backends":[{"service":"bookstore-v1","weight":%d},{"service":"bookstore-v2","weight":%d}]}}`, v1, v2)
}

// bookstoreMesh creates the demo's objects: the bookstore, bookbuyer and
// bookthief namespaces in the mesh, the Services bookstore (the split's
// apex), bookstore-v1 and bookstore-v2 on a gRPC port, their pods Ready on
// the pod IPs, an HTTPRouteGroup matching the two methods of
// bookstore.Books as gRPC calls them (POST), TrafficTargets letting
// bookbuyer call both versions, and the split 75/25.
func bookstoreMesh(t *testing.T) {
	t.Helper()
	ctx := t.Context()
	controlPlaneObjects(t)
	for _, ns := range []string{"bookstore", "bookbuyer", "bookthief"} {
		if _, err := cluster.CreateNamespace(ctx, ns, map[string]string{layout.LabelMonitoredBy: meshName}); err != nil {
			t.Fatal(err)
		}
	}
	service(t, "bookstore", "bookstore", map[string]string{"app": "bookstore"})
	service(t, "bookstore", "bookstore-v1", map[string]string{"app": "bookstore", "version": "v1"})
	service(t, "bookstore", "bookstore-v2", map[string]string{"app": "bookstore", "version": "v2"})
	create(t, kube.HTTPRouteGroups, "bookstore", map[string]any{
		"apiVersion": "specs.smi-spec.io/v1alpha4", "kind": "HTTPRouteGroup",
		"metadata": map[string]any{"name": "bookstore-routes"},
		"spec": map[string]any{"matches": []any{
			map[string]any{"name": "get", "pathRegex": "/bookstore.Books/Get", "methods": []any{"POST"}},
			map[string]any{"name": "buy", "pathRegex": "/bookstore.Books/Buy", "methods": []any{"POST"}},
		}},
	})
	for _, sa := range []string{"bookstore-v1", "bookstore-v2"} {
		create(t, kube.TrafficTargets, "bookstore", trafficTarget(sa, "get", "buy"))
	}
	create(t, kube.TrafficSplits, "bookstore", map[string]any{
		"apiVersion": "split.smi-spec.io/v1alpha2", "kind": "TrafficSplit",
		"metadata": map[string]any{"name": "bookstore-split"},
		"spec": map[string]any{"service": "bookstore", "backends": []any{
			map[string]any{"service": "bookstore-v1", "weight": 75},
			map[string]any{"service": "bookstore-v2", "weight": 25},
		}},
	})
}

// startMesh starts the control plane with the compiler's gRPC flavour and
// the injector writing xdsAddr (the edge's Service) into the bootstraps;
// it stops when the test ends, and its logs are logged when the test
// failed.
func startMesh(t *testing.T, xdsAddr string) *stack.Mesh {
	t.Helper()
	return startMeshNamed(t, xdsAddr, "", meshName)
}

// startMeshNamed is startMesh with the stack's instances named name
// (stack.Options.Name; "" is the default) monitoring the namespaces of
// mesh: a second mesh in the cluster, which neither sees the first's
// namespaces nor is admitted by its webhooks.
func startMeshNamed(t *testing.T, xdsAddr, name, mesh string) *stack.Mesh {
	t.Helper()
	m, err := stack.New(t.Context(), stack.Options{Cluster: cluster, Builder: builder, Dir: t.TempDir(), Name: name,
		MeshName: mesh, MeshConfig: meshConfig, ReadyTimeout: 60 * time.Second,
		Flags: map[stack.Component][]string{
			stack.Compiler: {"--proxyless-grpc"},
			stack.Injector: {"--xds-addr", xdsAddr},
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Log(m.Logs())
		}
	})
	if err := m.Start(t.Context(), components...); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestProxylessGRPCBookstore: gRPC-Go clients and servers (bookstore-grpc),
// configured only by the control plane through the edge, carry real calls
// between pod IPs, and the SMI policies decide their fate: the servers see
// bookbuyer's SPIFFE id; 2,000 calls split 75/25 within 4 points; an edit
// of the split shows in the calls (the time from the apply to the first
// call on the new weights is logged, p50 and p99 over repeated edits);
// bookthief, with no TrafficTarget, is refused through the mesh and, with
// its mesh certificate, by the server's RBAC; a client without a mesh
// certificate fails the handshake; a TrafficTarget allowing only Get lets
// Get through and refuses Buy with PermissionDenied; with the
// TrafficTargets deleted no call is served. The proxies NACK nothing.
// Then, each a subtest with calls in flight and 0 failed calls asserted:
// a split backend back from weight 0; edge failover (the edge every
// client is on killed, the next edit through the other); endpoint churn
// (v1 from 3 pods to 1); a certificate rotation and a root rotation.
// Every bootstrap names the edge's Service (edgeService).
func TestProxylessGRPCBookstore(t *testing.T) {
	netns.Require(t)
	bookstoreMesh(t)
	// Every bootstrap names the edge's Service (the injector's --xds-addr);
	// its endpoint is the edge, once it runs.
	edges := newEdgeService(t)
	m := startMesh(t, edges.Addr())
	edges.setEndpoints(m.Addr(stack.Edge))

	// The pods, through the injector: each gets its bootstrap Secret.
	k := cluster.Kubelet("proxyless-node", "zone-a")
	v1 := readyPod(t, k, "bookstore", "bookstore-v1-0", "bookstore-v1", ipStoreV1, map[string]string{"app": "bookstore", "version": "v1"})
	v2 := readyPod(t, k, "bookstore", "bookstore-v2-0", "bookstore-v2", ipStoreV2, map[string]string{"app": "bookstore", "version": "v2"})
	buyer := readyPod(t, k, "bookbuyer", "bookbuyer-0", "bookbuyer", ipBuyer, map[string]string{"app": "bookbuyer"})
	thief := readyPod(t, k, "bookthief", "bookthief-0", "bookthief", ipThief, map[string]string{"app": "bookthief"})
	v1Addr := fmt.Sprintf("%s:%d", ipStoreV1, storePort)
	// The servers close each connection gracefully after 3 s, so that
	// clients reconnect with their current certificates (the certificate
	// rotation below); every call must survive that too.
	v1.serve(t, v1Addr, "v1", "--max-connection-age", "3s")
	v2.serve(t, fmt.Sprintf("%s:%d", ipStoreV2, storePort), "v2", "--max-connection-age", "3s")

	calls := &callLog{}
	buyer.run(t, calls, "call", "--target", target, "--methods", "Buy", "--rate", "500", "--json", "--report", "0")
	// The first calls may fail while the client gets its configuration.
	firstOK := waitCalls(t, calls, 0, 30*time.Second, "a successful call", func(cs []call) int {
		for i, c := range cs {
			if c.Code == "OK" {
				return i + 1
			}
		}
		return -1
	})
	t.Logf("first successful call: #%d; before it %v", firstOK-1, count(calls.from(0)[:firstOK-1]))

	// mTLS and the split: 2,000 calls, all served, each seen by the server
	// as bookbuyer's, 75/25 within 4 points.
	const n = 2000
	start := calls.len()
	waitCalls(t, calls, start, 30*time.Second, fmt.Sprintf("%d calls", n), atLeast(n))
	split := calls.from(start)[:n]
	for _, c := range split {
		if c.Code != "OK" {
			t.Fatalf("a call failed: %+v (of %v)", c, count(split))
		}
		if c.Caller != buyer.id.String() {
			t.Fatalf("the server saw caller %q, want bookbuyer's %s", c.Caller, buyer.id)
		}
	}
	shares := count(split)
	share1 := 100 * float64(shares["Buy v1 OK"]) / n
	t.Logf("split 75/25: %d calls, v1 %d (%.1f%%), v2 %d", n, shares["Buy v1 OK"], share1, shares["Buy v2 OK"])
	if share1 < 71 || share1 > 79 {
		t.Errorf("split 75/25: v1 has %.1f%% of %d calls, want 75 ± 4", share1, n)
	}

	// The edit to 10/90 shows in the calls: 1,000 calls after the change
	// point split 10/90 within 4 points.
	lat := []time.Duration{edit(t, calls, [2]int{75, 25}, [2]int{10, 90})}
	t.Logf("edit to 10/90: the calls follow the new weights %s after the apply", lat[0].Round(time.Millisecond))
	after := calls.len()
	waitCalls(t, calls, after, 30*time.Second, "1,000 calls at 10/90", atLeast(1000))
	shares = count(calls.from(after)[:1000])
	share2 := 100 * float64(shares["Buy v2 OK"]) / 1000
	t.Logf("split 10/90: 1000 calls, v1 %d, v2 %d (%.1f%%)", shares["Buy v1 OK"], shares["Buy v2 OK"], share2)
	if share2 < 86 || share2 > 94 || shares["Buy v1 OK"]+shares["Buy v2 OK"] != 1000 {
		t.Errorf("split 10/90: %v, want v2 at 90 ± 4%% and every call served", shares)
	}
	// More edits, back and forth, for the figures.
	from, to := [2]int{10, 90}, [2]int{75, 25}
	for range 11 {
		lat = append(lat, edit(t, calls, from, to))
		from, to = to, from
	}
	t.Logf("apply to the first call on the new weights, %d edits between 75/25 and 10/90: p50 %s, p99 %s, max %s",
		len(lat), quantile(lat, 0.5), quantile(lat, 0.99), quantile(lat, 1))
	if p50 := quantile(lat, 0.5); p50 > time.Second {
		t.Errorf("an edit of the split shows in the calls after %s (p50), want within 1s", p50)
	}

	// bookthief has no TrafficTarget: through the mesh no call is served
	// (its group has no listener for the bookstore, so its client waits for
	// one until each call's deadline), and dialing a bookstore pod
	// with its mesh certificate the server's RBAC refuses it. A client
	// without a mesh certificate fails the handshake.
	thiefCalls := &callLog{}
	thief.run(t, thiefCalls, "call", "--target", target, "--methods", "Get,Buy", "--rate", "50", "--count", "10", "--timeout", "1s", "--json", "--report", "0")
	waitCalls(t, thiefCalls, 0, 30*time.Second, "10 calls of bookthief", atLeast(10))
	errs := map[string]int{}
	for _, c := range thiefCalls.from(0) {
		if c.Code == "OK" {
			t.Errorf("bookthief's call through the mesh was served: %+v", c)
		}
		errs[c.Code+": "+c.Error]++
	}
	t.Logf("bookthief through the mesh: %v", errs)
	for _, method := range []string{"Get", "Buy"} {
		if code, msg := direct(t, m, thief, v1Addr, method); code != codes.PermissionDenied {
			t.Errorf("bookthief's %s dialing %s with its mesh certificate: %v %s, want PermissionDenied", method, v1Addr, code, msg)
		}
	}
	if code, msg := direct(t, m, nil, v1Addr, "Get"); code == codes.OK || code == codes.PermissionDenied {
		t.Errorf("a client without a mesh certificate: %v %s, want a failed handshake", code, msg)
	} else {
		t.Logf("a client without a mesh certificate: %v %s", code, msg)
	}

	// A TrafficTarget that allows only Get: Get is served, Buy refused with
	// PermissionDenied.
	both := &callLog{}
	buyer.run(t, both, "call", "--target", target, "--methods", "Get,Buy", "--rate", "200", "--json", "--report", "0")
	waitCalls(t, both, 0, 30*time.Second, "Get and Buy served", func(cs []call) int {
		if c := count(cs); c["Get v1 OK"]+c["Get v2 OK"] > 0 && c["Buy v1 OK"]+c["Buy v2 OK"] > 0 {
			return len(cs)
		}
		return -1
	})
	t0, mark := time.Now(), both.len()
	for _, sa := range []string{"bookstore-v1", "bookstore-v2"} {
		patch(t, kube.TrafficTargets, "bookstore", "bookbuyer-access-"+sa, `{"spec":{"rules":[{"kind":"HTTPRouteGroup","name":"bookstore-routes","matches":["get"]}]}}`)
	}
	denied := waitCalls(t, both, mark, 10*time.Second, "Buy refused", func(cs []call) int {
		for i, c := range cs {
			if c.Method == "Buy" && c.Code == "PermissionDenied" {
				return i + 1
			}
		}
		return -1
	})
	t.Logf("Get-only TrafficTarget: the first Buy refused %s after the apply", calls0(both, mark, denied).at().Sub(t0).Round(time.Millisecond))
	// Both TrafficTargets were edited; give the second edit time to land,
	// then every call must follow the new rules.
	time.Sleep(time.Second)
	settled := both.len()
	waitCalls(t, both, settled, 30*time.Second, "200 calls under the Get-only target", atLeast(200))
	got := count(both.from(settled)[:200])
	if got["Get v1 OK"]+got["Get v2 OK"] != 100 || got["Buy - PermissionDenied"] != 100 {
		t.Errorf("under the Get-only TrafficTarget: %v, want every Get served and every Buy PermissionDenied", got)
	}
	t.Logf("under the Get-only TrafficTarget: %v", got)

	// Deleting the TrafficTargets denies every call.
	t0, mark = time.Now(), both.len()
	for _, sa := range []string{"bookstore-v1", "bookstore-v2"} {
		if err := cluster.Dynamic().Resource(kube.TrafficTargets).Namespace("bookstore").Delete(t.Context(), "bookbuyer-access-"+sa, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	denied = waitCalls(t, both, mark, 10*time.Second, "Get refused", func(cs []call) int {
		for i, c := range cs {
			if c.Method == "Get" && c.Code != "OK" {
				return i + 1
			}
		}
		return -1
	})
	first := calls0(both, mark, denied)
	t.Logf("TrafficTargets deleted: the first Get refused %s after the delete (%s)", first.at().Sub(t0).Round(time.Millisecond), first.Code)
	time.Sleep(time.Second)
	settled = both.len()
	waitCalls(t, both, settled, 30*time.Second, "200 calls without TrafficTargets", atLeast(200))
	got = count(both.from(settled)[:200])
	if served := got["Get v1 OK"] + got["Get v2 OK"] + got["Buy v1 OK"] + got["Buy v2 OK"]; served != 0 {
		t.Errorf("without TrafficTargets %d of 200 calls were served: %v", served, got)
	}
	t.Logf("without TrafficTargets: %v; e.g. %s", got, both.from(settled)[0].Error)

	if n := nacks(t, m); n != 0 {
		t.Errorf("the edge counted %v NACKs", n)
	}
	if acks, err := apptest.MetricValue(m.AdminAddr(stack.Edge), "osm_xds_push_ack_latency_seconds_count", ""); err != nil || acks == 0 {
		t.Errorf("the edge counted no ACK (%v, %v): the NACK count says nothing", acks, err)
	}

	// A split backend whose weight goes to 0 and back. gRPC drops the
	// cluster, then asks for it again in a CDS request that carries the
	// nonce it already ACKed; the edge took that request as stale and
	// ignored it (the cluster never came, the client kept the old routes)
	// until it told the newest nonce from older ones (xds-edge sotw.go).
	t.Run("split backend back from weight 0", func(t *testing.T) {
		for _, sa := range []string{"bookstore-v1", "bookstore-v2"} {
			create(t, kube.TrafficTargets, "bookstore", trafficTarget(sa, "get", "buy"))
		}
		waitCalls(t, calls, calls.len(), 10*time.Second, "Buy served again", func(cs []call) int {
			if k := len(cs); k >= 50 && count(cs[k-50:])["Buy - PermissionDenied"] == 0 {
				return k
			}
			return -1
		})
		reAdd(t, calls)
	})

	// Edge failover: a second edge joins the Service; the first, which
	// every client is connected to, is killed (SIGKILL). A bookbuyer
	// client at 50 calls per second fails none, and the next split edit
	// still reaches it, through the second edge.
	t.Run("edge failover", func(t *testing.T) {
		edgeFailover(t, m, edges, buyer)
	})

	// Endpoint churn: bookstore v1 runs 3 pods, the split sends it every
	// call, and 2 of the pods are made not ready (the scale-down's first
	// step): the calls stop going to them within 1 s, and none fails.
	t.Run("endpoint churn", func(t *testing.T) {
		endpointChurn(t, calls)
	})

	// Certificate rotation: the service certificates of bookbuyer and of
	// the bookstore pods are replaced by new ones from the mesh's CA, with
	// calls at 50/s: none fails, the server sees the client's new
	// certificate, and a new handshake gets the server's new one.
	t.Run("certificate rotation", func(t *testing.T) {
		certRotation(t, m, buyer, []*workload{v1, v2}, v1Addr)
	})

	// Root rotation, in the three steps the soak takes (the CA restarted
	// with new flags each time): a new root is added to the bundle and the
	// workloads' trust files; the CA signs with it and every workload gets
	// certificates from it; the old root is removed. Calls at 50/s: none
	// fails.
	t.Run("root rotation", func(t *testing.T) {
		rootRotation(t, m, edges.Addr(), buyer, []*workload{buyer, v1, v2})
	})
}

// updateSecret sets the keys of files in w's bootstrap Secret through the
// apiserver (a merge patch, as the injector's renewal replaces them) and
// waits until the kubelet stand-in has written them into w's volume.
func updateSecret(t *testing.T, w *workload, files map[string][]byte) {
	t.Helper()
	b, err := json.Marshal(map[string]any{"data": files}) // []byte as base64, as data wants
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cluster.Clientset().CoreV1().Secrets(w.vol.Namespace).Patch(t.Context(), w.vol.Secret, types.MergePatchType, b, metav1.PatchOptions{}); err != nil {
		t.Fatalf("patch Secret %s/%s: %v", w.vol.Namespace, w.vol.Secret, err)
	}
	if err := stack.Eventually(t.Context(), 10*time.Second, func() error {
		for name, want := range files {
			if got, err := os.ReadFile(w.path(name)); err != nil || !bytes.Equal(got, want) {
				return fmt.Errorf("%s of %s not written yet (%v)", name, w.pod.Name, err)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// refresh is how often w's gRPC reads its certificate files again: the
// refresh_interval of the bootstrap's certificate provider, as the
// injector wrote it.
func refresh(t *testing.T, w *workload) time.Duration {
	t.Helper()
	var boot struct {
		Providers map[string]struct {
			Config struct {
				Refresh string `json:"refresh_interval"`
			} `json:"config"`
		} `json:"certificate_providers"`
	}
	if err := json.Unmarshal(must(os.ReadFile(w.path("bootstrap.json"))), &boot); err != nil {
		t.Fatal(err)
	}
	d, err := time.ParseDuration(boot.Providers[layout.CertProviderInstance].Config.Refresh)
	if err != nil {
		t.Fatalf("%s's bootstrap: refresh_interval of %s: %v", w.pod.Name, layout.CertProviderInstance, err)
	}
	return d
}

// pemBlock is the DER of the first PEM block of b.
func pemBlock(t *testing.T, b []byte) []byte {
	t.Helper()
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatal("no PEM block")
	}
	return blk.Bytes
}

// servedFrom dials addr and checks that the certificate it serves was
// issued by root. The handshake may then fail for want of a client
// certificate; the server's certificate was seen first.
func servedFrom(addr string, root *x509.Certificate) error {
	var chain []*x509.Certificate
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			for _, der := range raw {
				if c, err := x509.ParseCertificate(der); err == nil {
					chain = append(chain, c)
				}
			}
			return nil
		}})
	if err == nil {
		conn.Close()
	}
	if len(chain) == 0 {
		return fmt.Errorf("%s served no certificate: %v", addr, err)
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root)
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("%s serves a certificate not from the new root (serial %s): %v", addr, chain[0].SerialNumber, err)
	}
	return nil
}

// pemCount is the number of PEM blocks in b.
func pemCount(b []byte) int {
	n := 0
	for rest := b; ; n++ {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			return n
		}
	}
}

// rootRotation: see the subtest.
func rootRotation(t *testing.T, m *stack.Mesh, edgeAddr string, buyer *workload, ws []*workload) {
	const oldRoot, newRoot = "osm-ca-root", "osm-ca-root-proxyless"
	rr := &callLog{}
	buyer.run(t, rr, "call", "--target", target, "--methods", "Buy", "--rate", "50", "--json", "--report", "0")
	waitCalls(t, rr, 0, 30*time.Second, "25 calls served in a row at 50/s", func(cs []call) int {
		if k := len(cs); k >= 25 && count(cs[k-25:])["Buy v1 OK"] == 25 {
			return k
		}
		return -1
	})
	before := caclient.RootsPEM(m.Bundle())
	every := refresh(t, buyer)
	mark := rr.len()
	t0 := time.Now()
	step := func(name string, roots int, flags ...string) {
		t.Helper()
		if err := m.Restart(t.Context(), stack.CertAuthority, flags...); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if n := len(m.Bundle().GetRoots()); n != roots {
			t.Fatalf("%s: the bundle holds %d roots, want %d", name, n, roots)
		}
	}
	// trust waits until the injector has written the bundle into every
	// workload's ca.crt (and spiffe-bundle.json with it) and the stand-in
	// into its volume, then for the file watchers to read it.
	trust := func(what string) {
		t.Helper()
		t1 := time.Now()
		for _, w := range ws {
			if err := stack.Eventually(t.Context(), 30*time.Second, func() error {
				ca := must(os.ReadFile(w.path("ca.crt")))
				for _, r := range m.Bundle().GetRoots() {
					if !bytes.Contains(ca, bytes.TrimSpace(r.GetCertificatePem())) {
						return fmt.Errorf("%s's ca.crt lacks a root of the bundle", w.pod.Name)
					}
				}
				if n, want := pemCount(ca), len(m.Bundle().GetRoots()); n != want {
					return fmt.Errorf("%s's ca.crt holds %d roots, want %d", w.pod.Name, n, want)
				}
				return nil
			}); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		}
		t.Logf("root rotation, %s: the injector's new ca.crt in every volume %s after the CA's restart", what, time.Since(t1).Round(time.Millisecond))
		time.Sleep(every + time.Second) // the file watchers' refresh
	}
	// 1: add the new root; the injector makes every workload trust both.
	step("add a root", 2, "--trusted-root-secrets", newRoot)
	trust("a root added")
	// 2: sign with the new root; every workload gets certificates from it.
	step("sign with the new root", 2, "--root-secret", newRoot, "--trusted-root-secrets", oldRoot)
	var newBuyer string
	for _, w := range ws {
		svc, err := m.ServiceCert(t.Context(), w.id, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		xds, err := m.WorkloadCert(t.Context(), w.id, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		updateSecret(t, w, map[string][]byte{"svc.key": svc.KeyPEM, "svc.crt": svc.ChainPEM, "tls.key": xds.KeyPEM, "tls.crt": xds.ChainPEM})
		if w == buyer {
			newBuyer = leafSerial(t, svc.ChainPEM)
		}
	}
	seen := waitCalls(t, rr, mark, every+20*time.Second, "a call made with the client's certificate from the new root", func(cs []call) int {
		for i, c := range cs {
			if c.CallerSerial == newBuyer {
				return i + 1
			}
		}
		return -1
	})
	t.Logf("root rotation: the server saw the client's certificate from the new root %s after the first step", rr.from(mark)[seen-1].at().Sub(t0).Round(time.Millisecond))
	// The injector's and the edge's own certificates (the injector calls
	// the CA with its own, its trust bundle watch included; the edge serves
	// ADS with its own) are reissued from the new root when the bundle
	// says it signs, without a restart. Meanwhile every workload's gRPC
	// reads its new certificates, and every connection passes the
	// servers' 3 s age.
	t1 := time.Now()
	signing, err := x509.ParseCertificate(pemBlock(t, caclient.SigningRootPEM(m.Bundle())))
	if err != nil {
		t.Fatal(err)
	}
	for c, addr := range map[stack.Component]string{stack.Injector: m.Addr(stack.Injector), stack.Edge: edgeAddr} {
		if err := stack.Eventually(t.Context(), 30*time.Second, func() error { return servedFrom(addr, signing) }); err != nil {
			t.Fatalf("root rotation: %s's own certificate: %v", c, err)
		}
		t.Logf("root rotation: %s serves its own certificate from the new root %s after the workloads' certificates were asked for", c, time.Since(t1).Round(time.Millisecond))
	}
	time.Sleep(every + 4*time.Second - time.Since(t1))
	// 3: remove the old root; the injector makes every workload trust the
	// new one only.
	step("remove the old root", 1, "--root-secret", newRoot, "--trusted-root-secrets", "")
	trust("the old root removed")
	// The remaining root is the new one, and every workload's certificates
	// chain to it.
	if r := m.Bundle().GetRoots()[0].GetCertificatePem(); bytes.Contains(before, bytes.TrimSpace(r)) {
		t.Fatal("the root left after the rotation is the old one")
	}
	pool, err := caclient.RootPool(m.Bundle())
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range ws {
		for _, f := range []string{"svc.crt", "tls.crt"} {
			if err := verifyChain(must(os.ReadFile(w.path(f))), pool); err != nil {
				t.Fatalf("%s's %s does not chain to the new root: %v", w.pod.Name, f, err)
			}
		}
	}
	// Five more seconds of calls: new handshakes trusting the new root
	// alone.
	after := rr.len()
	waitCalls(t, rr, after, 30*time.Second, "5 s of calls after the old root's removal", atLeast(250))
	cs := rr.from(mark)
	for _, c := range cs {
		if c.Code != "OK" {
			t.Errorf("a call failed during the root rotation: %+v", c)
		}
	}
	if last := cs[len(cs)-1]; last.CallerSerial != newBuyer {
		t.Errorf("the last call was made with the client's certificate %s, want the new root's %s", last.CallerSerial, newBuyer)
	}
	t.Logf("root rotation: %d calls at 50/s over %s: %v", len(cs), time.Since(t0).Round(time.Millisecond), count(cs))
}

// rotate replaces w's service certificate in its bootstrap Secret with a
// new one from the mesh's CA, and returns the new certificate's serial
// in hex.
func rotate(t *testing.T, m *stack.Mesh, w *workload) string {
	t.Helper()
	is, err := m.ServiceCert(t.Context(), w.id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	updateSecret(t, w, map[string][]byte{"svc.key": is.KeyPEM, "svc.crt": is.ChainPEM})
	return leafSerial(t, is.ChainPEM)
}

// verifyChain verifies a PEM chain's leaf against roots.
func verifyChain(chain []byte, roots *x509.CertPool) error {
	var certs []*x509.Certificate
	for rest := chain; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return err
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return fmt.Errorf("no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err
}

// leafSerial is the serial (hex) of the first certificate of a PEM chain.
func leafSerial(t *testing.T, chain []byte) string {
	t.Helper()
	b, _ := pem.Decode(chain)
	if b == nil {
		t.Fatal("no PEM block in the chain")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c.SerialNumber.Text(16)
}

// certRotation: see the subtest.
func certRotation(t *testing.T, m *stack.Mesh, buyer *workload, stores []*workload, storeAddr string) {
	old := leafSerial(t, must(os.ReadFile(buyer.path("svc.crt"))))
	oldStore := leafSerial(t, must(os.ReadFile(stores[0].path("svc.crt"))))
	rot := &callLog{}
	buyer.run(t, rot, "call", "--target", target, "--methods", "Buy", "--rate", "50", "--json", "--report", "0")
	waitCalls(t, rot, 0, 30*time.Second, "25 calls served in a row at 50/s", func(cs []call) int {
		if k := len(cs); k >= 25 && count(cs[k-25:])["Buy v1 OK"] == 25 {
			return k
		}
		return -1
	})
	if got := rot.from(0); got[len(got)-1].CallerSerial != old {
		t.Fatalf("before the rotation the server saw the client's serial %q, want %s", got[len(got)-1].CallerSerial, old)
	}
	mark := rot.len()
	t0 := time.Now()
	newSerial := rotate(t, m, buyer)
	var newStore string
	for i, w := range stores {
		if s := rotate(t, m, w); i == 0 {
			newStore = s
		}
	}
	every := refresh(t, buyer)
	seen := waitCalls(t, rot, mark, every+20*time.Second, "a call made with the client's new certificate", func(cs []call) int {
		for i, c := range cs {
			if c.CallerSerial == newSerial {
				return i + 1
			}
		}
		return -1
	})
	t.Logf("certificates rotated: the server saw the client's new certificate (serial %s, was %s) %s later",
		newSerial, old, rot.from(mark)[seen-1].at().Sub(t0).Round(time.Millisecond))
	// The server's side: a new handshake gets its new certificate.
	if err := stack.Eventually(t.Context(), every+10*time.Second, func() error {
		if got := serverSerial(t, m, buyer, storeAddr); got != newStore {
			return fmt.Errorf("the server presents serial %s (old %s), want the new %s", got, oldStore, newStore)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// Three more seconds of calls (past the servers' connection age), then
	// none may have failed since the rotation.
	waitCalls(t, rot, mark, 30*time.Second, "3 s of calls after the rotation", atLeast(seen+150))
	cs := rot.from(mark)
	for _, c := range cs {
		if c.Code != "OK" {
			t.Errorf("a call failed during the certificate rotation: %+v", c)
		}
	}
	if last := cs[len(cs)-1]; last.CallerSerial != newSerial {
		t.Errorf("the last call was made with the client's certificate %s, want the new %s", last.CallerSerial, newSerial)
	}
	t.Logf("%d calls at 50/s from the rotation on: %v", len(cs), count(cs))
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// endpointChurn: see the subtest. The two extra pods' servers answer
// with versions v1.b and v1.c, so that the calls tell the pods apart;
// they keep serving after they are made not ready, as a terminating pod
// does during its grace period.
func endpointChurn(t *testing.T, calls *callLog) {
	k := cluster.Kubelet("proxyless-node", "zone-a")
	extra := map[string]string{"bookstore-v1-1": ipStoreV1b, "bookstore-v1-2": ipStoreV1c}
	versions := map[string]string{"bookstore-v1-1": "v1.b", "bookstore-v1-2": "v1.c"}
	for _, pod := range []string{"bookstore-v1-1", "bookstore-v1-2"} {
		// The pod first: the server's listener is its pod IP's.
		w := readyPod(t, k, "bookstore", pod, "bookstore-v1", extra[pod], map[string]string{"app": "bookstore", "version": "v1"})
		w.serve(t, fmt.Sprintf("%s:%d", extra[pod], storePort), versions[pod])
	}
	patch(t, kube.TrafficSplits, "bookstore", "bookstore-split", splitPatch(100, 0))
	waitCalls(t, calls, calls.len(), 30*time.Second, "calls answered by the 3 pods of v1", func(cs []call) int {
		if k := len(cs); k >= 300 {
			c := count(cs[k-300:])
			if c["Buy v1 OK"] > 0 && c["Buy v1.b OK"] > 0 && c["Buy v1.c OK"] > 0 && c["Buy v1 OK"]+c["Buy v1.b OK"]+c["Buy v1.c OK"] == 300 {
				return k
			}
		}
		return -1
	})
	mark := calls.len()
	t0 := time.Now()
	for pod, ip := range extra {
		p, err := cluster.Clientset().CoreV1().Pods("bookstore").Get(t.Context(), pod, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := k.MakeNotReady(t.Context(), p, ip); err != nil {
			t.Fatal(err)
		}
	}
	// Two seconds of calls at 500/s: the last one answered by a removed
	// pod must have started within 1 s of the change.
	waitCalls(t, calls, mark, 30*time.Second, "1,000 calls after the scale-down", atLeast(1000))
	cs := calls.from(mark)[:1000]
	var last time.Duration
	for _, c := range cs {
		if c.Code != "OK" {
			t.Errorf("a call failed during the scale-down: %+v", c)
		}
		if c.Backend == "v1.b" || c.Backend == "v1.c" {
			last = max(last, c.at().Sub(t0))
		}
	}
	t.Logf("v1 scaled from 3 pods to 1: the last call to a removed pod %s after the change; %d calls: %v", last.Round(time.Millisecond), len(cs), count(cs))
	if last > time.Second {
		t.Errorf("calls went to the removed pods until %s after the change, want within 1s", last.Round(time.Millisecond))
	}
	if tail := count(cs[len(cs)-250:]); tail["Buy v1 OK"] != 250 {
		t.Errorf("the last 250 calls after the scale-down: %v, want all answered by the remaining pod", tail)
	}
}

// edgeFailover: see the subtest. Each call is one attempt: the client
// sets neither gRPC retries nor wait-for-ready, so nothing hides a failed
// call. The calls need no edge while it is away (gRPC keeps the resources
// it has), which is the point: the edge's crash must not reach the data
// path, and the client must find the other edge for the next edit.
func edgeFailover(t *testing.T, m *stack.Mesh, edges *edgeService, buyer *workload) {
	a := m.Addr(stack.Edge)
	b, err := m.StartInstance(t.Context(), stack.Edge, "--pod-name", meshName+"-edge-1")
	if err != nil {
		t.Fatal(err)
	}
	edges.setEndpoints(a, b.Addr)
	// Both versions in use before and after the edit: the edit must not
	// add a cluster gRPC dropped, whose first calls can fail on their own
	// (see "unknown cluster" in the report), whatever the edges do.
	patch(t, kube.TrafficSplits, "bookstore", "bookstore-split", splitPatch(50, 50))
	fo := &callLog{}
	buyer.run(t, fo, "call", "--target", target, "--methods", "Buy", "--rate", "50", "--json", "--report", "0")
	waitCalls(t, fo, 0, 30*time.Second, "50 calls served in a row at 50/s by both versions", func(cs []call) int {
		if c := count(cs[max(0, len(cs)-50):]); c["Buy v1 OK"] > 0 && c["Buy v2 OK"] > 0 && c["Buy v1 OK"]+c["Buy v2 OK"] == 50 {
			return len(cs)
		}
		return -1
	})
	if n := edges.count(b.Addr); n != 0 {
		t.Fatalf("%d connections went to the second edge before the first was killed", n)
	}
	connected := func(admin string) float64 {
		v, _ := apptest.MetricValue(admin, "osm_xds_connected_proxies", "")
		return v
	}
	onA := connected(m.AdminAddr(stack.Edge))
	t.Logf("the first edge holds %v xDS streams (every client's, the new one's included)", onA)

	mark := fo.len()
	t0 := time.Now()
	if err := m.Proc(stack.Edge).Kill(); err != nil {
		t.Fatal(err)
	}
	if err := stack.Eventually(t.Context(), 30*time.Second, func() error {
		if got := connected(b.Admin); got < onA {
			return fmt.Errorf("the second edge holds %v xDS streams, want %v", got, onA)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("edge killed: every client back on the second edge %s later", time.Since(t0).Round(time.Millisecond))

	t1 := time.Now()
	patch(t, kube.TrafficSplits, "bookstore", "bookstore-split", splitPatch(1, 99))
	got := waitCalls(t, fo, mark, 10*time.Second, "the edit to 1/99 after the failover", func(cs []call) int {
		// 40 calls to v2 in a row: 1 in 3e4 under 50/50, 2 in 3 under 1/99.
		for i := range cs {
			if i >= 40 && count(cs[i-40 : i])["Buy v2 OK"] == 40 {
				return i - 39 // the run's first call, 1-based
			}
		}
		return -1
	})
	t.Logf("edit to 1/99 after the failover: the calls on the new weights from %s after the apply", fo.from(mark)[got-1].at().Sub(t1).Round(time.Millisecond))
	// One more second of calls, then none may have failed since the kill.
	waitCalls(t, fo, mark, 30*time.Second, "a second of calls after the edit", atLeast(got+90))
	cs := fo.from(mark)
	for _, c := range cs {
		if c.Code != "OK" {
			t.Errorf("a call failed after the first edge was killed: %+v", c)
		}
	}
	t.Logf("%d calls at 50/s from the kill on: %v", len(cs), count(cs))
}

// calls0 is the i-th call (1-based) from mark.
func calls0(l *callLog, mark, i int) call { return l.from(mark)[i-1] }

// atLeast is a waitCalls condition: n calls.
func atLeast(n int) func([]call) int {
	return func(cs []call) int {
		if len(cs) >= n {
			return n
		}
		return -1
	}
}

// waitCalls waits until cond, given the calls from mark on, returns a
// positive number, and returns it; it fails the test after within.
func waitCalls(t *testing.T, l *callLog, mark int, within time.Duration, what string, cond func([]call) int) int {
	t.Helper()
	var got int
	err := stack.Eventually(t.Context(), within, func() error {
		if got = cond(l.from(mark)); got > 0 {
			return nil
		}
		return fmt.Errorf("%d calls so far: %v", l.len()-mark, count(l.from(mark)))
	})
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
	return got
}

// edit changes the split from the weights from (v1, v2) to to and
// returns the time from the apply to the first call on the new weights:
// the change point of the calls that follow, the call before which the
// answering versions are likeliest under the old weights and from which on
// under the new ones (a call every 2 ms puts it within a few calls). Every
// call must be served.
func edit(t *testing.T, calls *callLog, from, to [2]int) time.Duration {
	t.Helper()
	mark := calls.len()
	t0 := time.Now()
	patch(t, kube.TrafficSplits, "bookstore", "bookstore-split", splitPatch(to[0], to[1]))
	const window = 500 // 1 s of calls at 500 per second
	waitCalls(t, calls, mark, 30*time.Second, fmt.Sprintf("%d calls after the edit to %d/%d", window, to[0], to[1]), atLeast(window))
	cs := calls.from(mark)[:window]
	for _, c := range cs {
		if c.Code != "OK" {
			t.Fatalf("a call failed during the edit to %d/%d: %+v", to[0], to[1], c)
		}
	}
	k := changePoint(cs, from, to)
	if k == len(cs) {
		t.Fatalf("the calls never followed the edit from %v to %v: %v", from, to, count(cs))
	}
	return max(0, cs[k].at().Sub(t0))
}

// changePoint is the index of the first call of cs answered under the
// weights to rather than from: the k that minimises the sum, over the
// calls before k, of log(P(backend | to) / P(backend | from)).
func changePoint(cs []call, from, to [2]int) int {
	p := func(w [2]int, backend string) float64 {
		if backend == "v1" {
			return float64(w[0]) / float64(w[0]+w[1])
		}
		return float64(w[1]) / float64(w[0]+w[1])
	}
	best, bestK, sum := 0.0, 0, 0.0
	for i, c := range cs {
		sum += math.Log(p(to, c.Backend) / p(from, c.Backend))
		if sum < best {
			best, bestK = sum, i+1
		}
	}
	return bestK
}

// reAdd flips the split to 0/100 and then to 100/0, so that the client's
// gRPC drops the cluster of v1 and subscribes to it again, and waits for a
// call answered by v1.
func reAdd(t *testing.T, calls *callLog) {
	t.Helper()
	patch(t, kube.TrafficSplits, "bookstore", "bookstore-split", splitPatch(0, 100))
	waitCalls(t, calls, calls.len(), 10*time.Second, "100 calls to v2 alone", func(cs []call) int {
		if k := len(cs); k >= 100 && count(cs[k-100:])["Buy v2 OK"] == 100 {
			return k
		}
		return -1
	})
	mark := calls.len()
	patch(t, kube.TrafficSplits, "bookstore", "bookstore-split", splitPatch(100, 0))
	waitCalls(t, calls, mark, 10*time.Second, "a call to v1 after 0/100 then 100/0", func(cs []call) int {
		for i, c := range cs {
			if c.Backend == "v1" {
				return i + 1
			}
		}
		return -1
	})
}

// quantile is the q-quantile of ds (nearest rank).
func quantile(ds []time.Duration, q float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))].Round(time.Millisecond)
}
