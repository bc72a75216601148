package xds

import (
	"context"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/sirupsen/logrus"
	"go.uber.org/goleak"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/openservicemesh/osm/libs/identity"
	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/xdstest"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/xds-edge/internal/pool"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// gRPC's xDS client keeps its bootstrap's TLS file watcher in a
		// process-wide client pool after the channel closes.
		goleak.IgnoreTopFunction("google.golang.org/grpc/credentials/tls/certprovider/pemfile.(*watcher).run"),
	)
}

const (
	cds = resourcev3.ClusterType
	eds = resourcev3.EndpointType
	lds = resourcev3.ListenerType
	rds = resourcev3.RouteType
	sds = resourcev3.SecretType
)

var allTypes = []string{cds, eds, lds, rds}

func spiffe(ns string) string { return identity.New("cluster.local", ns, ns).String() }

// statusLog is a StatusPublisher that keeps what it is given.
type statusLog struct {
	mu   sync.Mutex
	msgs []*meshv1.ProxyStatus
}

func (l *statusLog) PublishStatus(_ context.Context, s *meshv1.ProxyStatus) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, s)
}

func (l *statusLog) events(ev meshv1.ProxyEvent) []*meshv1.ProxyStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*meshv1.ProxyStatus
	for _, m := range l.msgs {
		if m.GetEvent() == ev {
			out = append(out, m)
		}
	}
	return out
}

// fixture is an edge server on loopback with mTLS, fed directly.
type fixture struct {
	t      *testing.T
	ca     *xdstest.CA
	srv    *Server
	addr   string
	status *statusLog
	epoch  uint64 // of the generations commit makes
	gen    uint64
}

type fixtureOpt func(*Options)

func newFixture(t *testing.T, opts ...fixtureOpt) *fixture {
	t.Helper()
	ca, err := xdstest.NewCA("test-root")
	if err != nil {
		t.Fatal(err)
	}
	st := &statusLog{}
	log := logrus.New()
	log.SetOutput(io.Discard)
	o := Options{Log: logrus.NewEntry(log), EdgeID: "edge-0", TrustDomain: "cluster.local", Status: st}
	for _, f := range opts {
		f(&o)
	}
	srv, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := ca.ServerTLS("spiffe://cluster.local/osm/xds-edge")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(ServerOptions(GRPCConfig{TLS: tc, KeepaliveTime: time.Minute, KeepaliveTimeout: 10 * time.Second, MaxConnectionAge: time.Hour, MaxConnectionAgeGrace: time.Minute})...)
	srv.Register(g)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(ln) }()
	t.Cleanup(g.Stop)
	return &fixture{t: t, ca: ca, srv: srv, addr: ln.Addr().String(), status: st}
}

// write stages writes and commits a new generation.
func (f *fixture) commit(ws ...xdstest.Write) {
	f.t.Helper()
	for _, w := range ws {
		var b []byte
		if w.Value != nil {
			var err error
			if b, err = proto.Marshal(w.Value); err != nil {
				f.t.Fatal(err)
			}
		}
		if err := f.srv.Stage(w.Key, b); err != nil {
			f.t.Fatal(err)
		}
	}
	f.gen++
	if _, err := f.srv.Commit(&meshv1.Generation{Epoch: f.epoch, Number: f.gen}); err != nil {
		f.t.Fatal(err)
	}
}

