package service

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/nats-io/nats.go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"

	"github.com/openservicemesh/osm/libs/app/apptest"
	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/bus/bustest"
	"github.com/openservicemesh/osm/libs/identity"
	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/xdstest"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// TestRejectedResourceIsNackedAndNotResent is fault F12 of the fault plan
// (docs/faults.md): the compiler emits a resource a proxy rejects. The
// whole edge service runs on an embedded NATS; a state-of-the-world and a
// delta proxy hold a good cluster; mesh-compiled then gets a version of it
// the proxies reject (a 9 s connect timeout). Each proxy NACKs and keeps
// its last good cluster; the edge publishes the NACK with its error_detail
// on mesh.status.proxy.>, counts it in osm_xds_nacks_total on /metrics
// (within 60 s: the figure is logged), and never sends a rejected version
// again (resends = 0: a SotW version_info, or a delta resource version, the
// proxy has rejected) through three further generations: one that leaves
// the proxies' group alone, one that changes their endpoints (no cluster
// response at all), and one that adds a second cluster to their group
// (delta: the new cluster only; SotW: a new version of the whole list,
// which still carries the bad cluster and is rejected in turn). A new
// version of the cluster is sent and accepted.
func TestRejectedResourceIsNackedAndNotResent(t *testing.T) {
	dir := t.TempDir()
	root, err := xdstest.NewCA("mesh-root")
	if err != nil {
		t.Fatal(err)
	}
	files, err := root.WriteFiles(dir, "edge", "spiffe://cluster.local/osm/xds-edge")
	if err != nil {
		t.Fatal(err)
	}
	pw := map[bus.Role]string{bus.RoleEdge: "edge-pw", bus.RoleCompiler: "compiler-pw", bus.RoleCA: "ca-pw", bus.RoleAdmin: "admin-pw"}
	srv, err := bustest.Start(bustest.Options{Passwords: pw})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	connect := func(role bus.Role) *bus.Conn {
		c, err := bus.Connect(t.Context(), bus.Options{URL: srv.URL(), Role: role, User: string(role), Password: pw[role]})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	trust, err := connect(bus.RoleCA).EnsureBucket(t.Context(), bus.BucketTrust, bus.BucketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := trust.Put(t.Context(), layout.BundleKey, root.Bundle()); err != nil {
		t.Fatal(err)
	}
	compiled, err := connect(bus.RoleCompiler).EnsureBucket(t.Context(), bus.BucketCompiled, bus.BucketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	gen := uint64(0)
	// commit writes what the compiler would, then the generation, last.
	commit := func(ws ...func(gen uint64) (xdstest.Write, error)) {
		t.Helper()
		gen++
		for _, f := range ws {
			w, err := f(gen)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := compiled.Put(t.Context(), w.Key, w.Value); err != nil {
				t.Fatal(err)
			}
		}
		g := xdstest.Generation(gen)
		if _, err := compiled.Put(t.Context(), g.Key, g.Value); err != nil {
			t.Fatal(err)
		}
	}
	cluster := func(timeout time.Duration) func(uint64) (xdstest.Write, error) {
		return func(g uint64) (xdstest.Write, error) {
			return xdstest.Resource(xdstest.Cluster("web", timeout), "web", g)
		}
	}
	endpoints := func(port uint32) func(uint64) (xdstest.Write, error) {
		return func(g uint64) (xdstest.Write, error) {
			return xdstest.Resource(xdstest.Endpoints("web", port), "web", g)
		}
	}
	group := func(g uint64) (xdstest.Write, error) {
		return xdstest.Group("shop", "web", g, map[string][]string{resourcev3.ClusterType: {"web"}, resourcev3.EndpointType: {"web"}}), nil
	}
	commit(cluster(time.Second), endpoints(8080), group)

	adminAddr, xdsAddr := apptest.FreeAddr(t), apptest.FreeAddr(t)
	args := []string{
		"--nats-url", srv.URL(), "--nats-user", "edge", "--nats-password", "edge-pw",
		"--admin-addr", adminAddr, "--listen-addr", xdsAddr, "--log-format", "text",
		"--tls-cert-file", files.Cert, "--tls-key-file", files.Key, "--tls-client-ca-file", files.Root,
		// The proxies ask for no secret, so the CA is never called.
		"--ca-addr", "127.0.0.1:1", "--ca-client-cert-file", files.Cert, "--ca-client-key-file", files.Key, "--ca-trust-file", files.Root,
		"--pod-name", "edge-f12",
	}
	ctx, cancel := context.WithCancel(t.Context())
	runErr, logs := apptest.Start(ctx, Spec(Options{}), args, nil)
	defer func() {
		cancel()
		apptest.Stopped(t, runErr, logs)
	}()
	apptest.WaitReady(t, adminAddr, 20*time.Second, runErr, logs)

	statuses := make(chan *nats.Msg, 256)
	sub, err := connect(bus.RoleAdmin).NATS().ChanSubscribe(bus.SubjectProxyStatus+".>", statuses)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	// Each proxy rejects a cluster with a 9 s connect timeout, and records
	// what it rejected and every cluster response it is sent.
	const badDetail = "cluster web: connect_timeout 9s is not allowed"
	type counts struct {
		mu       sync.Mutex
		cds      int               // cluster responses
		nacks    int               // of them rejected
		rejected map[string]bool   // SotW version_info, or delta name@version, rejected
		resends  int               // responses carrying a rejected version again
		held     map[string]string // delta: the cluster versions accepted, by name
	}
	id := identity.New("cluster.local", "shop", "web")
	tc, err := root.ClientTLS(id.URLFor(identity.UsageXDSClient).String())
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(xdsAddr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	type proxy struct {
		name  string
		p     *xdstest.Proxy
		c     *counts
		start func(o xdstest.ProxyOptions) *xdstest.Proxy
	}
	var proxies []*proxy
	for _, delta := range []bool{false, true} {
		c := &counts{rejected: map[string]bool{}, held: map[string]string{}}
		name := map[bool]string{false: "sotw", true: "delta"}[delta]
		reject := func(r xdstest.Response) string {
			if r.TypeURL != resourcev3.ClusterType {
				return ""
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			c.cds++
			carried := []string{r.Version}
			if delta {
				carried = carried[:0]
				for n, v := range r.Versions {
					carried = append(carried, n+"@"+v)
				}
			}
			for _, v := range carried {
				if c.rejected[v] {
					c.resends++
				}
			}
			if connectTimeout(r, "web") != 9*time.Second {
				for n, v := range r.Versions {
					c.held[n] = v
				}
				for _, n := range r.Removed {
					delete(c.held, n)
				}
				return ""
			}
			c.nacks++
			if delta {
				c.rejected["web@"+r.Versions["web"]] = true
			} else {
				c.rejected[r.Version] = true
			}
			return badDetail
		}
		start := func(o xdstest.ProxyOptions) *xdstest.Proxy {
			o.NodeID, o.Delta, o.Reject = "f12-"+name, delta, reject
			o.Types = []string{resourcev3.ClusterType, resourcev3.EndpointType}
			p, err := xdstest.StartProxy(t.Context(), cc, o)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(p.Stop)
			return p
		}
		proxies = append(proxies, &proxy{name: name, p: start(xdstest.ProxyOptions{}), c: c, start: start})
	}
	heldTimeout := func(p *xdstest.Proxy) time.Duration {
		return connectTimeout(xdstest.Response{Resources: p.Held(resourcev3.ClusterType)}, "web")
	}
	for _, x := range proxies {
		apptest.EventuallyTrue(t, x.name+" holds the good cluster", 10*time.Second, func() bool { return heldTimeout(x.p) == time.Second })
	}

	// The bad version.
	commit(cluster(9 * time.Second))
	badAt := time.Now()
	for _, x := range proxies {
		apptest.EventuallyTrue(t, x.name+" NACKs the bad cluster", 10*time.Second, func() bool {
			x.c.mu.Lock()
			defer x.c.mu.Unlock()
			return x.c.nacks == 1
		})
	}
	var metricAfter time.Duration
	apptest.Eventually(t, "osm_xds_nacks_total on /metrics", 60*time.Second, func() error {
		v, err := apptest.MetricValue(adminAddr, "osm_xds_nacks_total", resourcev3.ClusterType)
		if err != nil {
			return err
		}
		if v != 2 {
			return fmt.Errorf("osm_xds_nacks_total{type_url=cds} = %v, want 2 (one per proxy)", v)
		}
		metricAfter = time.Since(badAt)
		return nil
	})
	// Each NACK is published with the proxy's error_detail.
	nacked := map[string]bool{}
	deadline := time.After(10 * time.Second)
	for len(nacked) < len(proxies) {
		select {
		case <-deadline:
			t.Fatalf("NACK statuses published for %v, want every proxy", nacked)
		case msg := <-statuses:
			var st meshv1.ProxyStatus
			if err := proto.Unmarshal(msg.Data, &st); err != nil {
				t.Fatal(err)
			}
			if st.GetEvent() != meshv1.ProxyEvent_PROXY_EVENT_NACK {
				continue
			}
			n := st.GetLastNack()
			if n.GetTypeUrl() != resourcev3.ClusterType || n.GetErrorMessage() != badDetail || n.GetVersion() == "" {
				t.Errorf("NACK status of %s: %v", st.GetNodeId(), &st)
			}
			nacked[st.GetNodeId()] = true
		}
	}

	// Two more generations: one that leaves the proxies' group alone, one
	// that changes their endpoints. Neither sends a cluster response.
	cdsBefore := map[string]int{}
	edsBefore := map[string]string{}
	for _, x := range proxies {
		x.c.mu.Lock()
		cdsBefore[x.name] = x.c.cds
		x.c.mu.Unlock()
		edsBefore[x.name] = x.p.Version(resourcev3.EndpointType)
	}
	commit(func(g uint64) (xdstest.Write, error) {
		return xdstest.Resource(xdstest.Cluster("other", time.Second), "other", g)
	})
	commit(endpoints(8081))
	for _, x := range proxies {
		apptest.EventuallyTrue(t, x.name+" gets the endpoint edit", 10*time.Second, func() bool {
			return x.p.Version(resourcev3.EndpointType) != edsBefore[x.name]
		})
	}
	time.Sleep(300 * time.Millisecond) // a resend would follow the endpoint push at once
	for _, x := range proxies {
		x.c.mu.Lock()
		if n := x.c.cds - cdsBefore[x.name]; n != 0 {
			t.Errorf("%s was sent %d cluster responses by generations that change none of its clusters", x.name, n)
		}
		x.c.mu.Unlock()
	}
	// A generation that adds a cluster to the group, the rejected one
	// unchanged.
	commit(func(g uint64) (xdstest.Write, error) {
		return xdstest.Resource(xdstest.Cluster("web2", time.Second), "web2", g)
	}, func(g uint64) (xdstest.Write, error) {
		return xdstest.Group("shop", "web", g, map[string][]string{resourcev3.ClusterType: {"web", "web2"}, resourcev3.EndpointType: {"web"}}), nil
	})
	for _, x := range proxies {
		if x.name == "delta" {
			apptest.EventuallyTrue(t, "delta holds web2", 10*time.Second, func() bool { return x.p.Held(resourcev3.ClusterType)["web2"] != nil })
		} else {
			apptest.EventuallyTrue(t, "sotw rejects the new list, which carries the bad cluster", 10*time.Second, func() bool {
				x.c.mu.Lock()
				defer x.c.mu.Unlock()
				return x.c.nacks == 2
			})
		}
	}
	time.Sleep(300 * time.Millisecond)
	resends, nacks := 0, 0
	for _, x := range proxies {
		x.c.mu.Lock()
		resends += x.c.resends
		nacks += x.c.nacks
		x.c.mu.Unlock()
		if d := heldTimeout(x.p); d != time.Second {
			t.Errorf("%s holds a cluster with connect timeout %s, want its last good one (1s)", x.name, d)
		}
	}
	if resends != 0 {
		t.Errorf("a rejected version was sent again %d times", resends)
	}

	// Each proxy reconnects (a new stream, as at --max-connection-age)
	// with what it holds: the rejected versions are not sent again.
	for _, x := range proxies {
		o := xdstest.ProxyOptions{}
		if x.name == "delta" {
			x.c.mu.Lock()
			o.Initial = map[string]map[string]string{resourcev3.ClusterType: maps.Clone(x.c.held)}
			x.c.mu.Unlock()
		} else {
			o.Versions = x.p.Versions()
		}
		x.p.Stop()
		x.p = x.start(o)
	}
	time.Sleep(500 * time.Millisecond)
	for _, x := range proxies {
		x.c.mu.Lock()
		resends += x.c.resends
		x.c.mu.Unlock()
	}
	if resends != 0 {
		t.Errorf("after a reconnect, a rejected version was sent again %d times", resends)
	}
	apptest.Eventually(t, "osm_xds_nacks_total counting every NACK", 10*time.Second, func() error {
		if v, err := apptest.MetricValue(adminAddr, "osm_xds_nacks_total", resourcev3.ClusterType); err != nil || int(v) != nacks {
			return fmt.Errorf("osm_xds_nacks_total{type_url=cds} = %v (%v), want %d", v, err, nacks)
		}
		return nil
	})

	// A new version of the cluster is sent, and accepted.
	commit(cluster(2 * time.Second))
	for _, x := range proxies {
		apptest.EventuallyTrue(t, x.name+" accepts the fixed cluster", 10*time.Second, func() bool { return heldTimeout(x.p) == 2*time.Second })
	}
	t.Logf("F12: %d proxies NACKed (%d NACKs in all, the SotW proxy's second of a new version); resends of a rejected version = %d; osm_xds_nacks_total on /metrics %s after the bad generation (limit 60s)",
		len(proxies), nacks, resends, metricAfter.Round(time.Millisecond))
}

// connectTimeout is the connect timeout of cluster name in r, 0 if absent.
func connectTimeout(r xdstest.Response, name string) time.Duration {
	a := r.Resources[name]
	if a == nil {
		return 0
	}
	var c clusterv3.Cluster
	if err := a.UnmarshalTo(&c); err != nil {
		return 0
	}
	return c.GetConnectTimeout().AsDuration()
}
