package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/caclient"
	"github.com/openservicemesh/osm/libs/identity"
	"github.com/openservicemesh/osm/libs/layout"
	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/tests/kube"
	"github.com/openservicemesh/osm/tests/stack"
)

const controlPlaneNS = "osm-system"

// service is one mesh service the dev stack runs.
type service struct {
	proc  *stack.Proc
	admin string
	// state is what the report shows: ready, or why not.
	state string
}

// meshServices are the running services, in start order.
type meshServices struct {
	order   []string
	byName  map[string]*service
	proxies []*proxy
	closers []func() error
	// changes receives the proxies' updates after the first; nil in
	// --once mode.
	changes io.Writer
}

func (m *meshServices) add(name string, s *service) {
	if m.byName == nil {
		m.byName = map[string]*service{}
	}
	m.order = append(m.order, name)
	m.byName[name] = s
}

// stop stops the proxies, then the services in reverse order.
func (m *meshServices) stop(say func(string, ...any)) {
	for i := len(m.closers) - 1; i >= 0; i-- {
		_ = m.closers[i]()
	}
	for i := len(m.order) - 1; i >= 0; i-- {
		s := m.byName[m.order[i]]
		if err := s.proc.Stop(30 * time.Second); err != nil {
			say("%v", err)
		}
	}
}