func res(t *testing.T, m proto.Message, name string, gen uint64) xdstest.Write {
	t.Helper()
	w, err := xdstest.Resource(m, name, gen)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// seed commits a mesh where a/a reaches clusters ca and shared, b/b
// reaches shared only; both have a listener and a route.
func (f *fixture) seed() {
	t := f.t
	f.commit(
		res(t, xdstest.Cluster("ca", time.Second), "ca", 1),
		res(t, xdstest.Cluster("shared", time.Second), "shared", 1),
		res(t, xdstest.Endpoints("ca", 8080), "ca", 1),
		res(t, xdstest.Endpoints("shared", 9090), "shared", 1),
		res(t, xdstest.Listener("out-a", 15001), "out-a", 1),
		res(t, xdstest.Listener("out-b", 15001), "out-b", 1),
		res(t, xdstest.Route("rt-a", "ca"), "rt-a", 1),
		res(t, xdstest.Route("rt-b", "shared"), "rt-b", 1),
		xdstest.Group("a", "a", 1, map[string][]string{cds: {"ca", "shared"}, eds: {"ca", "shared"}, lds: {"out-a"}, rds: {"rt-a"}}),
		xdstest.Group("b", "b", 1, map[string][]string{cds: {"shared"}, eds: {"shared"}, lds: {"out-b"}, rds: {"rt-b"}}),
	)
	f.srv.SetServing(true)
}

// dial connects as a proxy of the workload identity uri, with the xDS
// client certificate of its bootstrap.
func (f *fixture) dial(uri string) *grpc.ClientConn {
	f.t.Helper()
	return f.ca.Dial(f.t, f.addr, xdstest.ProxyURI(uri))
}

// refusal opens a stream expected to be refused and returns why it was.
func (f *fixture) refusal(uri string, o xdstest.ProxyOptions) error {
	f.t.Helper()
	p, err := xdstest.StartProxy(f.t.Context(), f.dial(uri), o)
	if err != nil {
		return err
	}
	defer p.Stop()
	return xdstest.Refusal(f.t, p)
}

func (f *fixture) proxy(uri string, o xdstest.ProxyOptions) *xdstest.Proxy {
	f.t.Helper()
	return xdstest.RunProxy(f.t, f.dial(uri), o)
}

// initial reads one response per type and returns their type order.
func initial(t *testing.T, p *xdstest.Proxy, n int) []string {
	t.Helper()
	var order []string
	for range n {
		order = append(order, xdstest.Next(t, p).TypeURL)
	}
	return order
}

func heldNames(p *xdstest.Proxy, typeURL string) []string {
	var out []string
	for n := range p.Held(typeURL) {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func TestStreamsRefusedUntilServing(t *testing.T) {
	f := newFixture(t)
	if err := f.refusal(spiffe("a"), xdstest.ProxyOptions{NodeID: "n1", Types: allTypes}); status.Code(err) != codes.Unavailable {
		t.Fatalf("stream before the initial sync ended with %v, want Unavailable", err)
	}
	f.seed()
	p := f.proxy(spiffe("a"), xdstest.ProxyOptions{NodeID: "n1", Types: allTypes})
	if order := initial(t, p, 4); !cmp.Equal(order, allTypes) {
		t.Errorf("push order %v, want %v", order, allTypes)
	}
	if got := f.srv.Stats().Refused; got != 1 {
		t.Errorf("refused = %d, want 1", got)
	}
}

func TestSotWInitialConfigAndAcks(t *testing.T) {
	f := newFixture(t)
	f.seed()
	p := f.proxy(spiffe("a"), xdstest.ProxyOptions{NodeID: "proxy-a", Types: allTypes})
	if order := initial(t, p, 4); !cmp.Equal(order, allTypes) {
		t.Errorf("push order %v, want %v", order, allTypes)
	}
	want := map[string][]string{cds: {"ca", "shared"}, eds: {"ca", "shared"}, lds: {"out-a"}, rds: {"rt-a"}}
	for typeURL, w := range want {
		if got := heldNames(p, typeURL); !cmp.Equal(got, w) {
			t.Errorf("%s: holds %v, want %v", typeURL, got, w)
		}
	}
	xdstest.WaitFor(t, "4 acks", func() bool { return f.srv.Stats().Acks == 4 })
	if got := f.status.events(meshv1.ProxyEvent_PROXY_EVENT_CONNECTED); len(got) != 1 || got[0].GetNodeId() != "proxy-a" || got[0].GetIdentity().GetNamespace() != "a" {
		t.Errorf("connected reports %v", got)
	}
}

func TestIdentityComesFromTheCertificateNotTheNode(t *testing.T) {
	f := newFixture(t)
	f.seed()
	// The node id claims b; the certificate says a: a's config is served.
	p := f.proxy(spiffe("a"), xdstest.ProxyOptions{NodeID: "b", Types: []string{lds}})
	if r := xdstest.Next(t, p); !cmp.Equal(r.Names(), []string{"out-a"}) {
		t.Errorf("served %v, want a's listener", r.Names())
	}
	for _, c := range []struct {
		uri  string
		code codes.Code
	}{
		{"", codes.Unavailable}, // no client certificate: the TLS handshake fails
		{"spiffe://other.domain/ns/a/sa/a", codes.PermissionDenied},
		{"spiffe://cluster.local/osm/xds-edge", codes.Unauthenticated},
	} {
		err := f.refusal(c.uri, xdstest.ProxyOptions{NodeID: "x", Types: []string{lds}})
		if got := status.Code(err); got != c.code {
			t.Errorf("client cert %q: %v, want %v", c.uri, err, c.code)
		}
	}
}

func TestEditReachesOnlyAffectedProxies(t *testing.T) {
	for _, delta := range []bool{false, true} {
		t.Run(map[bool]string{false: "sotw", true: "delta"}[delta], func(t *testing.T) {
			f := newFixture(t)
			f.seed()
			pa := f.proxy(spiffe("a"), xdstest.ProxyOptions{NodeID: "a", Delta: delta, Types: allTypes})
			pb := f.proxy(spiffe("b"), xdstest.ProxyOptions{NodeID: "b", Delta: delta, Types: allTypes})
			initial(t, pa, 4)
			initial(t, pb, 4)
			// Only a names cluster ca.
			f.commit(res(t, xdstest.Cluster("ca", 3*time.Second), "ca", 2))
			r := xdstest.Next(t, pa)
			if r.TypeURL != cds {
				t.Fatalf("a got %s, want the cluster update", r.TypeURL)
			}
			wantNames := []string{"ca", "shared"} // state of the world: the whole set
			if delta {
				wantNames = []string{"ca"} // delta: the changed resource only
			}
			if !cmp.Equal(r.Names(), wantNames) {
				t.Errorf("a got %v, want %v", r.Names(), wantNames)
			}
			var c clusterv3.Cluster
			if err := r.Resources["ca"].UnmarshalTo(&c); err != nil || c.GetConnectTimeout().AsDuration() != 3*time.Second {
				t.Errorf("a got cluster %v (%v), want the 3s timeout", &c, err)
			}
			// A change for b alone; b's next response must be that one, so the
			// edit above never reached b.
			f.commit(res(t, xdstest.Route("rt-b", "shared-v2"), "rt-b", 3))
			if r := xdstest.Next(t, pb); r.TypeURL != rds {
				t.Errorf("b's next response is %s %v, want only the route change", r.TypeURL, r.Names())
			}
			// A change to the shared cluster reaches both.
			f.commit(res(t, xdstest.Cluster("shared", 5*time.Second), "shared", 4))
			if r := xdstest.Next(t, pa); r.TypeURL != cds {
				t.Errorf("a: %s", r.TypeURL)
			}
			if r := xdstest.Next(t, pb); r.TypeURL != cds || !cmp.Equal(r.Names(), []string{"shared"}) {
				t.Errorf("b: %s %v", r.TypeURL, r.Names())
			}
		})
	}
}

func TestStagedWritesAreNotServedBeforeTheirGeneration(t *testing.T) {
	f := newFixture(t)
	f.seed()
	p := f.proxy(spiffe("b"), xdstest.ProxyOptions{NodeID: "b", Types: allTypes})
	initial(t, p, 4)
	w := res(t, xdstest.Cluster("shared", 7*time.Second), "shared", 2)
	b, _ := proto.Marshal(w.Value)
	if err := f.srv.Stage(w.Key, b); err != nil {
		t.Fatal(err)
	}
	// A new stream opened now still sees generation 1.
	p2 := f.proxy(spiffe("b"), xdstest.ProxyOptions{NodeID: "b2", Types: []string{cds}})
	r := xdstest.Next(t, p2)
	var c clusterv3.Cluster
	if err := r.Resources["shared"].UnmarshalTo(&c); err != nil || c.GetConnectTimeout().AsDuration() != time.Second {
		t.Fatalf("served %v before its generation", &c)
	}
	f.gen++
	if _, err := f.srv.Commit(&meshv1.Generation{Epoch: f.epoch, Number: f.gen}); err != nil {
		t.Fatal(err)
	}
	if r := xdstest.Next(t, p); r.TypeURL != cds {
		t.Fatalf("after the commit got %s", r.TypeURL)
	}
	// An older generation record changes nothing.
	if ch, _ := f.srv.Commit(&meshv1.Generation{Number: 1}); ch != nil || f.srv.Generation() != f.gen {
		t.Errorf("older generation applied: %v", ch)
	}
}

// replaceCA commits generation 2: a/a drops cluster ca (and its endpoints
// and route) and gets a new cluster and listener in the same generation.
func (f *fixture) replaceCA() {
	f.t.Helper()
	f.commit(
		res(f.t, xdstest.Cluster("cnew", time.Second), "cnew", 2),
		res(f.t, xdstest.Listener("out-a", 15002), "out-a", 2),
		xdstest.Group("a", "a", 2, map[string][]string{cds: {"cnew", "shared"}, eds: {"shared"}, lds: {"out-a"}}),
	)
}

// shortType is the message name of a type URL, e.g. Cluster.
func shortType(typeURL string) string { return typeURL[strings.LastIndex(typeURL, ".")+1:] }

func TestDeltaRemovalsComeAfterUpdates(t *testing.T) {
	f := newFixture(t)
	f.seed()
	p := f.proxy(spiffe("a"), xdstest.ProxyOptions{NodeID: "a", Delta: true, Types: allTypes})
	initial(t, p, 4)
	f.replaceCA()
	var got []string
	for range 5 {
		r := xdstest.Next(t, p)
		kind := "update"
		if len(r.Removed) > 0 {
			kind = "remove"
		}
		got = append(got, kind+" "+shortType(r.TypeURL)+" "+strings.Join(append(r.Names(), r.Removed...), ","))
	}
	want := []string{
		"update Cluster cnew",
		"update Listener out-a",
		"remove Cluster ca",
		"remove ClusterLoadAssignment ca",
		"remove RouteConfiguration rt-a",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("responses (-want +got):\n%s", diff)
	}
	if got := heldNames(p, cds); !cmp.Equal(got, []string{"cnew", "shared"}) {
		t.Errorf("a holds clusters %v", got)
	}
}

// TestSotWRemovalsAreMadeBeforeBreak: a SotW proxy first gets the new
// clusters together with the one leaving, then the listener that stops
// using it, and only then the clusters without it.
func TestSotWRemovalsAreMadeBeforeBreak(t *testing.T) {
	f := newFixture(t)
	f.seed()
	p := f.proxy(spiffe("a"), xdstest.ProxyOptions{NodeID: "a", Types: []string{cds, lds}})
	initial(t, p, 2)
	f.replaceCA()
	var got []string
	for range 3 {
		r := xdstest.Next(t, p)
		names := r.Names()
		sort.Strings(names)
		got = append(got, shortType(r.TypeURL)+" "+strings.Join(names, ","))
	}
	want := []string{
		"Cluster ca,cnew,shared",
		"Listener out-a",
		"Cluster cnew,shared",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("responses (-want +got):\n%s", diff)
	}
	// A removal with nothing else to push goes out at once, alone.
	f.commit(xdstest.Group("a", "a", 3, map[string][]string{cds: {"shared"}, eds: {"shared"}, lds: {"out-a"}}))
	if r := xdstest.Next(t, p); r.TypeURL != cds || !cmp.Equal(r.Names(), []string{"shared"}) {
		t.Errorf("got %s %v, want the clusters without cnew", r.TypeURL, r.Names())
	}
}

func TestNackIsRecordedAndTheVersionNotResent(t *testing.T) {
	for _, delta := range []bool{false, true} {
		t.Run(map[bool]string{false: "sotw", true: "delta"}[delta], func(t *testing.T) {
			f := newFixture(t)
			f.seed()
			reject := func(r xdstest.Response) string {
				var c clusterv3.Cluster
				if a := r.Resources["ca"]; a != nil && a.UnmarshalTo(&c) == nil && c.GetConnectTimeout().AsDuration() == 9*time.Second {
					return "cluster ca: connect timeout 9s is not allowed"
				}
				return ""
			}
			p := f.proxy(spiffe("a"), xdstest.ProxyOptions{NodeID: "a", Delta: delta, Types: allTypes, Reject: reject})
			initial(t, p, 4)
			f.commit(res(t, xdstest.Cluster("ca", 9*time.Second), "ca", 2))
			if r := xdstest.Next(t, p); !r.Nacked {
				t.Fatalf("the bad cluster was not nacked: %v", r.Names())
			}
			xdstest.WaitFor(t, "the nack report", func() bool { return len(f.status.events(meshv1.ProxyEvent_PROXY_EVENT_NACK)) == 1 })
			if n := f.srv.Stats().Nacks; n != 1 {
				t.Errorf("nacks = %d, want 1", n)
			}
			nacks := f.status.events(meshv1.ProxyEvent_PROXY_EVENT_NACK)
			if len(nacks) != 1 || nacks[0].GetLastNack().GetTypeUrl() != cds || !strings.Contains(nacks[0].GetLastNack().GetErrorMessage(), "9s is not allowed") {
				t.Fatalf("published nacks %v", nacks)
			}
			// Another change for a: the listener is pushed, the rejected
			// cluster version is not sent again.
			f.commit(res(t, xdstest.Listener("out-a", 15009), "out-a", 3))
			if r := xdstest.Next(t, p); r.TypeURL != lds {
				t.Fatalf("after the nack got %s %v, want only the listener", r.TypeURL, r.Names())
			}
			// A newer cluster version is sent.
			f.commit(res(t, xdstest.Cluster("ca", 4*time.Second), "ca", 4))
			if r := xdstest.Next(t, p); r.TypeURL != cds || r.Nacked {
				t.Fatalf("the fixed cluster: %s nacked=%v", r.TypeURL, r.Nacked)
			}
		})
	}
}

func TestReconnectWithNewerStateIsRefused(t *testing.T) {
	f := newFixture(t)
	f.seed()
	err := f.refusal(spiffe("a"), xdstest.ProxyOptions{NodeID: "a", Types: []string{cds}, Versions: map[string]string{cds: "9.0123456789abcdef"}})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "older than the 9") {
		t.Fatalf("a proxy at generation 9 on an edge at 1: %v", err)
	}
	// Reconnecting with the version it holds gets the same version back.
	p1 := f.proxy(spiffe("a"), xdstest.ProxyOptions{NodeID: "a", Types: []string{cds}})
	v := xdstest.Next(t, p1).Version
	p2 := f.proxy(spiffe("a"), xdstest.ProxyOptions{NodeID: "a", Types: []string{cds}, Versions: map[string]string{cds: v}})
	if r := xdstest.Next(t, p2); r.Version != v {
		t.Errorf("reconnect got version %s, want %s", r.Version, v)
	}
}

// TestDeltaReconnectWithNewerStateIsRefused: a delta proxy's resource
// versions carry the generation that brought them, so one reconnecting
// with state newer than the edge's is sent elsewhere, and one reconnecting
// with what it holds is sent only what it lacks.
func TestDeltaReconnectWithNewerStateIsRefused(t *testing.T) {
	f := newFixture(t)
	f.seed()
	err := f.refusal(spiffe("a"), xdstest.ProxyOptions{NodeID: "a", Delta: true, Types: []string{cds},
		Initial: map[string]map[string]string{cds: {"c1": "9.0123456789abcdef"}}})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "older than the 9") {
		t.Fatalf("a delta proxy at generation 9 on an edge at 1: %v", err)
	}
	p1 := f.proxy(spiffe("a"), xdstest.ProxyOptions{NodeID: "a", Delta: true, Types: []string{cds}})
	r := xdstest.Next(t, p1)
	if len(r.Versions) < 2 {
		t.Fatalf("initial response holds %v, want at least two clusters", r.Versions)
	}
	held := map[string]string{}
	var missing string
	for n, v := range r.Versions {
		if pool.GenerationOfVersion(v) != (pool.Gen{Number: 1}) {
			t.Errorf("resource %s has version %q, want generation 1 in it", n, v)
		}
		if missing == "" {
			missing = n
			continue
		}
		held[n] = v
	}
	p2 := f.proxy(spiffe("a"), xdstest.ProxyOptions{NodeID: "a", Delta: true, Types: []string{cds}, Initial: map[string]map[string]string{cds: held}})
	if r2 := xdstest.Next(t, p2); len(r2.Resources) != 1 || r2.Versions[missing] != r.Versions[missing] {
		t.Errorf("reconnect got %v, want only %s at %s", r2.Versions, missing, r.Versions[missing])
	}
}

// TestReconnectFromAnOlderEpochIsServed (issue 15, item 2): mesh-compiled
// was lost and the compiler started a new epoch, numbering from 1 again. A
// proxy that holds state from before the loss, of a higher number, is of
// an older epoch: it is served the new epoch, not refused as if it had seen
// newer state (today's edges refused it until the new epoch's numbers caught
// up). A proxy that has seen a newer epoch than the edge's is still refused.
func TestReconnectFromAnOlderEpochIsServed(t *testing.T) {
	f := newFixture(t)
	const epoch = 1733000000000
	f.epoch = epoch
	f.seed()
	now := pool.Gen{Epoch: epoch, Number: 1}
	for _, old := range []string{"57.0123456789abcdef", "1732000000000:57.0123456789abcdef"} {
		t.Run(old, func(t *testing.T) {
			p := f.proxy(spiffe("a"), xdstest.ProxyOptions{NodeID: "sotw", Types: []string{cds}, Versions: map[string]string{cds: old}})
			if r := xdstest.Next(t, p); pool.GenerationOfVersion(r.Version) != now {
				t.Errorf("state-of-the-world proxy got version %s, want one of generation %s", r.Version, now)
			}
			d := f.proxy(spiffe("a"), xdstest.ProxyOptions{NodeID: "delta", Delta: true, Types: []string{cds}, Initial: map[string]map[string]string{cds: {"ca": old}}})
			r := xdstest.Next(t, d)
			if v := r.Versions["ca"]; pool.GenerationOfVersion(v) != now {
				t.Errorf("delta proxy got ca at %q, want a version of generation %s", v, now)
			}
		})
	}
	newer := fmt.Sprintf("%d:1.0123456789abcdef", epoch+1)
	err := f.refusal(spiffe("a"), xdstest.ProxyOptions{NodeID: "a", Types: []string{cds}, Versions: map[string]string{cds: newer}})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "older than the") {
		t.Errorf("a proxy of a newer epoch than the edge's: %v, want UNAVAILABLE", err)
	}
}

