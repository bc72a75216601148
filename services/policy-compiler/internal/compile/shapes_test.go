package compile

import (
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/policy"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/model"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/synth"
)

var (
	cacheSvc  = model.NN{Namespace: "bookwarehouse", Name: "cache"}
	legacySvc = model.NN{Namespace: "bookwarehouse", Name: "legacy-db"}
)

// shapes is the bookstore with the headless cache and the selectorless
// legacy-db (synth.BookstoreShapes); every resource passed ValidateAll.
func shapes(t *testing.T) (*Engine, *Delta) {
	t.Helper()
	e := newEngine()
	d := load(t, e, synth.BookstoreShapes())
	return e, d
}

// TestShapesGolden: the resources of the headless cache and the
// selectorless legacy-db, the inbound listeners of the identities behind
// them and the group of their client bookwarehouse.
func TestShapesGolden(t *testing.T) {
	e, d := shapes(t)
	for _, st := range d.Statuses {
		if st.GetCondition() != meshv1.PolicyCondition_POLICY_CONDITION_ACCEPTED {
			t.Errorf("%s", st.GetMessage())
		}
	}
	got := dumpIf(t, e, func(key string) bool {
		return strings.Contains(key, "bookwarehouse/cache") || strings.Contains(key, "bookwarehouse/legacy-db") ||
			strings.Contains(key, "inbound-listener:bookwarehouse/mysql") || key == "group bookwarehouse/bookwarehouse"
	})
	path := filepath.Join("testdata", "shapes.golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("compiled output differs from %s (run with -update after checking the change):\n%s", path, firstDiff(string(want), string(got)))
	}
}

// sanExacts are the exact URI SANs a cluster's upstream TLS accepts.
func sanExacts(t *testing.T, c *clusterv3.Cluster) []string {
	t.Helper()
	tls := unpack(t, c.GetTransportSocket().GetTypedConfig(), &tlsv3.UpstreamTlsContext{})
	var out []string
	for _, m := range tls.GetCommonTlsContext().GetCombinedValidationContext().GetDefaultValidationContext().GetMatchTypedSubjectAltNames() {
		out = append(out, m.GetMatcher().GetExact())
	}
	return out
}

// TestHeadlessService: each ready endpoint's address is an address of the
// port's listener, whose one chain proxies to the ORIGINAL_DST cluster
// that checks the cache identity's SAN; the client that may reach cache
// lists both, the one that may not lists neither; the UDP port compiles
// to nothing.
func TestHeadlessService(t *testing.T) {
	e, _ := shapes(t)
	name := ServiceListenerName(cacheSvc, 6379)
	l := decode(t, e, layout.TypeListener, name, &listenerv3.Listener{})
	addrs := []string{fmt.Sprintf("%s:%d", l.GetAddress().GetSocketAddress().GetAddress(), l.GetAddress().GetSocketAddress().GetPortValue())}
	for _, a := range l.GetAdditionalAddresses() {
		addrs = append(addrs, fmt.Sprintf("%s:%d", a.GetAddress().GetSocketAddress().GetAddress(), a.GetAddress().GetSocketAddress().GetPortValue()))
	}
	if want := []string{"10.244.3.30:6379", "10.244.3.31:6379"}; !slices.Equal(addrs, want) {
		t.Errorf("listener addresses %v, want %v", addrs, want)
	}
	if l.GetBindToPort().GetValue() || len(l.GetFilterChains()) != 1 {
		t.Fatalf("listener binds its port or has %d chains", len(l.GetFilterChains()))
	}
	tp := unpack(t, l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig(), &tcpproxyv3.TcpProxy{})
	direct := DirectClusterName(cacheSvc, 6379)
	if tp.GetCluster() != direct {
		t.Errorf("tcp_proxy to %q, want %q", tp.GetCluster(), direct)
	}
	c := decode(t, e, layout.TypeCluster, direct, &clusterv3.Cluster{})
	if c.GetType() != clusterv3.Cluster_ORIGINAL_DST || c.GetLbPolicy() != clusterv3.Cluster_CLUSTER_PROVIDED {
		t.Errorf("direct cluster is %v/%v", c.GetType(), c.GetLbPolicy())
	}
	if got, want := sanExacts(t, c), []string{"spiffe://cluster.local/ns/bookwarehouse/sa/cache"}; !slices.Equal(got, want) {
		t.Errorf("direct cluster SANs %v, want %v", got, want)
	}
	for _, typ := range []string{resourcev3.ClusterType, resourcev3.ListenerType} {
		if names := groupNames(t, e, id("bookwarehouse", "bookwarehouse"), typ); !slices.Contains(names, direct) && !slices.Contains(names, name) {
			t.Errorf("bookwarehouse's %s names lack the cache's: %v", typ, names)
		}
		for _, n := range groupNames(t, e, id("bookbuyer", "bookbuyer"), typ) {
			if strings.Contains(n, "bookwarehouse/cache") {
				t.Errorf("bookbuyer, which no TrafficTarget lets reach cache, is served %s", n)
			}
		}
	}
	for _, r := range e.Resources() {
		if strings.Contains(r.Name, "|7946") {
			t.Errorf("the UDP port compiled to %s", r.Key())
		}
	}
}