// startServices builds and starts the cert-authority, the policy-compiler
// and the injector-webhook against the dev NATS and cluster, then shows the
// injector at work on a demo pod.
func startServices(ctx context.Context, dir string, natsURL string, pw map[bus.Role]string, admin *bus.Conn,
	cluster *kube.Cluster, mesh string, verbose bool, changes io.Writer, say func(string, ...any)) (*meshServices, []row, error) {
	cs := cluster.Clientset()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: controlPlaneNS}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, nil, err
	}
	token, err := secretFile(filepath.Join(dir, "dev-bootstrap-token"))
	if err != nil {
		return nil, nil, err
	}
	say("building the services (the first build takes a few minutes)")
	b := stack.NewBuilder(filepath.Join(dir, "bin"))
	for _, name := range []string{"cert-authority", "injector-webhook", "smi-watcher", "policy-compiler", "xds-edge"} {
		if _, err := b.Build(ctx, name); err != nil {
			return nil, nil, err
		}
	}
	var tee io.Writer
	if verbose {
		tee = os.Stderr
	}
	run := &meshServices{changes: changes}
	fail := func(err error) (*meshServices, []row, error) {
		run.stop(say)
		return nil, nil, err
	}
	start := func(name string, args []string, env map[string]string) (*service, error) {
		admin, err := stack.FreeAddr()
		if err != nil {
			return nil, err
		}
		bin, _ := b.Build(ctx, name)
		args = append(args, "--admin-addr", admin, "--log-format", "text")
		p, err := stack.Start(name, bin, args, env, tee)
		if err != nil {
			return nil, err
		}
		s := &service{proc: p, admin: admin}
		run.add(name, s)
		return s, nil
	}

	// cert-authority: built-in provider, root in a Secret of osm-system.
	caAddr, err := stack.FreeAddr()
	if err != nil {
		return fail(err)
	}
	ca, err := start("cert-authority", []string{
		"--namespace", controlPlaneNS, "--kubeconfig", cluster.KubeconfigPath(), "--grpc-addr", caAddr,
		"--server-dns-names", "osm-cert-authority.osm-system.svc", "--nats-url", natsURL, "--nats-user", string(bus.RoleCA),
	}, map[string]string{"OSM_NATS_PASSWORD": pw[bus.RoleCA], "OSM_DEV_BOOTSTRAP_TOKEN": token})
	if err != nil {
		return fail(err)
	}
	if err := ca.proc.WaitReady(ctx, ca.admin, 2*time.Minute); err != nil {
		return fail(fmt.Errorf("cert-authority: %w\n%s", err, ca.proc.Output()))
	}
	ca.state = "ready, gRPC on " + caAddr

	// injector-webhook: its control-plane certificate from Bootstrap; it
	// gets its serving certificate from the CA itself (Bootstrap with the
	// dev token and the DNS names of its Service) and keeps the webhook
	// configuration's caBundle equal to the CA's trust bundle. The
	// apiserver calls it through the Service osm-system/osm-injector, an
	// ExternalName for localhost here.
	certs := filepath.Join(dir, "certs")
	if err := os.MkdirAll(certs, 0o700); err != nil {
		return fail(err)
	}
	trust, err := admin.Bucket(ctx, bus.BucketTrust)
	if err != nil {
		return fail(err)
	}
	var bundle meshv1.TrustBundle
	if _, err := trust.Get(ctx, layout.BundleKey, &bundle); err != nil {
		return fail(fmt.Errorf("trust bundle: %w", err))
	}
	conn, err := caclient.Dial(caAddr, &bundle, "osm-cert-authority.osm-system.svc", nil)
	if err != nil {
		return fail(err)
	}
	defer conn.Close()
	boot, err := caclient.Bootstrap(ctx, cav1.NewCertificateAuthorityServiceClient(conn), caclient.BootstrapRequest{
		Token: token, TokenType: cav1.TokenType_TOKEN_TYPE_PRE_SHARED, Role: cav1.ComponentRole_COMPONENT_ROLE_INJECTOR_WEBHOOK})
	if err != nil {
		return fail(err)
	}
	files := map[string][]byte{"ca-roots.pem": caclient.RootsPEM(&bundle), "bootstrap-token": []byte(token)}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(certs, name), data, 0o600); err != nil {
			return fail(err)
		}
	}
	listen, err := stack.FreeAddr()
	if err != nil {
		return fail(err)
	}
	_, listenPort, _ := net.SplitHostPort(listen)
	if err := injectorService(ctx, cs); err != nil {
		return fail(err)
	}
	inj, err := start("injector-webhook", []string{
		"--kubeconfig", cluster.KubeconfigPath(), "--mesh-name", mesh, "--control-plane-namespace", controlPlaneNS,
		"--listen-addr", listen, "--webhook-config-name", "osm-dev-sidecar-injector",
		"--webhook-service-name", injectorServiceName, "--webhook-service-port", listenPort,
		"--ca-bootstrap-token-file", filepath.Join(certs, "bootstrap-token"), "--ca-bootstrap-token-type", "pre-shared",
		"--ca-addr", caAddr, "--ca-server-name", "osm-cert-authority.osm-system.svc",
		"--ca-trust-file", filepath.Join(certs, "ca-roots.pem"),
	}, nil)
	if err != nil {
		return fail(err)
	}
	if err := inj.proc.WaitReady(ctx, inj.admin, 2*time.Minute); err != nil {
		return fail(fmt.Errorf("injector-webhook: %w\n%s", err, inj.proc.Output()))
	}
	inj.state = "ready, webhook on " + listen

	// The bookstore demo; its pods go through the injector.
	if err := applyDemo(ctx, cluster); err != nil {
		return fail(err)
	}
	injected := 0
	for _, p := range demoPods {
		pod, err := cs.CoreV1().Pods(p.ns).Get(ctx, p.name, metav1.GetOptions{})
		if err == nil && len(pod.Spec.Containers) == 2 {
			injected++
		}
	}
	rows := []row{{"bookstore demo pods (made Ready by the kubelet stand-in)", fmt.Sprintf("%d of %d injected", injected, len(demoPods))}}

	// smi-watcher, policy-compiler, xds-edge.
	watcher, err := start("smi-watcher", []string{"--kubeconfig", cluster.KubeconfigPath(), "--mesh-name", mesh,
		"--namespace", controlPlaneNS, "--watcher-id", "osm-dev", "--nats-url", natsURL, "--nats-user", string(bus.RoleWatcher)},
		map[string]string{"OSM_NATS_PASSWORD": pw[bus.RoleWatcher]})
	if err != nil {
		return fail(err)
	}
	comp, err := start("policy-compiler", []string{"--mesh-name", mesh, "--mesh-config", controlPlaneNS + "/osm-mesh-config",
		"--holder", "osm-dev", "--nats-url", natsURL, "--nats-user", string(bus.RoleCompiler)},
		map[string]string{"OSM_NATS_PASSWORD": pw[bus.RoleCompiler]})
	if err != nil {
		return fail(err)
	}
	edgeAddr, err := stack.FreeAddr()
	if err != nil {
		return fail(err)
	}
	edge, err := start("xds-edge", []string{"--listen-addr", edgeAddr, "--edge-id", "osm-dev-edge-0",
		// The table's acked versions follow edits within about a second.
		"--ack-status-interval", "1s",
		// The edge bootstraps its own certificate (ADS serving and CA
		// client) with the dev token, and renews it.
		"--ca-bootstrap-token-file", filepath.Join(certs, "bootstrap-token"), "--ca-bootstrap-token-type", "pre-shared",
		"--ca-addr", caAddr, "--ca-server-name", "osm-cert-authority.osm-system.svc",
		"--ca-trust-file", filepath.Join(certs, "ca-roots.pem"),
		"--nats-url", natsURL, "--nats-user", string(bus.RoleEdge)},
		map[string]string{"OSM_NATS_PASSWORD": pw[bus.RoleEdge]})
	if err != nil {
		return fail(err)
	}
	for _, svc := range []struct {
		s    *service
		name string
		ok   string
	}{{watcher, "smi-watcher", "ready, mesh published to mesh-observed"}, {comp, "policy-compiler", "ready, compiled to mesh-compiled"},
		{edge, "xds-edge", "ready, ADS on " + edgeAddr}} {
		if err := svc.s.proc.WaitReady(ctx, svc.s.admin, 2*time.Minute); err != nil {
			return fail(fmt.Errorf("%s: %w\n%s", svc.name, err, svc.s.proc.Output()))
		}
		svc.s.state = svc.ok
	}

	// Simulated proxies: go-control-plane's ADS client with a workload
	// certificate each, as the injector's bootstrap gives Envoy.
	signer, err := caclient.Dial(caAddr, &bundle, "osm-cert-authority.osm-system.svc", &boot.Pair)
	if err != nil {
		return fail(err)
	}
	run.closers = append(run.closers, signer.Close)
	roots, err := caclient.RootPool(&bundle)
	if err != nil {
		return fail(err)
	}
	var ids []identity.ID
	for _, n := range []string{"bookbuyer", "bookthief", "bookstore"} {
		ids = append(ids, identity.New("cluster.local", n, n))
	}
	proxies, err := startProxies(ctx, cav1.NewCertificateAuthorityServiceClient(signer), edgeAddr, roots, ids)
	if err != nil {
		return fail(err)
	}
	run.proxies = proxies
	byNode := map[string]*proxy{}
	for _, p := range proxies {
		byNode[p.nodeID()] = p
		run.closers = append(run.closers, p.conn.Close)
	}
	sub, err := admin.NATS().Subscribe(bus.SubjectProxyStatus+".>", func(m *nats.Msg) {
		st := &meshv1.ProxyStatus{}
		if proto.Unmarshal(m.Data, st) == nil {
			if p, ok := byNode[st.GetNodeId()]; ok && len(st.GetAckedVersions()) > 0 {
				p.setAcked(st.GetAckedVersions())
			}
		}
	})
	if err != nil {
		return fail(err)
	}
	run.closers = append(run.closers, sub.Unsubscribe)
	pctx, cancel := context.WithCancel(ctx)
	run.closers = append(run.closers, func() error { cancel(); return nil })
	var first sync.WaitGroup
	for _, p := range proxies {
		p.run(pctx, run.changes, &first)
	}
	waited := make(chan struct{})
	go func() { first.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(30 * time.Second):
		return fail(fmt.Errorf("the simulated proxies got no configuration within 30s\n%s", edge.proc.Output()))
	}
	// Let the edge publish the ACKs it recorded.
	_ = stack.Eventually(ctx, 5*time.Second, func() error {
		for _, p := range proxies {
			p.mu.Lock()
			n := len(p.acked)
			p.mu.Unlock()
			if n < len(proxyTypes) {
				return fmt.Errorf("waiting for ACKs")
			}
		}
		return nil
	})
	return run, rows, nil
}

// injectorServiceName is the injector's webhook Service.
const injectorServiceName = "osm-injector"

// injectorService makes osm-system/osm-injector an ExternalName Service for
// localhost: the apiserver resolves the webhook's Service reference to it
// and verifies the certificate against osm-injector.osm-system.svc, as in a
// cluster.
func injectorService(ctx context.Context, cs kubernetes.Interface) error {
	svcs := cs.CoreV1().Services(controlPlaneNS)
	spec := corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "localhost"}
	cur, err := svcs.Get(ctx, injectorServiceName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = svcs.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: injectorServiceName}, Spec: spec}, metav1.CreateOptions{})
	case err == nil && (cur.Spec.Type != spec.Type || cur.Spec.ExternalName != spec.ExternalName):
		cur.Spec = spec
		_, err = svcs.Update(ctx, cur, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("injector Service: %w", err)
	}
	return nil
}

// secretFile returns the random secret kept in path, creating it once.
func secretFile(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	tok := hex.EncodeToString(b)
	return tok, os.WriteFile(path, []byte(tok), 0o600)
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndex(s, "\n"); i >= 0 {
		return s[i+1:]
	}
	return s
}
