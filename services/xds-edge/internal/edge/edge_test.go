package edge

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
	"github.com/sirupsen/logrus"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/bus/bustest"
	"github.com/openservicemesh/osm/libs/identity"
	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/xdstest"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/xds-edge/internal/pool"
	"github.com/openservicemesh/osm/services/xds-edge/internal/xds"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The nats-server keeps a few process-wide goroutines alive after shutdown.
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).startGoRoutine.func1"),
		goleak.IgnoreTopFunction("time.Sleep"),
	)
}

const (
	cds = resourcev3.ClusterType
	eds = resourcev3.EndpointType
	lds = resourcev3.ListenerType
	rds = resourcev3.RouteType
)

var allTypes = []string{cds, eds, lds, rds}

var passwords = map[bus.Role]string{bus.RoleAdmin: "admin-pw", bus.RoleCompiler: "compiler-pw", bus.RoleCA: "ca-pw", bus.RoleEdge: "edge-pw"}

func spiffe(ns string) string { return identity.New("cluster.local", ns, ns).String() }

// mesh is one embedded NATS with the compiler's and the CA's buckets, a PKI
// for the edges and proxies, and the edges under test.
type mesh struct {
	t        *testing.T
	nats     *bustest.Server
	compiled *bus.Store
	trust    *bus.Store
	pki      *xdstest.CA
	epoch    uint64 // of the generations commit writes
	gen      uint64
}

