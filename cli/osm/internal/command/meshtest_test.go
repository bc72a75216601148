package command

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/openservicemesh/osm/libs/caclient"
	"github.com/openservicemesh/osm/libs/identity"
	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/osmctx"
	"github.com/openservicemesh/osm/libs/xdstest"
	osmkube "github.com/openservicemesh/osm/tests/kube"
	"github.com/openservicemesh/osm/tests/stack"
)

// testMesh is the mesh's services as processes (tests/stack) on the
// harness cluster, which the CLI reaches through a context file, as
// against the dev stack: the shared setup of the tests that run osm
// against a live mesh.
type testMesh struct {
	*stack.Mesh
	// cpNS is the control plane's namespace, appNS a namespace of the
	// mesh named mesh; mcName its MeshConfig.
	cpNS, mesh, mcName, appNS string
	// dir holds the stack's files; ctxFile is the context file.
	dir, ctxFile string
	// edge is the edge's context entry (its debug API).
	edge osmctx.Endpoint
}

// testMeshOptions configure startTestMesh.
type testMeshOptions struct {
	// name prefixes everything: namespaces osm-<name> and <name>-app,
	// mesh <name>.
	name string
	// smi turns permissive mode off: the compiler judges the policies.
	smi bool
	// pods are created and made ready in the app namespace before the
	// services start, on a node <name>-node: the edge admits a proxy only
	// once its identity has a running pod in the compiled mesh.
	pods []testPod
	// before, when set, runs once the namespaces and pods exist, before
	// the services start: objects created then are in the first
	// generation, and no later edit races the test's first reads.
	before func(tm *testMesh)
}

// testPod is a pod of ServiceAccount sa at ip, meshed with proxy node id
// node (none when empty).
type testPod struct{ name, sa, node, ip string }

// startTestMesh applies the chart's CRDs (removed at the end when the test
// added them), creates the namespaces (the app's out of the mesh again at
// the end), the ServiceAccount osm-operator and the MeshConfig, starts the
// pods, starts the cert-authority, the smi-watcher, the policy-compiler and
// an edge with its
// debug API, and writes a context file naming them all, their admin
// listeners and NATS's monitoring.
func startTestMesh(t *testing.T, o testMeshOptions) *testMesh {
	t.Helper()
	ctx := t.Context()
	cs := cluster.Clientset()
	tm := &testMesh{cpNS: "osm-" + o.name, mesh: o.name, mcName: o.name + "-mesh-config", appNS: o.name + "-app", dir: t.TempDir()}
	withChartCRDs(t)
	mustCreate := func(_ any, err error) {
		t.Helper()
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	mustCreate(cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: tm.cpNS}}, metav1.CreateOptions{}))
	mustCreate(cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: tm.appNS,
		Labels: map[string]string{layout.LabelMonitoredBy: tm.mesh}}}, metav1.CreateOptions{}))
	t.Cleanup(func() {
		unlabel := []byte(`{"metadata":{"labels":{"` + layout.LabelMonitoredBy + `":null}}}`)
		if _, err := cs.CoreV1().Namespaces().Patch(context.Background(), tm.appNS, types.MergePatchType, unlabel, metav1.PatchOptions{}); err != nil {
			t.Errorf("take %s out of the mesh: %v", tm.appNS, err)
		}
	})
	mustCreate(cs.CoreV1().ServiceAccounts(tm.cpNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "osm-operator"}}, metav1.CreateOptions{}))
	mc := unstructuredMeshConfig(tm.mcName)
	if o.smi {
		mc.Object["spec"] = map[string]any{"traffic": map[string]any{"enablePermissiveTrafficPolicyMode": false}}
	}
	mustCreate(cluster.Dynamic().Resource(osmkube.MeshConfigs).Namespace(tm.cpNS).Create(ctx, mc, metav1.CreateOptions{}))

	if len(o.pods) > 0 {
		kubelet := cluster.Kubelet(o.name+"-node", "zone-a")
		if _, err := kubelet.Register(ctx); err != nil {
			t.Fatal(err)
		}
		for _, p := range o.pods {
			tm.meshedPod(t, kubelet, p.name, p.sa, p.node, p.ip)
		}
	}

	if o.before != nil {
		o.before(tm)
	}

	debugAddr, err := stack.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	tm.edge = osmctx.Endpoint{Name: o.name + "-edge-0", Addr: debugAddr}
	m, err := stack.New(ctx, stack.Options{
		Cluster: cluster, Dir: tm.dir, Builder: testBuilder, Name: o.name, MeshName: tm.mesh, Namespace: tm.cpNS, MeshConfig: tm.mcName,
		Flags: map[stack.Component][]string{stack.Edge: {"--debug-addr", debugAddr}},
	})
	if err != nil {
		t.Fatal(err)
	}
	tm.Mesh = m
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("stop the mesh: %v", err)
		}
		if t.Failed() {
			t.Log(m.Logs())
		}
	})
	if err := m.Start(ctx, stack.CertAuthority, stack.Watcher, stack.Compiler, stack.Edge); err != nil {
		t.Fatal(err)
	}

	tm.writeContext(t)
	return tm
}

