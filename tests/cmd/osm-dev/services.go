package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/identity"
	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/tests/kube"
	"github.com/openservicemesh/osm/tests/stack"
)

const controlPlaneNS = "osm-system"

// devMesh is what the dev stack runs on top of NATS and the cluster: the
// mesh services, the bookstore demo and the simulated proxies.
type devMesh struct {
	mesh    *stack.Mesh
	demo    row
	proxies []*proxy
	closers []func() error
	// traffic is the proxyless gRPC pods' traffic; nil when it does not
	// run, trafficSkipped saying why.
	traffic        *traffic
	trafficSkipped string
}

// stop stops the proxies, then the services in reverse order.
func (d *devMesh) stop(say func(string, ...any)) {
	for i := len(d.closers) - 1; i >= 0; i-- {
		_ = d.closers[i]()
	}
	if err := d.mesh.Close(); err != nil {
		say("%v", err)
	}
}

// rows describes the services, the demo and the proxies for the report.
func (d *devMesh) rows() []row {
	m := d.mesh
	states := map[stack.Component]string{
		stack.CertAuthority: "ready, gRPC on " + m.Addr(stack.CertAuthority),
		stack.Injector:      "ready, webhook on " + m.Addr(stack.Injector),
		stack.Watcher:       "ready, mesh published to mesh-observed",
		stack.Compiler:      "ready, compiled to mesh-compiled",
		stack.Edge:          "ready, ADS on " + m.Addr(stack.Edge),
	}
	var rows []row
	for _, c := range m.Started() {
		rows = append(rows, row{string(c), states[c]})
	}
	rows = append(rows, d.demo)
	for _, p := range d.proxies {
		rows = append(rows, p.rows()...)
	}
	return rows
}

// startMesh builds and starts the mesh services against the dev NATS and
// cluster, shows the injector at work on the demo pods, and connects the
// simulated proxies. changes receives the proxies' updates after the
// first; nil in --once mode.
func startMesh(ctx context.Context, c config, nc *stack.NATS, cluster *kube.Cluster, changes io.Writer, say func(string, ...any)) (*devMesh, error) {
	say("building the services (the first build takes a few minutes)")
	b := stack.NewBuilder(filepath.Join(c.dir, "bin"))
	for _, comp := range stack.Components() {
		if _, err := b.Build(ctx, string(comp)); err != nil {
			return nil, err
		}
	}
	var log io.Writer
	if c.verbose {
		log = os.Stderr
	}
	m, err := stack.New(ctx, stack.Options{
		Cluster: cluster, Dir: filepath.Join(c.dir, "certs"), Builder: b, NATS: nc,
		Name: "osm-dev", MeshName: c.mesh, Namespace: controlPlaneNS, MeshConfig: meshConfigName,
		// The table's acked versions follow edits within about a second.
		AckStatusInterval: time.Second,
		Log:               log,
		Flags: map[stack.Component][]string{
			// The gRPC flavour of each identity's resources, for the
			// proxyless pods.
			stack.Compiler: {"--proxyless-grpc"},
			// The edge as the pods reach it (in their network namespace),
			// written into every bootstrap.
			stack.Injector: {"--xds-addr", net.JoinHostPort(edgePodIP, edgePodPort)},
		},
	})
	if err != nil {
		return nil, err
	}
	d := &devMesh{mesh: m}
	fail := func(err error) (*devMesh, error) {
		d.stop(say)
		return nil, err
	}
	// The injector gets its serving certificate from the CA and keeps the
	// webhook configuration's caBundle equal to the CA's trust bundle.
	if err := m.Start(ctx, stack.CertAuthority, stack.Injector); err != nil {
		return fail(err)
	}

	// The bookstore demo; its pods go through the injector.
	if err := applyDemo(ctx, cluster); err != nil {
		return fail(err)
	}
	nInjected, sidecars, proxyless := 0, 0, 0
	for _, p := range demoPods {
		pod, err := cluster.Clientset().CoreV1().Pods(p.ns).Get(ctx, p.name, metav1.GetOptions{})
		if err == nil && injected(pod) {
			nInjected++
		}
		if p.proxyless {
			proxyless++
		} else {
			sidecars++
		}
	}
	d.demo = row{"bookstore demo pods (made Ready by the kubelet stand-in)",
		fmt.Sprintf("%d of %d injected (%d Envoy sidecars, %d proxyless gRPC)", nInjected, len(demoPods), sidecars, proxyless)}

	if err := m.Start(ctx, stack.Watcher, stack.Compiler, stack.Edge); err != nil {
		return fail(err)
	}
	if err := writeOSMContext(ctx, c.dir, m, cluster, say); err != nil {
		return fail(err)
	}
	if err := d.connectProxies(ctx, cluster, changes); err != nil {
		return fail(err)
	}
	if c.noTraffic {
		d.trafficSkipped = "skipped (--no-traffic)"
		return d, nil
	}
	say("starting the proxyless gRPC pods in a network namespace of their own")
	t, err := startTraffic(ctx, trafficOptions{dir: c.dir, cluster: cluster, edgeAddr: m.Addr(stack.Edge), rate: c.rate, log: log})
	switch {
	case errors.Is(err, errNoNamespace):
		say("proxyless gRPC traffic skipped: the pods' IPs go on the loopback of a network namespace the dev stack makes, never on the host's interfaces, and making one needs root or CAP_SYS_ADMIN (%v). Everything else runs; run make run as root for the traffic.", err)
		d.trafficSkipped = "skipped: a network namespace needs root or CAP_SYS_ADMIN"
	case err != nil:
		return fail(err)
	default:
		d.traffic = t
		d.closers = append(d.closers, func() error { t.stop(); return nil })
	}
	return d, nil
}