func newMesh(t *testing.T, storeDir string) *mesh {
	t.Helper()
	srv, err := bustest.Start(bustest.Options{Passwords: passwords, StoreDir: storeDir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	m := &mesh{t: t, nats: srv}
	m.pki, err = xdstest.NewCA("mesh-root")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// seededMesh is a mesh whose buckets exist and hold the seed.
func seededMesh(t *testing.T, storeDir string) *mesh {
	t.Helper()
	m := newMesh(t, storeDir)
	m.createBuckets()
	m.seed()
	return m
}

func (m *mesh) conn(role bus.Role) *bus.Conn {
	m.t.Helper()
	c, err := bus.Connect(m.t.Context(), bus.Options{URL: m.nats.URL(), Role: role, User: string(role), Password: passwords[role]})
	if err != nil {
		m.t.Fatal(err)
	}
	m.t.Cleanup(c.Close)
	return c
}

// createBuckets declares the buckets as their writers do and writes the
// trust bundle.
func (m *mesh) createBuckets() {
	m.t.Helper()
	ctx := m.t.Context()
	var err error
	if m.compiled, err = m.conn(bus.RoleCompiler).EnsureBucket(ctx, bus.BucketCompiled, bus.BucketOptions{}); err != nil {
		m.t.Fatal(err)
	}
	if m.trust, err = m.conn(bus.RoleCA).EnsureBucket(ctx, bus.BucketTrust, bus.BucketOptions{}); err != nil {
		m.t.Fatal(err)
	}
	if _, err := m.trust.Put(ctx, layout.BundleKey, m.pki.Bundle()); err != nil {
		m.t.Fatal(err)
	}
}

// put writes keys as the compiler does, without a generation.
func (m *mesh) put(ws ...xdstest.Write) {
	m.t.Helper()
	for _, w := range ws {
		var err error
		if w.Value == nil {
			err = m.compiled.Delete(m.t.Context(), w.Key)
		} else {
			_, err = m.compiled.Put(m.t.Context(), w.Key, w.Value)
		}
		if err != nil {
			m.t.Fatal(err)
		}
	}
}

// commit writes keys and then a new generation record, last.
func (m *mesh) commit(ws ...xdstest.Write) {
	m.t.Helper()
	m.put(ws...)
	m.gen++
	g := xdstest.Generation(m.gen)
	g.Value.(*meshv1.Generation).Epoch = m.epoch
	m.put(g)
}

func (m *mesh) res(msg proto.Message, name string) xdstest.Write {
	m.t.Helper()
	w, err := xdstest.Resource(msg, name, m.gen+1)
	if err != nil {
		m.t.Fatal(err)
	}
	return w
}

// seed: a/a reaches clusters ca and shared, b/b reaches shared only.
func (m *mesh) seed() {
	m.commit(
		m.res(xdstest.Cluster("ca", time.Second), "ca"),
		m.res(xdstest.Cluster("shared", time.Second), "shared"),
		m.res(xdstest.Endpoints("ca", 8080), "ca"),
		m.res(xdstest.Endpoints("shared", 9090), "shared"),
		m.res(xdstest.Listener("out-a", 15001), "out-a"),
		m.res(xdstest.Listener("out-b", 15001), "out-b"),
		m.res(xdstest.Route("rt-a", "ca"), "rt-a"),
		m.res(xdstest.Route("rt-b", "shared"), "rt-b"),
		xdstest.Group("a", "a", m.gen+1, map[string][]string{cds: {"ca", "shared"}, eds: {"ca", "shared"}, lds: {"out-a"}, rds: {"rt-a"}}),
		xdstest.Group("b", "b", m.gen+1, map[string][]string{cds: {"shared"}, eds: {"shared"}, lds: {"out-b"}, rds: {"rt-b"}}),
	)
}

// replica is a running edge.
type replica struct {
	edge   *Edge
	addr   string
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// stop ends the replica and waits for it; it may be called again.
func (r *replica) stop() {
	r.cancel()
	<-r.done
	if r.err != nil {
		panic(r.err)
	}
}

func (m *mesh) startEdge(id string, threshold time.Duration) *replica {
	m.t.Helper()
	return m.startEdgeWithThreshold(id, threshold, nil)
}

func (m *mesh) startEdgeWith(id string, tweak func(*tls.Config)) *replica {
	m.t.Helper()
	return m.startEdgeWithThreshold(id, time.Minute, tweak)
}

func (m *mesh) startEdgeWithThreshold(id string, threshold time.Duration, tweak func(*tls.Config)) *replica {
	m.t.Helper()
	tc, err := m.pki.ServerTLS("spiffe://cluster.local/osm/xds-edge")
	if err != nil {
		m.t.Fatal(err)
	}
	if tweak != nil {
		tweak(tc)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		m.t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	e, err := New(Deps{
		Log: logrus.NewEntry(log).WithField("edge_id", id), Conn: m.conn(bus.RoleEdge), Listener: ln, EdgeID: id, TrustDomain: "cluster.local",
		GRPC:              xds.GRPCConfig{TLS: tc, KeepaliveTime: time.Minute, KeepaliveTimeout: 10 * time.Second, MaxConnectionAge: time.Hour, MaxConnectionAgeGrace: time.Second},
		NATSLostThreshold: threshold, StopGrace: time.Second,
	})
	if err != nil {
		m.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(m.t.Context())
	r := &replica{edge: e, addr: ln.Addr().String(), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.err = e.Start(ctx)
	}()
	m.t.Cleanup(r.stop)
	return r
}

func (r *replica) ready(ctx context.Context) error {
	if err := r.edge.CheckSync(ctx); err != nil {
		return err
	}
	return r.edge.CheckNATS(ctx)
}

func (m *mesh) waitReady(rs ...*replica) {
	m.t.Helper()
	for _, r := range rs {
		xdstest.WaitFor(m.t, "edge readiness", func() bool { return r.ready(m.t.Context()) == nil && r.edge.Server().Serving() })
	}
}

// startReady starts an edge and waits until it is ready.
func (m *mesh) startReady(id string, threshold time.Duration) *replica {
	m.t.Helper()
	r := m.startEdge(id, threshold)
	m.waitReady(r)
	return r
}

func (m *mesh) proxy(r *replica, uri string, o xdstest.ProxyOptions) *xdstest.Proxy {
	m.t.Helper()
	return xdstest.RunProxy(m.t, m.pki.Dial(m.t, r.addr, xdstest.ProxyURI(uri)), o)
}

func initial(t *testing.T, p *xdstest.Proxy) {
	t.Helper()
	for range 4 {
		xdstest.Next(t, p)
	}
}

func timeout(t *testing.T, r xdstest.Response, name string) time.Duration {
	t.Helper()
	var c clusterv3.Cluster
	if err := r.Resources[name].UnmarshalTo(&c); err != nil {
		t.Fatalf("cluster %s in %v: %v", name, r.Names(), err)
	}
	return c.GetConnectTimeout().AsDuration()
}

func TestTwoReplicasServeTheSameStateAndEditsReachOnlyAffectedProxies(t *testing.T) {
	m := seededMesh(t, "")
	e1, e2 := m.startReady("edge-1", time.Minute), m.startReady("edge-2", time.Minute)

	a1 := m.proxy(e1, spiffe("a"), xdstest.ProxyOptions{NodeID: "a1", Types: allTypes})
	a2 := m.proxy(e2, spiffe("a"), xdstest.ProxyOptions{NodeID: "a2", Types: allTypes})
	ad := m.proxy(e2, spiffe("a"), xdstest.ProxyOptions{NodeID: "a-delta", Delta: true, Types: allTypes})
	b1 := m.proxy(e1, spiffe("b"), xdstest.ProxyOptions{NodeID: "b1", Types: allTypes})
	bd := m.proxy(e2, spiffe("b"), xdstest.ProxyOptions{NodeID: "b-delta", Delta: true, Types: allTypes})
	for _, p := range []*xdstest.Proxy{a1, a2, ad, b1, bd} {
		initial(t, p)
	}
	if diff := cmp.Diff(a1.Versions(), a2.Versions()); diff != "" {
		t.Errorf("replicas serve different versions (-edge1 +edge2):\n%s", diff)
	}
	for _, typeURL := range allTypes {
		h1, h2 := a1.Held(typeURL), a2.Held(typeURL)
		if len(h1) == 0 || len(h1) != len(h2) {
			t.Fatalf("%s: edge-1 served %d resources, edge-2 %d", typeURL, len(h1), len(h2))
		}
		for n, r := range h1 {
			if !proto.Equal(r, h2[n]) {
				t.Errorf("%s %s differs between replicas", typeURL, n)
			}
		}
	}
	if g1, g2 := e1.edge.Server().Generation(), e2.edge.Server().Generation(); g1 != m.gen || g2 != m.gen {
		t.Errorf("generations %d and %d, want %d", g1, g2, m.gen)
	}

	// A policy edit touching cluster ca, which only a names.
	m.commit(m.res(xdstest.Cluster("ca", 3*time.Second), "ca"))
	for _, p := range []*xdstest.Proxy{a1, a2, ad} {
		r := xdstest.Next(t, p)
		if r.TypeURL != cds || timeout(t, r, "ca") != 3*time.Second {
			t.Errorf("a proxy got %s %v, want the edited cluster", r.TypeURL, r.Names())
		}
	}
	if a1.Version(cds) != a2.Version(cds) {
		t.Errorf("after the edit: versions %s and %s", a1.Version(cds), a2.Version(cds))
	}
	// b's next responses are for an edit of b's own route: the first edit
	// never reached b.
	m.commit(m.res(xdstest.Route("rt-b", "shared-2"), "rt-b"))
	for _, p := range []*xdstest.Proxy{b1, bd} {
		if r := xdstest.Next(t, p); r.TypeURL != rds {
			t.Errorf("b's next response is %s %v, want only its route", r.TypeURL, r.Names())
		}
	}
}

func TestKeysWithoutAGenerationAreNotServed(t *testing.T) {
	m := seededMesh(t, "")
	e := m.startReady("edge-1", time.Minute)
	p := m.proxy(e, spiffe("b"), xdstest.ProxyOptions{NodeID: "b", Types: allTypes})
	initial(t, p)
	m.put(m.res(xdstest.Cluster("shared", 7*time.Second), "shared"))
	xdstest.WaitFor(t, "the edge to stage the key", func() bool { return e.edge.Server().Staged() == 1 })
	late := m.proxy(e, spiffe("b"), xdstest.ProxyOptions{NodeID: "late", Types: []string{cds}})
	if got := timeout(t, xdstest.Next(t, late), "shared"); got != time.Second {
		t.Fatalf("a key without its generation was served (timeout %s)", got)
	}
	m.gen++
	m.put(xdstest.Generation(m.gen))
	for _, q := range []*xdstest.Proxy{p, late} {
		if r := xdstest.Next(t, q); r.TypeURL != cds || timeout(t, r, "shared") != 7*time.Second {
			t.Errorf("after the generation: %s %v", r.TypeURL, r.Names())
		}
	}
}

func TestFreshEdgeIsNotReadyUntilItsInitialSync(t *testing.T) {
	m := newMesh(t, "")
	e := m.startEdge("edge-1", time.Minute)
	// No bucket yet: the compiler has never run.
	time.Sleep(300 * time.Millisecond)
	if err := e.ready(t.Context()); err == nil {
		t.Fatal("ready without any compiled state")
	}
	p := m.proxy(e, spiffe("a"), xdstest.ProxyOptions{NodeID: "early", Types: allTypes})
	if err := xdstest.Refusal(t, p); status.Code(err) != codes.Unavailable {
		t.Fatalf("a stream before the sync: %v, want Unavailable", err)
	}
	m.createBuckets()
	m.seed()
	m.waitReady(e)
	q := m.proxy(e, spiffe("a"), xdstest.ProxyOptions{NodeID: "a", Types: allTypes})
	initial(t, q)
	if got := len(q.Held(cds)); got != 2 {
		t.Errorf("a holds %d clusters, want 2", got)
	}
}

func TestProxiesMoveToTheOtherReplicaWithoutRegressing(t *testing.T) {
	m := seededMesh(t, "")
	e1, e2 := m.startReady("edge-1", time.Minute), m.startReady("edge-2", time.Minute)
	var ps []*xdstest.Proxy
	for _, id := range []string{"a", "b"} {
		p := m.proxy(e1, spiffe(id), xdstest.ProxyOptions{NodeID: id, Types: allTypes})
		initial(t, p)
		ps = append(ps, p)
	}
	m.commit(m.res(xdstest.Cluster("shared", 2*time.Second), "shared"))
	for _, p := range ps {
		xdstest.Next(t, p)
	}
	e1.stop()
	for i, p := range ps {
		select {
		case <-p.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("the proxy's stream outlived its edge")
		}
		before := p.Versions()
		// The proxy reconnects to the surviving replica with what it holds.
		q := m.proxy(e2, spiffe([]string{"a", "b"}[i]), xdstest.ProxyOptions{NodeID: "again", Types: allTypes, Versions: before})
		initial(t, q)
		if diff := cmp.Diff(before, q.Versions()); diff != "" {
			t.Errorf("versions changed across the move (-before +after):\n%s", diff)
		}
		for typeURL, v := range q.Versions() {
			if pool.GenerationOfVersion(v).Less(pool.GenerationOfVersion(before[typeURL])) {
				t.Errorf("%s regressed from %s to %s", typeURL, before[typeURL], v)
			}
		}
	}
}

func TestNATSLossKeepsServingButTurnsNotReady(t *testing.T) {
	m := seededMesh(t, t.TempDir())
	e := m.startReady("edge-1", 500*time.Millisecond)
	p := m.proxy(e, spiffe("a"), xdstest.ProxyOptions{NodeID: "a", Types: allTypes})
	initial(t, p)

	m.nats.Stop()
	xdstest.WaitFor(t, "not-ready after the threshold", func() bool {
		err := e.edge.CheckNATS(t.Context())
		return err != nil && strings.Contains(err.Error(), "nats lost") && !e.edge.Server().Serving()
	})
	select {
	case <-p.Done():
		t.Fatalf("the connected proxy lost its stream: %v", p.Err())
	default:
	}
	if got := len(p.Held(cds)); got != 2 {
		t.Errorf("the proxy holds %d clusters", got)
	}
	late := m.proxy(e, spiffe("a"), xdstest.ProxyOptions{NodeID: "late", Types: allTypes})
	if err := xdstest.Refusal(t, late); status.Code(err) != codes.Unavailable {
		t.Errorf("a new stream while cut off: %v, want Unavailable", err)
	}

	rctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := m.nats.Restart(rctx); err != nil {
		t.Fatal(err)
	}
	m.waitReady(e)
	// The writers reconnect on their own; the next generation reaches the proxy.
	deadline := time.Now().Add(20 * time.Second)
	for {
		pctx, pcancel := context.WithTimeout(t.Context(), 2*time.Second)
		w := m.res(xdstest.Cluster("ca", 6*time.Second), "ca")
		_, err := m.compiled.Put(pctx, w.Key, w.Value)
		pcancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("put after the restart: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	m.gen++
	m.put(xdstest.Generation(m.gen))
	if r := xdstest.Next(t, p); r.TypeURL != cds || timeout(t, r, "ca") != 6*time.Second {
		t.Errorf("after NATS came back: %s %v", r.TypeURL, r.Names())
	}
}

func TestNackIsPublishedOnTheStatusSubject(t *testing.T) {
	m := seededMesh(t, "")
	e := m.startReady("edge-1", time.Minute)
	statuses := make(chan *nats.Msg, 64)
	sub, err := m.conn(bus.RoleAdmin).NATS().ChanSubscribe(bus.SubjectProxyStatus+".>", statuses)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	reject := func(r xdstest.Response) string {
		if r.TypeURL == lds {
			return "listener out-a: unknown filter"
		}
		return ""
	}
	p := m.proxy(e, spiffe("a"), xdstest.ProxyOptions{NodeID: "proxy-uuid-1", Types: allTypes, Reject: reject})
	initial(t, p)
	deadline := time.After(10 * time.Second)
	for {
		select {
		case <-deadline:
			t.Fatal("no NACK status published")
		case msg := <-statuses:
			var st meshv1.ProxyStatus
			if err := proto.Unmarshal(msg.Data, &st); err != nil {
				t.Fatal(err)
			}
			if st.GetEvent() != meshv1.ProxyEvent_PROXY_EVENT_NACK {
				continue
			}
			if msg.Subject != StatusSubject("edge-1", "proxy-uuid-1") {
				t.Errorf("subject %s", msg.Subject)
			}
			n := st.GetLastNack()
			if n.GetTypeUrl() != lds || n.GetErrorMessage() != "listener out-a: unknown filter" || st.GetIdentity().GetNamespace() != "a" || st.GetEdgeId() != "edge-1" {
				t.Errorf("nack status %v", &st)
			}
			return
		}
	}
}

func TestClientRootsFollowTheTrustBundle(t *testing.T) {
	m := seededMesh(t, "")
	// The edge is given no client roots of its own: only mesh-trust's.
	e := m.startEdgeWith("edge-1", func(tc *tls.Config) { tc.ClientCAs = nil })
	m.waitReady(e)
	initial(t, m.proxy(e, spiffe("a"), xdstest.ProxyOptions{NodeID: "old-root", Types: allTypes}))

	next, err := xdstest.NewCA("next-root")
	if err != nil {
		t.Fatal(err)
	}
	dial := func() (*xdstest.Proxy, error) {
		tc, err := next.ClientTLS(xdstest.ProxyURI(spiffe("b")))
		if err != nil {
			t.Fatal(err)
		}
		tc.RootCAs = m.pki.Pool() // the edge's serving certificate is from the first root
		cc, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		p, err := xdstest.StartProxy(t.Context(), cc, xdstest.ProxyOptions{NodeID: "new-root", Types: allTypes})
		if err != nil {
			return nil, err
		}
		t.Cleanup(p.Stop)
		return p, nil
	}
	p, err := dial()
	if err == nil {
		err = xdstest.Refusal(t, p)
	}
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("a certificate from a root outside the bundle: %v", err)
	}
	// Root rotation: the CA writes both roots.
	both := m.pki.Bundle()
	both.Roots = append(both.Roots, next.Bundle().GetRoots()...)
	both.Version = "rotating"
	if _, err := m.trust.Put(t.Context(), layout.BundleKey, both); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		p, err := dial()
		if err == nil {
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
			_, err = p.Next(ctx)
			cancel()
		}
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a proxy of the new root is still refused: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