// TestHeadlessEndpointChange: an endpoint that comes or goes rewrites the
// port's ClusterLoadAssignment and listener, nothing else; the last one
// going removes the listener (and the clients' names of it), the first one
// coming back restores it; every step equals a cold compile.
func TestHeadlessEndpointChange(t *testing.T) {
	e, _ := shapes(t)
	redis := synth.Port{Number: 6379, Name: "redis", AppProtocol: "tcp"}
	slice := func(eps ...synth.Endpoint) synth.Object {
		return synth.EndpointSlice("bookwarehouse", "cache", "cache-abcde", []synth.Port{redis}, eps...)
	}
	objs := synth.BookstoreShapes()
	step := func(o synth.Object, want []string) {
		t.Helper()
		d := apply(t, e, o)
		if got := keys(d); !slices.Equal(got, want) {
			t.Errorf("wrote %v, want %v", got, want)
		}
		for i := range objs {
			if objs[i].Key() == o.Key() {
				objs[i] = o
			}
		}
		equalsColdOf(t, e, objs)
	}
	both := []string{"endpoint bookwarehouse/cache|6379", "listener outbound-listener:bookwarehouse/cache|6379"}
	step(slice(synth.Endpoint{Pod: "cache-0", IP: "10.244.3.30"}, synth.Endpoint{Pod: "cache-1", IP: "10.244.3.31"}, synth.Endpoint{Pod: "cache-2", IP: "10.244.3.32"}), both)
	step(slice(synth.Endpoint{Pod: "cache-1", IP: "10.244.3.31"}), both)
	step(slice(), []string{"endpoint bookwarehouse/cache|6379", "delete " + layout.ResourceKey(layout.TypeListener, ServiceListenerName(cacheSvc, 6379)), "group bookwarehouse/bookwarehouse"})
	if names := groupNames(t, e, id("bookwarehouse", "bookwarehouse"), resourcev3.ListenerType); slices.Contains(names, ServiceListenerName(cacheSvc, 6379)) {
		t.Errorf("a listener without endpoints is still listed: %v", names)
	}
	step(slice(synth.Endpoint{Pod: "cache-0", IP: "10.244.3.30"}), []string{"endpoint bookwarehouse/cache|6379", "listener outbound-listener:bookwarehouse/cache|6379", "group bookwarehouse/bookwarehouse"})
}

// equalsColdOf checks that e holds what a fresh engine, seeded with e's
// kept versions (as a restarted compiler is), compiles from objs.
func equalsColdOf(t *testing.T, e *Engine, objs []synth.Object) {
	t.Helper()
	cold := newEngine()
	if errs := cold.Seed(e.Kept()); len(errs) > 0 {
		t.Fatal(errs)
	}
	for _, o := range objs {
		if err := cold.Apply(o.Kind, o.Namespace, o.Name, o.Msg); err != nil {
			t.Fatal(err)
		}
	}
	cold.Compile()
	if diff := diffLists(snapshot(cold), snapshot(e)); diff != "" {
		t.Errorf("incremental differs from cold:\n%s", diff)
	}
}