func TestAdmissionIsRateLimited(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.Admission = rate.NewLimiter(rate.Every(time.Hour), 1) })
	f.seed()
	p1 := f.proxy(spiffe("a"), xdstest.ProxyOptions{NodeID: "1", Types: []string{cds}})
	xdstest.Next(t, p1)
	if err := f.refusal(spiffe("a"), xdstest.ProxyOptions{NodeID: "2", Types: []string{cds}}); status.Code(err) != codes.Unavailable {
		t.Errorf("second stream over the limit: %v", err)
	}
}

// sources records Acquire and Release calls.
type sources struct {
	mu   sync.Mutex
	refs map[string]int
}

func (s *sources) Acquire(id identity.ID) { s.mu.Lock(); s.refs[id.String()]++; s.mu.Unlock() }
func (s *sources) Release(id identity.ID) { s.mu.Lock(); s.refs[id.String()]--; s.mu.Unlock() }

func TestSecretsServedOnlyToTheirIdentity(t *testing.T) {
	for _, delta := range []bool{false, true} {
		t.Run(map[bool]string{false: "sotw", true: "delta"}[delta], func(t *testing.T) {
			src := &sources{refs: map[string]int{}}
			f := newFixture(t, func(o *Options) { o.Secrets = src })
			f.seed()
			if err := f.srv.SetTrustBundle(f.ca.Bundle()); err != nil {
				t.Fatal(err)
			}
			if err := f.srv.SetCertificate(identity.New("cluster.local", "b", "b"), []byte("b-chain"), []byte("b-key"), "b1"); err != nil {
				t.Fatal(err)
			}
			pa := f.proxy(spiffe("a"), xdstest.ProxyOptions{NodeID: "a", Delta: delta, Types: []string{sds},
				Names: map[string][]string{sds: {layout.SecretRootCert, layout.SecretServiceCert, spiffe("b"), "b/b"}}})
			// a's certificate is not issued yet: a gets the root only.
			r := xdstest.Next(t, pa)
			if !cmp.Equal(r.Names(), []string{layout.SecretRootCert}) {
				t.Fatalf("a got %v before its certificate, want the root only", r.Names())
			}
			xdstest.WaitFor(t, "two refusals", func() bool { return f.srv.Stats().SecretRefusals == 2 })
			src.mu.Lock()
			if src.refs[spiffe("a")] != 1 {
				t.Errorf("a acquired %d times", src.refs[spiffe("a")])
			}
			src.mu.Unlock()
			if err := f.srv.SetCertificate(identity.New("cluster.local", "a", "a"), []byte("a-chain"), []byte("a-key"), "a1"); err != nil {
				t.Fatal(err)
			}
			r = xdstest.Next(t, pa)
			var sec tlsv3.Secret
			if err := r.Resources[layout.SecretServiceCert].UnmarshalTo(&sec); err != nil {
				t.Fatalf("a got %v: %v", r.Names(), err)
			}
			if got := string(sec.GetTlsCertificate().GetCertificateChain().GetInlineBytes()); got != "a-chain" {
				t.Errorf("a's service-cert holds %q", got)
			}
			for n, a := range pa.Held(sds) {
				var s tlsv3.Secret
				_ = a.UnmarshalTo(&s)
				if strings.Contains(string(s.GetTlsCertificate().GetCertificateChain().GetInlineBytes()), "b-") {
					t.Errorf("a holds b's certificate under %s", n)
				}
			}
			// Renewing b's certificate reaches b only.
			pb := f.proxy(spiffe("b"), xdstest.ProxyOptions{NodeID: "b", Delta: delta, Types: []string{sds}})
			if r := xdstest.Next(t, pb); !cmp.Equal(r.Names(), []string{layout.SecretRootCert, layout.SecretServiceCert}) {
				t.Fatalf("b got %v", r.Names())
			}
			if err := f.srv.SetCertificate(identity.New("cluster.local", "b", "b"), []byte("b-chain2"), []byte("b-key2"), "b2"); err != nil {
				t.Fatal(err)
			}
			xdstest.Next(t, pb)
			if err := f.srv.SetTrustBundle(f.ca.Bundle()); err != nil { // same version: nothing new
				t.Fatal(err)
			}
			ca2, _ := xdstest.NewCA("root-2")
			if err := f.srv.SetTrustBundle(ca2.Bundle()); err != nil {
				t.Fatal(err)
			}
			if r := xdstest.Next(t, pa); !cmp.Equal(r.Names(), wantRootUpdate(delta)) {
				t.Errorf("a after the bundle change got %v, want %v (b's renewal must not reach a)", r.Names(), wantRootUpdate(delta))
			}
		})
	}
}