// trafficRows describe the proxyless pods for the report.
func (d *devMesh) trafficRows() []row {
	if d.traffic == nil {
		return []row{{"proxyless gRPC calls", d.trafficSkipped}}
	}
	return d.traffic.rows()
}

// connectProxies connects the simulated proxies, go-control-plane's ADS
// client with a workload certificate each as the injector's bootstrap
// gives Envoy, and waits for their first configuration and its ACKs. The
// proxies of bookbuyer and bookthief stand in for the sidecars of the demo
// pods bookbuyer-0 and bookthief-0, with their node ids (cluster nil: the
// stack's own).
func (d *devMesh) connectProxies(ctx context.Context, cluster *kube.Cluster, changes io.Writer) error {
	var ids []identity.ID
	for _, n := range []string{"bookbuyer", "bookthief", "bookstore"} {
		ids = append(ids, identity.New(stack.TrustDomain, n, n))
	}
	nodes := map[identity.ID]string{}
	for _, p := range demoPods {
		if p.proxyless || cluster == nil {
			continue
		}
		pod, err := cluster.Clientset().CoreV1().Pods(p.ns).Get(ctx, p.name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("read demo pod %s/%s: %w", p.ns, p.name, err)
		}
		if uuid := pod.Labels[layout.LabelProxyUUID]; uuid != "" {
			nodes[identity.New(stack.TrustDomain, p.ns, p.sa)] = uuid
		}
	}
	proxies, err := startProxies(ctx, d.mesh, ids, nodes)
	if err != nil {
		return err
	}
	d.proxies = proxies
	byNode := map[string]*proxy{}
	for _, p := range proxies {
		byNode[p.nodeID()] = p
		d.closers = append(d.closers, p.conn.Close)
	}
	sub, err := d.mesh.NATS().Admin().NATS().Subscribe(bus.SubjectProxyStatus+".>", func(m *nats.Msg) {
		st := &meshv1.ProxyStatus{}
		if proto.Unmarshal(m.Data, st) == nil {
			if p, ok := byNode[st.GetNodeId()]; ok && len(st.GetAckedVersions()) > 0 {
				p.setAcked(st.GetAckedVersions())
			}
		}
	})
	if err != nil {
		return err
	}
	d.closers = append(d.closers, sub.Unsubscribe)
	pctx, cancel := context.WithCancel(ctx)
	d.closers = append(d.closers, func() error { cancel(); return nil })
	var first sync.WaitGroup
	for _, p := range proxies {
		p.run(pctx, changes, &first)
	}
	waited := make(chan struct{})
	go func() { first.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(30 * time.Second):
		return fmt.Errorf("the simulated proxies got no configuration within 30s\n%s", d.mesh.Proc(stack.Edge).Output())
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
	return nil
}