// TestSelectorlessService: legacy-db's cluster takes its endpoints from the
// hand-written slice and accepts the certificate of the identity it
// declares, mysql; bookwarehouse, which may reach mysql, reaches it; the
// declared identity's inbound listener serves its port.
func TestSelectorlessService(t *testing.T) {
	e, _ := shapes(t)
	c := decode(t, e, layout.TypeCluster, ClusterName(legacySvc, 3306), &clusterv3.Cluster{})
	if got, want := sanExacts(t, c), []string{"spiffe://cluster.local/ns/bookwarehouse/sa/mysql"}; !slices.Equal(got, want) {
		t.Errorf("SANs %v, want %v", got, want)
	}
	if got := e.Resource(layout.TypeEndpoint, ClusterName(legacySvc, 3306)); got == nil || !bytes.Contains(got.Bytes, []byte("10.30.0.5")) {
		t.Errorf("the ClusterLoadAssignment lacks the slice's 10.30.0.5")
	}
	for _, n := range []string{ClusterName(legacySvc, 3306), ServiceListenerName(legacySvc, 3306)} {
		found := false
		for _, typ := range []string{resourcev3.ClusterType, resourcev3.ListenerType} {
			found = found || slices.Contains(groupNames(t, e, id("bookwarehouse", "bookwarehouse"), typ), n)
		}
		if !found {
			t.Errorf("bookwarehouse is not served %s", n)
		}
	}
	if len(inboundChain(t, e, id("bookwarehouse", "mysql"), 3306)) == 0 {
		t.Error("mysql's inbound listener has no chain for 3306")
	}
}