func wantRootUpdate(delta bool) []string {
	if delta {
		return []string{layout.SecretRootCert}
	}
	return []string{layout.SecretRootCert, layout.SecretServiceCert}
}

// TestAckStatusesAreCoalesced: a proxy ACKing its four types in a burst is
// reported once at once and once more after the interval, with every
// type's acked version; nothing is reported after it disconnects.
func TestAckStatusesAreCoalesced(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.AckStatusInterval = 300 * time.Millisecond })
	f.seed()
	p := f.proxy(spiffe("a"), xdstest.ProxyOptions{NodeID: "a", Types: allTypes})
	initial(t, p, 4)
	deadline := time.Now().Add(5 * time.Second)
	for {
		acks := f.status.events(meshv1.ProxyEvent_PROXY_EVENT_ACK)
		if n := len(acks); n > 0 && len(acks[n-1].GetAckedVersions()) == 4 {
			if n > 2 {
				t.Errorf("%d ACK reports for one burst, want at most 2", n)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ACK report with the four types: %v", acks)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A burst right after a report is held back, then reported once.
	before := len(f.status.events(meshv1.ProxyEvent_PROXY_EVENT_ACK))
	f.commit(res(t, xdstest.Endpoints("shared", 9), "shared", 2))
	xdstest.Next(t, p)
	p.Stop()
	<-p.Done()
	time.Sleep(500 * time.Millisecond)
	if got := len(f.status.events(meshv1.ProxyEvent_PROXY_EVENT_ACK)) - before; got > 1 {
		t.Errorf("%d ACK reports after the edit, want at most one", got)
	}
	if len(f.status.events(meshv1.ProxyEvent_PROXY_EVENT_DISCONNECTED)) != 1 {
		t.Errorf("no DISCONNECTED report")
	}
}
