package chart

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	_ "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3" // the CDS responses' type
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	sotwclient "github.com/envoyproxy/go-control-plane/pkg/client/sotw/v3"
	"github.com/nats-io/nats-server/v2/server"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/kube"
	releasev1 "helm.sh/helm/v4/pkg/release/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"

	"github.com/openservicemesh/osm/libs/caclient"
	"github.com/openservicemesh/osm/libs/identity"
	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
	osmkube "github.com/openservicemesh/osm/tests/kube"
	"github.com/openservicemesh/osm/tests/stack"
)

// The one mapping from a pod of the chart to a process on loopback: every
// rendered flag and environment variable is kept except these, which name
// an address or a file the pod has and the process has not. The chart
// README ("Running the chart's pods as processes") shows the same table.
//
//	rendered (in the pod)                          process
//	--admin-addr=:9091                             --admin-addr=127.0.0.1:<free>
//	--grpc-addr=:9443 (CA)                         --grpc-addr=127.0.0.1:<ca>
//	--listen-addr=:<port> (injector, edge)         --listen-addr=127.0.0.1:<free>
//	--debug-addr=:<port> (edge)                    --debug-addr=127.0.0.1:<free>
//	--webhook-service-port=443 (injector)          the injector's port; the Service osm-injector an ExternalName for localhost
//	--nats-url=tls://osm-nats.<ns>.svc...:4222     tls://127.0.0.1:<nats> and --nats-tls-server-name=osm-nats.<ns>.svc... (the rendered host)
//	--nats-ca=/etc/osm/nats-ca/ca.crt              <dir>/nats-ca.crt: Secret osm-nats-ca, key ca.crt
//	--ca-addr=osm-cert-authority.<ns>.svc:15443    127.0.0.1:<ca> and --ca-server-name=osm-cert-authority.<ns>.svc (the rendered host)
//	--ca-trust-file=/etc/osm/ca-roots/ca.crt       <dir>/ca-roots.crt: Secret osm-ca-root, key ca.crt, once the CA created it
//	--ca-bootstrap-token-file=/var/run/...token    <dir>/<component>.ca-token: a TokenRequest for the pod's ServiceAccount
//	                                               with the audience of the pod's projected volume
//	in-cluster config (the pod's mounted token)    --kubeconfig=<dir>/<component>.kubeconfig: the harness's address and CA,
//	                                               a TokenRequest for the pod's ServiceAccount (only where the pod mounts one)
//	env from secretKeyRef                          the live Secret's key; env from fieldRef metadata.name: <deployment>-0
//	nats.conf /etc/nats/tls/, /data/, 0.0.0.0:*    <dir>/, <dir>/data/, 127.0.0.1:<free>
var podPaths = map[string]string{
	"--nats-ca":                 "nats-ca.crt",
	"--ca-trust-file":           "ca-roots.crt",
	"--ca-bootstrap-token-file": "%s.ca-token",
}

// pod is the part of a rendered Deployment the mapping reads.
type pod struct {
	// Name is the Deployment's; PodName the pod's, when the test names it
	// (default <Deployment>-0).
	Name, PodName string
	Spec          struct {
		ServiceAccountName           string `json:"serviceAccountName"`
		AutomountServiceAccountToken *bool  `json:"automountServiceAccountToken"`
		Containers                   []struct {
			Args []string `json:"args"`
			Env  []struct {
				Name      string `json:"name"`
				Value     string `json:"value"`
				ValueFrom *struct {
					SecretKeyRef *struct {
						Name string `json:"name"`
						Key  string `json:"key"`
					} `json:"secretKeyRef"`
					FieldRef *struct {
						FieldPath string `json:"fieldPath"`
					} `json:"fieldRef"`
				} `json:"valueFrom"`
			} `json:"env"`
		} `json:"containers"`
		Volumes []struct {
			Projected *struct {
				Sources []struct {
					ServiceAccountToken *struct {
						Audience string `json:"audience"`
						Path     string `json:"path"`
					} `json:"serviceAccountToken"`
				} `json:"sources"`
			} `json:"projected"`
		} `json:"volumes"`
	} `json:"spec"`
}