// TestSelectorlessRejections: without its annotation, or with one that is
// malformed or names another namespace's identity, a selectorless Service
// is refused with the annotation's field path and compiles to nothing (no
// cluster that could accept a certificate); fixing the annotation accepts
// it and brings its resources back. Every step equals a cold compile.
func TestSelectorlessRejections(t *testing.T) {
	sql := synth.Port{Number: 3306, Name: "mysql", AppProtocol: "tcp"}
	for _, tc := range []struct {
		name, value, reason, message string
	}{
		{"missing", "", policy.ReasonMissingField,
			`Service bookwarehouse/legacy-db rejected: metadata.annotations["openservicemesh.io/service-accounts"] is required on a Service without a selector: it names the service accounts (namespace/name, comma-separated) whose certificates its endpoints present`},
		{"malformed", "mysql", policy.ReasonInvalidValue,
			`Service bookwarehouse/legacy-db rejected: metadata.annotations["openservicemesh.io/service-accounts"]: "mysql" is not namespace/serviceaccount`},
		{"other namespace", "bookwarehouse/mysql, bookstore/bookstore-v1", policy.ReasonCrossNamespace,
			`Service bookwarehouse/legacy-db rejected: metadata.annotations["openservicemesh.io/service-accounts"]: "bookstore/bookstore-v1" is not in the Service's namespace "bookwarehouse"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := shapes(t)
			objs := synth.BookstoreShapes()
			bad := synth.SelectorlessService("bookwarehouse", "legacy-db", "10.96.20.9", tc.value, sql)
			for i := range objs {
				if objs[i].Key() == bad.Key() {
					objs[i] = bad
				}
			}
			d := apply(t, e, bad)
			if len(d.Statuses) != 1 {
				t.Fatalf("statuses %v, want the Service's rejection", d.Statuses)
			}
			st := d.Statuses[0]
			if st.GetCondition() != meshv1.PolicyCondition_POLICY_CONDITION_REJECTED || st.GetReason() != tc.reason ||
				st.GetFieldPath() != model.ServiceAccountsField || st.GetMessage() != tc.message ||
				st.GetObject().GetKind() != "Service" || st.GetObject().GetApiVersion() != "v1" {
				t.Errorf("status %v", st)
			}
			if e.Rejected() != 1 {
				t.Errorf("Rejected() = %d, want 1", e.Rejected())
			}
			for _, r := range e.Resources() {
				if strings.Contains(r.Name, "legacy-db") {
					t.Errorf("a refused Service still compiles %s", r.Key())
				}
			}
			equalsColdOf(t, e, objs)
			good := synth.SelectorlessService("bookwarehouse", "legacy-db", "10.96.20.9", "bookwarehouse/mysql", sql)
			d = apply(t, e, good)
			if len(d.Statuses) != 1 || d.Statuses[0].GetCondition() != meshv1.PolicyCondition_POLICY_CONDITION_ACCEPTED {
				t.Errorf("statuses after the fix %v, want Accepted", d.Statuses)
			}
			if e.Resource(layout.TypeCluster, ClusterName(legacySvc, 3306)) == nil {
				t.Error("no cluster after the fix")
			}
			equalsColdOf(t, e, synth.BookstoreShapes())
		})
	}
}

// TestShapesIncrementalEqualsCold is TestIncrementalEqualsCold on the
// objects of the new shapes alone: random edits of the headless cache (its
// slice's endpoints, its pods, the Service itself), the selectorless
// legacy-db (its annotation, its slice) and their TrafficTargets, each
// followed by a comparison with a cold compile.
func TestShapesIncrementalEqualsCold(t *testing.T) {
	for seed := int64(1); seed <= 6; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewSource(seed))
			objs := synth.BookstoreShapes()
			var focus []int
			for i, o := range objs {
				if strings.Contains(o.Name, "cache") || strings.Contains(o.Name, "legacy-db") || o.Name == "bookwarehouse-access-mysql" {
					focus = append(focus, i)
				}
			}
			present := make([]bool, len(objs))
			for i := range present {
				present[i] = true
			}
			e := newEngine()
			load(t, e, objs)
			for step := 0; step < 60; step++ {
				i := focus[rng.Intn(len(focus))]
				o := objs[i]
				switch {
				case !present[i]:
					present[i] = true
					apply(t, e, o)
				case rng.Intn(5) == 0:
					present[i] = false
					remove(t, e, o.Kind, o.Namespace, o.Name)
				default:
					objs[i] = mutate(rng, o)
					apply(t, e, objs[i])
				}
				var live []synth.Object
				for j, o := range objs {
					if present[j] {
						live = append(live, o)
					}
				}
				equalsColdOf(t, e, live)
				if t.Failed() {
					t.Fatalf("step %d: %s", step, objs[i].Key())
				}
			}
		})
	}
}

// TestServiceVerdictOnlyForSelectorless: Services with a selector, headless
// or not, get no verdict; a selectorless Service that gains a selector
// loses its verdict.
func TestServiceVerdictOnlyForSelectorless(t *testing.T) {
	e, d := shapes(t)
	var kinds []string
	for _, st := range d.Statuses {
		if st.GetObject().GetKind() == "Service" {
			kinds = append(kinds, st.GetObject().GetName())
		}
	}
	if !slices.Equal(kinds, []string{"legacy-db"}) {
		t.Errorf("Service verdicts for %v, want legacy-db only", kinds)
	}
	bad := synth.SelectorlessService("bookwarehouse", "legacy-db", "10.96.20.9", "", synth.Port{Number: 3306, Name: "mysql", AppProtocol: "tcp"})
	apply(t, e, bad)
	sel := proto.Clone(bad.Msg).(*meshv1.Service)
	sel.Selector = map[string]string{"app": "mysql"}
	apply(t, e, synth.Object{Kind: bad.Kind, Namespace: bad.Namespace, Name: bad.Name, Msg: sel})
	if e.Rejected() != 0 {
		t.Errorf("Rejected() = %d after the Service gained a selector", e.Rejected())
	}
}