// writeContext writes the context file: the CA, the edge and more edges,
// the compiler, every component's admin listener and NATS's monitoring.
func (tm *testMesh) writeContext(t *testing.T, moreEdges ...osmctx.Endpoint) {
	t.Helper()
	roots := filepath.Join(tm.dir, "osm-roots.pem")
	if err := os.WriteFile(roots, caclient.RootsPEM(tm.Bundle()), 0o600); err != nil {
		t.Fatal(err)
	}
	f := &osmctx.File{
		Kubeconfig: cluster.KubeconfigPath(), Namespace: tm.cpNS, CARootsFile: roots,
		CertAuthority: osmctx.Endpoint{Addr: tm.Addr(stack.CertAuthority), ServerName: tm.CAServerName()},
		Edges:         append([]osmctx.Endpoint{tm.edge}, moreEdges...),
		Compilers:     []osmctx.Endpoint{{Name: tm.mesh + "-compiler", Addr: tm.AdminAddr(stack.Compiler)}},
	}
	for _, c := range tm.Started() {
		f.Admins = append(f.Admins, osmctx.Endpoint{Name: tm.mesh + "-" + string(c), Addr: tm.AdminAddr(c)})
	}
	for i, u := range tm.NATS().MonitorURLs() {
		mu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		f.NATSMonitors = append(f.NATSMonitors, osmctx.Endpoint{Name: fmt.Sprintf("%s-nats-%d", tm.mesh, i), Addr: mu.Host})
	}
	tm.ctxFile = filepath.Join(tm.dir, "osm-context.json")
	if err := osmctx.Write(tm.ctxFile, f); err != nil {
		t.Fatal(err)
	}
}

// osm runs the CLI with the mesh's context file.
func (tm *testMesh) osm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return osm(t, append([]string{"--osm-context", tm.ctxFile}, args...)...)
}

// meshedPod creates a pod of ServiceAccount sa in the app namespace,
// labelled with its proxy's node id as the injector does (unless node is
// empty: a pod out of the mesh), and makes it ready at ip as a kubelet
// would.
func (tm *testMesh) meshedPod(t *testing.T, kubelet *osmkube.Kubelet, name, sa, node, ip string) {
	t.Helper()
	ctx := t.Context()
	cs := cluster.Clientset()
	if _, err := cs.CoreV1().ServiceAccounts(tm.appNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	labels := map[string]string{"app": sa}
	if node != "" {
		labels[layout.LabelProxyUUID] = node
	}
	pod, err := cs.CoreV1().Pods(tm.appNS).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: corev1.PodSpec{ServiceAccountName: sa, Containers: []corev1.Container{{Name: "app", Image: "app",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 14001}}}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kubelet.MakeReady(ctx, pod, ip); err != nil {
		t.Fatal(err)
	}
}

// proxy connects a simulated proxy of ServiceAccount sa with node id node
// to the edge (over delta xDS when delta), with a workload certificate
// from the CA, as a sidecar would; it returns the proxy and its
// certificate.
func (tm *testMesh) proxy(t *testing.T, sa, node string, delta bool) (*xdstest.Proxy, tls.Certificate) {
	t.Helper()
	issued, err := tm.WorkloadCert(t.Context(), identity.New(stack.TrustDomain, tm.appNS, sa), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := tm.DialEdge(issued.Pair)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return xdstest.RunProxy(t, cc, xdstest.ProxyOptions{NodeID: node, Delta: delta, Types: []string{typeCDS, typeEDS, typeLDS, typeRDS, typeSDS}}), issued.Pair
}