// renderedPod reads the pod template of the Deployment name.
func renderedPod(t *testing.T, objs map[string]object, name string) pod {
	t.Helper()
	o, ok := objs["Deployment/"+namespace+"/"+name]
	if !ok {
		t.Fatalf("no Deployment %s rendered", name)
	}
	var d struct {
		Spec struct {
			Template pod `json:"template"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal([]byte(o.YAML), &d); err != nil {
		t.Fatal(err)
	}
	d.Spec.Template.Name = name
	return d.Spec.Template
}

// procEnv maps a rendered pod to a process: its args and env with the
// addresses and paths of the mapping above.
type procEnv struct {
	t     *testing.T
	dir   string
	nats  string            // the NATS client address
	addrs map[string]string // flag -> loopback address, for this process
	ca    string            // the CA's gRPC address
}

// token asks the apiserver for a token of the chart's ServiceAccount sa
// with the audiences (none: the apiserver's).
func token(t *testing.T, sa string, audiences ...string) string {
	t.Helper()
	exp := int64(3600)
	tr, err := cluster.Clientset().CoreV1().ServiceAccounts(namespace).CreateToken(t.Context(), sa,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{Audiences: audiences, ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest for ServiceAccount %s: %v", sa, err)
	}
	return tr.Status.Token
}

// kubeconfig writes the in-cluster config of sa as a kubeconfig file.
func kubeconfig(t *testing.T, dir, sa string) string {
	t.Helper()
	rc := cluster.RESTConfig()
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["harness"] = &clientcmdapi.Cluster{Server: rc.Host, CertificateAuthorityData: rc.CAData}
	cfg.AuthInfos[sa] = &clientcmdapi.AuthInfo{Token: token(t, sa)}
	cfg.Contexts[sa] = &clientcmdapi.Context{Cluster: "harness", AuthInfo: sa}
	cfg.CurrentContext = sa
	path := filepath.Join(dir, sa+".kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// process returns the args and env of p's container as a process.
func (e *procEnv) process(p pod) ([]string, map[string]string) {
	t := e.t
	t.Helper()
	c := p.Spec.Containers[0]
	var args []string
	for _, a := range c.Args {
		flag, val, _ := strings.Cut(a, "=")
		switch {
		case e.addrs[flag] != "":
			a = flag + "=" + e.addrs[flag]
		case flag == "--nats-url":
			// The rendered host is what the chart's NATS certificate names.
			u, err := url.Parse(strings.Split(val, ",")[0])
			if err != nil {
				t.Fatalf("%s %s: %v", p.Name, a, err)
			}
			a = flag + "=tls://" + e.nats
			args = append(args, "--nats-tls-server-name="+u.Hostname())
		case flag == "--ca-addr":
			host, _, err := net.SplitHostPort(val)
			if err != nil {
				t.Fatalf("%s %s: %v", p.Name, a, err)
			}
			a = flag + "=" + e.ca
			args = append(args, "--ca-server-name="+host)
		case podPaths[flag] != "":
			file := podPaths[flag]
			if strings.Contains(file, "%s") {
				file = fmt.Sprintf(file, p.Name)
			}
			a = flag + "=" + filepath.Join(e.dir, file)
		case strings.HasPrefix(val, "/"):
			t.Fatalf("%s: %s names a path in the pod that the mapping does not map", p.Name, a)
		}
		args = append(args, a)
	}
	for _, v := range p.Spec.Volumes {
		if v.Projected == nil {
			continue
		}
		for _, s := range v.Projected.Sources {
			if s.ServiceAccountToken != nil {
				file := filepath.Join(e.dir, p.Name+".ca-token")
				if err := os.WriteFile(file, []byte(token(t, p.Spec.ServiceAccountName, s.ServiceAccountToken.Audience)), 0o600); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if p.Spec.AutomountServiceAccountToken == nil || *p.Spec.AutomountServiceAccountToken {
		args = append(args, "--kubeconfig="+kubeconfig(t, e.dir, p.Spec.ServiceAccountName))
	}
	env := map[string]string{}
	for _, v := range c.Env {
		switch {
		case v.ValueFrom == nil:
			env[v.Name] = v.Value
		case v.ValueFrom.SecretKeyRef != nil:
			ref := v.ValueFrom.SecretKeyRef
			s, err := cluster.Clientset().CoreV1().Secrets(namespace).Get(t.Context(), ref.Name, metav1.GetOptions{})
			if err != nil || s.Data[ref.Key] == nil {
				t.Fatalf("%s: env %s from Secret %s key %s: %v", p.Name, v.Name, ref.Name, ref.Key, err)
			}
			env[v.Name] = string(s.Data[ref.Key])
		case v.ValueFrom.FieldRef != nil && v.ValueFrom.FieldRef.FieldPath == "metadata.name":
			env[v.Name] = cmp.Or(p.PodName, p.Name+"-0")
		default:
			t.Fatalf("%s: env %s has a source the mapping does not map", p.Name, v.Name)
		}
	}
	return args, env
}

// chartMesh is the chart installed with the dev values and every
// component running as a process under its chart identity.
type chartMesh struct {
	caAddr, edgeAddr string
	// edgeDebugAddr is the edge's debug API (xdsEdge.debug).
	edgeDebugAddr string
	procs         map[string]*stack.Proc
	// admins are the components' admin listeners (/readyz, /metrics);
	// natsMonitor is NATS's monitoring listener.
	admins      map[stack.Component]string
	natsMonitor string
	// dir holds the pods' files: ca-roots.crt is the CA's roots.
	dir string
	// manifest is the installed release's.
	manifest string
	// restart stops a component's process and starts it again with the
	// same args and env, as a rollout would, and waits until it is ready.
	restart func(c stack.Component)
}

// testOnlyArgs are flags the test adds to a rendered pod's: each makes a
// code path that needs a rule of the chart's RBAC happen within the test
// instead of minutes later (audit_test.go checks that every rule is used).
var testOnlyArgs = map[stack.Component][]string{
	// The injector deletes a bootstrap Secret without owner and pod once
	// it is this old (default 5m): a pods list and a secrets delete.
	stack.Injector: {"--bootstrap-orphan-grace=1s"},
}

// testOnlyEnv is environment the test adds to every process. client-go
// streams an informer's initial list over a watch (WatchListClient) where
// the apiserver supports it, as kubebox's does, and falls back to a list
// where it does not; the chart grants list and watch for the second case,
// so the processes run as there (the streamed list needs watch alone).
var testOnlyEnv = map[string]string{"KUBE_FEATURE_WatchListClient": "false"}

// startChartMesh installs the chart with the dev values, runs the rendered
// nats.conf in a nats-server and every component's rendered Deployment as
// a process through the mapping, and waits until each is ready. Cleanup
// stops them and uninstalls.
func startChartMesh(t *testing.T) *chartMesh {
	t.Helper()
	in := action.NewInstall(helmConfig(t))
	in.ReleaseName, in.Namespace = releaseName, namespace
	in.CreateNamespace = true
	in.WaitStrategy = kube.HookOnlyStrategy
	r, err := in.RunWithContext(t.Context(), loadChart(t), valuesFile(t, "values-dev.yaml"))
	if err != nil {
		t.Fatalf("install: %v", err)
	}
	uninstallAtCleanup(t)
	return runChartMesh(t, r.(*releasev1.Release).Manifest, nil)
}

// uninstallAtCleanup uninstalls the release when the test ends (after the
// processes stop, cleanups running last first), and deletes what the
// components created and the chart does not own: the CA's root (kept by
// design on a real uninstall) and the leases.
func uninstallAtCleanup(t *testing.T) {
	t.Helper()
	t.Cleanup(func() {
		un := action.NewUninstall(helmConfig(t))
		un.WaitStrategy = kube.HookOnlyStrategy
		if _, err := un.Run(releaseName); err != nil {
			t.Errorf("uninstall: %v", err)
		}
		ctx := context.Background()
		_ = cluster.Clientset().CoreV1().Secrets(namespace).Delete(ctx, "osm-ca-root", metav1.DeleteOptions{})
		_ = cluster.Clientset().CoordinationV1().Leases(namespace).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
	})
}

// runChartMesh runs the release installed with manifest (the dev values):
// the rendered nats.conf in a nats-server, every component's rendered
// Deployment as a process through the mapping, and waits until each is
// ready. podName names a Deployment's pod (its fieldRef metadata.name);
// nil: <Deployment>-0. Cleanup stops them.
func runChartMesh(t *testing.T, manifest string, podName func(deployment string) string) *chartMesh {
	t.Helper()
	ctx := t.Context()
	dir := t.TempDir()
	objs := byKey(t, objects(t, manifest))

	// NATS: the rendered nats.conf with the installed Secrets.
	nf := natsLayout(t, manifest)
	opts, err := server.ProcessConfigFile(nf.conf)
	if err != nil {
		t.Fatalf("nats.conf: %v", err)
	}
	opts.NoSigs, opts.NoLog = true, true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	if err := os.WriteFile(filepath.Join(dir, "nats-ca.crt"), nf.secrets["osm-nats-ca/ca.crt"], 0o600); err != nil {
		t.Fatal(err)
	}

	caAddr, _ := stack.FreeAddr()
	edgeAddr, _ := stack.FreeAddr()
	edgeDebugAddr, _ := stack.FreeAddr()
	m := &chartMesh{caAddr: caAddr, edgeAddr: edgeAddr, edgeDebugAddr: edgeDebugAddr, procs: map[string]*stack.Proc{}, manifest: manifest,
		admins: map[stack.Component]string{}, natsMonitor: fmt.Sprintf("127.0.0.1:%d", nf.monitor), dir: dir}
	b := stack.NewBuilder(filepath.Join(dir, "bin"))
	start := func(c stack.Component, addrs map[string]string) (*stack.Proc, string) {
		t.Helper()
		bt := time.Now()
		bin, err := b.Build(ctx, string(c))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("built %s in %s", c, time.Since(bt).Round(time.Millisecond))
		admin, _ := stack.FreeAddr()
		addrs["--admin-addr"] = admin
		m.admins[c] = admin
		e := &procEnv{t: t, dir: dir, nats: fmt.Sprintf("127.0.0.1:%d", nf.client), addrs: addrs, ca: caAddr}
		pd := renderedPod(t, objs, "osm-"+string(c))
		if podName != nil {
			pd.PodName = podName(pd.Name)
		}
		args, env := e.process(pd)
		args = append(args, testOnlyArgs[c]...)
		for k, v := range testOnlyEnv {
			env[k] = v
		}
		p, err := stack.Start(string(c), bin, args, env, nil)
		if err != nil {
			t.Fatal(err)
		}
		m.procs[string(c)] = p
		t.Cleanup(func() {
			if err := p.Stop(30 * time.Second); err != nil {
				t.Error(err)
			}
			if t.Failed() {
				t.Logf("--- %s ---\n%s", c, p.Output())
			}
		})
		return p, admin
	}
	wait := func(c stack.Component, p *stack.Proc, admin string) {
		t.Helper()
		if err := p.WaitReady(ctx, admin, 90*time.Second); err != nil {
			t.Fatalf("%s: %v\n%s", c, err, p.Output())
		}
	}

	// The CA first: it creates the root Secret whose ca.crt the others
	// trust (the kubelet would project that key).
	p, admin := start(stack.CertAuthority, map[string]string{"--grpc-addr": caAddr})
	wait(stack.CertAuthority, p, admin)
	root, err := cluster.Clientset().CoreV1().Secrets(namespace).Get(ctx, "osm-ca-root", metav1.GetOptions{})
	if err != nil || len(root.Data["ca.crt"]) == 0 {
		t.Fatalf("the CA's root Secret osm-ca-root: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca-roots.crt"), root.Data["ca.crt"], 0o600); err != nil {
		t.Fatal(err)
	}

	// The apiserver reaches the injector through its Service, an
	// ExternalName for localhost.
	webhook, _ := stack.FreeAddr()
	_, port, _ := net.SplitHostPort(webhook)
	svcs := cluster.Clientset().CoreV1().Services(namespace)
	svc, err := svcs.Get(ctx, stack.InjectorService, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svc.Spec = corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "localhost"}
	if _, err := svcs.Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	type started struct {
		c     stack.Component
		p     *stack.Proc
		admin string
	}
	var all []started
	addrsOf := map[stack.Component]map[string]string{
		stack.Watcher:  {},
		stack.Compiler: {},
		stack.Edge:     {"--listen-addr": edgeAddr, "--debug-addr": edgeDebugAddr},
		stack.Injector: {"--listen-addr": webhook, "--webhook-service-port": port},
	}
	for c, addrs := range addrsOf {
		p, admin := start(c, addrs)
		all = append(all, started{c, p, admin})
	}
	for _, s := range all {
		wait(s.c, s.p, s.admin)
	}
	m.restart = func(c stack.Component) {
		t.Helper()
		if err := m.procs[string(c)].Stop(30 * time.Second); err != nil {
			t.Fatal(err)
		}
		p, admin := start(c, addrsOf[c])
		wait(c, p, admin)
	}
	return m
}

// caTLS is the client TLS that verifies the CA as its chart clients do.
func caTLS(t *testing.T) *tls.Config {
	t.Helper()
	root, err := cluster.Clientset().CoreV1().Secrets(namespace).Get(t.Context(), "osm-ca-root", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(root.Data["ca.crt"]) {
		t.Fatal("osm-ca-root's ca.crt holds no certificate")
	}
	return &tls.Config{RootCAs: pool, ServerName: "osm-cert-authority." + namespace + ".svc", MinVersion: tls.VersionTLS12}
}

// TestComponentsRunUnderTheirChartIdentities installs the chart with the
// dev values and runs every component as a process with the args and env
// of its rendered Deployment, the tokens of its chart ServiceAccount and
// the NATS password of its chart Secret (the mapping above). The bookstore
// demo then works end to end: a bookstore pod created in a meshed
// namespace goes through the injector's webhook, the kubelet stand-in
// makes it ready, and a bookbuyer proxy whose certificate the CA signed
// for the injector's identity gets the bookstore's cluster and endpoint
// from the edge. Every rule of the chart's RBAC is then used by the
// component it is granted to, and no request of a chart identity is
// refused, as the apiserver's audit log records them (audit_test.go).
func TestComponentsRunUnderTheirChartIdentities(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the services")
	}
	ctx := t.Context()
	start := time.Now()
	auditFrom, err := cluster.AuditOffset()
	if err != nil {
		t.Fatal(err)
	}
	// Least privilege (audit_test.go), once the components have stopped,
	// so that their requests at shutdown count too, and also when the
	// test failed on the way, to name a refused request.
	var manifest string
	t.Cleanup(func() { checkLeastPrivilege(t, manifest, auditFrom) })
	m := startChartMesh(t)
	manifest = m.manifest
	t.Logf("chart installed and every component ready in %s", time.Since(start).Round(time.Millisecond))

	// The bookstore demo, in namespaces the chart's mesh (osm) monitors.
	cs := cluster.Clientset()
	for ns, sa := range map[string]string{"bookstore": "bookstore", "bookbuyer": "bookbuyer"} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns,
			Labels: map[string]string{"openservicemesh.io/monitored-by": "osm"}}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cs.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
		if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	http := "http"
	if _, err := cs.CoreV1().Services("bookstore").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "bookstore"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "bookstore"}, Ports: []corev1.ServicePort{{
			Name: "http", Port: 14001, TargetPort: intstr.FromInt32(14001), AppProtocol: &http}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The demo's SMI policy: bookbuyer may call bookstore's routes (the
	// chart's MeshConfig is not permissive).
	for gvr, obj := range map[schema.GroupVersionResource]map[string]any{
		osmkube.HTTPRouteGroups: {"apiVersion": "specs.smi-spec.io/v1alpha4", "kind": "HTTPRouteGroup",
			"metadata": map[string]any{"name": "bookstore-service-routes"},
			"spec": map[string]any{"matches": []any{
				map[string]any{"name": "buy-a-book", "pathRegex": ".*a-book.*new", "methods": []any{"GET"}}}}},
		osmkube.TrafficTargets: {"apiVersion": "access.smi-spec.io/v1alpha3", "kind": "TrafficTarget",
			"metadata": map[string]any{"name": "bookstore"},
			"spec": map[string]any{
				"destination": map[string]any{"kind": "ServiceAccount", "name": "bookstore", "namespace": "bookstore"},
				"sources":     []any{map[string]any{"kind": "ServiceAccount", "name": "bookbuyer", "namespace": "bookbuyer"}},
				"rules": []any{map[string]any{"kind": "HTTPRouteGroup", "name": "bookstore-service-routes",
					"matches": []any{"buy-a-book"}}}}},
	} {
		if _, err := cluster.Dynamic().Resource(gvr).Namespace("bookstore").Create(ctx,
			&unstructured.Unstructured{Object: obj}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	kubelet := cluster.Kubelet("chart-node", "zone-a")
	if _, err := kubelet.Register(ctx); err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct{ ns, name, sa, ip string }{
		{"bookstore", "bookstore-1", "bookstore", "10.244.7.10"},
		{"bookbuyer", "bookbuyer-1", "bookbuyer", "10.244.8.10"},
	} {
		pod, err := cs.CoreV1().Pods(p.ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: p.name, Labels: map[string]string{"app": p.sa}},
			Spec: corev1.PodSpec{ServiceAccountName: p.sa, Containers: []corev1.Container{{Name: p.sa, Image: p.sa,
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 14001}}}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create pod %s/%s (through the injector's webhook): %v", p.ns, p.name, err)
		}
		if !hasContainer(pod, "envoy") {
			t.Errorf("pod %s/%s was not injected: containers %v", p.ns, p.name, containerNames(pod))
		}
		if _, err := kubelet.MakeReady(ctx, pod, p.ip); err != nil {
			t.Fatal(err)
		}
	}

	// A bookbuyer proxy: its certificate signed by the CA for the
	// injector's chart identity, as the injector does for a pod.
	cert := workloadCert(t, m, identity.New(stack.TrustDomain, "bookbuyer", "bookbuyer"))
	pool := caTLS(t).RootCAs
	cc, err := stack.DialEdge(m.edgeAddr, cert, pool, identity.ControlPlaneURI(stack.TrustDomain, identity.RoleXDSEdge).String())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	node := &corev3.Node{Id: "bookbuyer-1-uuid", Cluster: "bookbuyer.bookbuyer"}
	store := "bookstore/bookstore|14001"
	err = stack.Eventually(ctx, 60*time.Second, func() error {
		clusters, err := adsOnce(ctx, cc, node, typeCDS)
		if err != nil {
			return err
		}
		if !slices.Contains(resourceNames(clusters), store) {
			return fmt.Errorf("bookbuyer's clusters %v lack %s", resourceNames(clusters), store)
		}
		cla, err := adsOnce(ctx, cc, node, typeEDS)
		if err != nil {
			return err
		}
		if got := claEndpoints(cla, store); strings.Join(got, ",") != "10.244.7.10" {
			return fmt.Errorf("endpoints of %s = %v", store, got)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("bookstore's cluster and endpoint on the bookbuyer proxy %s after the start", time.Since(start).Round(time.Millisecond))

	// The osm CLI's way in: a token of the chart's osm-operator, exchanged
	// at the CA for the operator certificate, opens the edge's debug API;
	// the bookbuyer proxy's workload certificate does not.
	checkOperatorAccess(t, m, cert, pool)

	// A proxyless gRPC pod: its bootstrap Secret carries its workload
	// certificate, signed by the real CA for the injector's chart identity.
	checkProxylessPod(t, cs, kubelet, pool)

	// The rules of the chart's RBAC the demo does not use.
	exerciseGrants(t, m)
}

// checkProxylessPod creates a pod annotated openservicemesh.io/proxyless:
// grpc and waits for its bootstrap Secret to hold a service certificate for
// its identity that chains to the mesh's roots.
func checkProxylessPod(t *testing.T, cs kubernetes.Interface, kubelet *osmkube.Kubelet, roots *x509.CertPool) {
	t.Helper()
	ctx := t.Context()
	pod, err := cs.CoreV1().Pods("bookbuyer").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "bookbuyer-grpc-1", Labels: map[string]string{"app": "bookbuyer-grpc"},
			Annotations: map[string]string{"openservicemesh.io/proxyless": "grpc"}},
		Spec: corev1.PodSpec{ServiceAccountName: "bookbuyer", Containers: []corev1.Container{{Name: "app", Image: "bookbuyer-grpc"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create the proxyless pod: %v", err)
	}
	if hasContainer(pod, "envoy") || len(pod.Spec.InitContainers) > 0 {
		t.Errorf("the proxyless pod got a sidecar or an init container: %v, %d init", containerNames(pod), len(pod.Spec.InitContainers))
	}
	secret := ""
	for _, v := range pod.Spec.Volumes {
		if v.Secret != nil && v.Name == "osm-grpc-bootstrap" {
			secret = v.Secret.SecretName
		}
	}
	if secret == "" {
		t.Fatalf("the proxyless pod has no osm-grpc-bootstrap Secret volume: %+v", pod.Spec.Volumes)
	}
	if _, err := kubelet.MakeReady(ctx, pod, "10.244.8.11"); err != nil {
		t.Fatal(err)
	}
	want := identity.New(stack.TrustDomain, "bookbuyer", "bookbuyer").String()
	err = stack.Eventually(ctx, 30*time.Second, func() error {
		s, err := cs.CoreV1().Secrets("bookbuyer").Get(ctx, secret, metav1.GetOptions{})
		if err != nil {
			return err
		}
		block, _ := pem.Decode(s.Data["svc.crt"])
		if block == nil {
			return fmt.Errorf("Secret %s has no svc.crt yet (keys %v)", secret, slices.Sorted(maps.Keys(s.Data)))
		}
		leaf, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return err
		}
		if len(leaf.URIs) != 1 || leaf.URIs[0].String() != want {
			return fmt.Errorf("svc.crt names %v, want %s", leaf.URIs, want)
		}
		inter := x509.NewCertPool()
		for rest := s.Data["svc.crt"]; ; {
			var b *pem.Block
			if b, rest = pem.Decode(rest); b == nil {
				break
			}
			if c, err := x509.ParseCertificate(b.Bytes); err == nil {
				inter.AddCert(c)
			}
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return fmt.Errorf("svc.crt does not chain to the mesh's roots: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("the proxyless pod's service certificate: %v", err)
	}
}

const (
	typeCDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	typeEDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
)

func hasContainer(p *corev1.Pod, name string) bool { return slices.Contains(containerNames(p), name) }

func containerNames(p *corev1.Pod) []string {
	var out []string
	for _, c := range p.Spec.Containers {
		out = append(out, c.Name)
	}
	return out
}

// workloadCert has the CA sign an xDS client certificate for id over a
// connection authenticated with the injector's control-plane certificate,
// bootstrapped with a token of the chart's injector ServiceAccount.
func workloadCert(t *testing.T, m *chartMesh, id identity.ID) tls.Certificate {
	t.Helper()
	ctx := t.Context()
	dial := func(cert *tls.Certificate) *grpc.ClientConn {
		tc := caTLS(t)
		if cert != nil {
			tc.Certificates = []tls.Certificate{*cert}
		}
		cc, err := grpc.NewClient(m.caAddr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return cc
	}
	boot, err := caclient.Bootstrap(ctx, cav1.NewCertificateAuthorityServiceClient(dial(nil)), caclient.BootstrapRequest{
		Token: token(t, "osm-injector-webhook", "osm-cert-authority"), TokenType: cav1.TokenType_TOKEN_TYPE_SERVICE_ACCOUNT,
		Role: cav1.ComponentRole_COMPONENT_ROLE_INJECTOR_WEBHOOK})
	if err != nil {
		t.Fatalf("bootstrap with the injector ServiceAccount's token: %v", err)
	}
	issued, err := caclient.Sign(ctx, cav1.NewCertificateAuthorityServiceClient(dial(&boot.Pair)), id, identity.UsageXDSClient, time.Hour)
	if err != nil {
		t.Fatalf("sign for %s: %v", id, err)
	}
	return issued.Pair
}

// adsOnce opens an ADS stream for typeURL as node and returns the first
// response's resources.
func adsOnce(ctx context.Context, cc grpc.ClientConnInterface, node *corev3.Node, typeURL string) ([]any, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c := sotwclient.NewADSClient(ctx, node, typeURL)
	if err := c.InitConnect(cc); err != nil {
		return nil, fmt.Errorf("%s: %w", typeURL, err)
	}
	resp, err := c.Fetch()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", typeURL, err)
	}
	var out []any
	for _, a := range resp.Resources {
		m, err := a.UnmarshalNew()
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

func resourceNames(rs []any) []string {
	var out []string
	for _, r := range rs {
		if c, ok := r.(interface{ GetName() string }); ok {
			out = append(out, c.GetName())
		}
	}
	return out
}

func claEndpoints(rs []any, cluster string) []string {
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
	return out
}

// checkOperatorAccess bootstraps the operator role with a token of the
// chart's ServiceAccount osm-operator (the CA's rendered
// --role-service-accounts maps it) and reads the edge's debug API with it;
// a workload certificate is refused there.
func checkOperatorAccess(t *testing.T, m *chartMesh, workload tls.Certificate, roots *x509.CertPool) {
	t.Helper()
	tc := caTLS(t)
	cc, err := grpc.NewClient(m.caAddr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	op, err := caclient.Bootstrap(t.Context(), cav1.NewCertificateAuthorityServiceClient(cc), caclient.BootstrapRequest{
		Token: token(t, "osm-operator", "osm-cert-authority"), TokenType: cav1.TokenType_TOKEN_TYPE_SERVICE_ACCOUNT,
		Role: cav1.ComponentRole_COMPONENT_ROLE_OPERATOR, TTL: 15 * time.Minute})
	if err != nil {
		t.Fatalf("bootstrap the operator role with the osm-operator ServiceAccount's token: %v", err)
	}
	get := func(cert tls.Certificate) int {
		hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
			MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true,
			VerifyConnection: func(cs tls.ConnectionState) error {
				_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots})
				return err
			}}}}
		defer hc.CloseIdleConnections()
		resp, err := hc.Get("https://" + m.edgeDebugAddr + "/v1/proxies")
		if err != nil {
			t.Fatalf("the edge's debug API: %v", err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(op.Pair); code != http.StatusOK {
		t.Errorf("the edge's debug API with the operator certificate: %d; want 200", code)
	}
	if code := get(workload); code != http.StatusForbidden {
		t.Errorf("the edge's debug API with a workload certificate: %d; want 403", code)
	}
}
