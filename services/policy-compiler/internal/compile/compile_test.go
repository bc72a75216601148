package compile

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	httprbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/model"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/synth"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func newEngine() *Engine {
	return New(Options{MeshName: synth.MeshName, MeshConfig: model.NN{Namespace: synth.MeshConfigNamespace, Name: synth.MeshConfigName}})
}

func load(t testing.TB, e *Engine, objs []synth.Object) *Delta {
	t.Helper()
	for _, o := range objs {
		if err := e.Apply(o.Kind, o.Namespace, o.Name, o.Msg); err != nil {
			t.Fatalf("apply %s: %v", o.Key(), err)
		}
	}
	d := e.Compile()
	if len(d.Invalid) > 0 {
		t.Fatalf("invalid resources: %v", d.Invalid)
	}
	return d
}

func bookstore(t testing.TB, permissive bool) *Engine {
	t.Helper()
	e := newEngine()
	load(t, e, synth.Bookstore(permissive))
	return e
}

func id(ns, sa string) model.Identity { return model.Identity{Namespace: ns, Name: sa} }

func groupNames(t *testing.T, e *Engine, i model.Identity, typeURL string) []string {
	t.Helper()
	if e.Group(i) == nil {
		t.Fatalf("no group for %s", i)
	}
	return e.GroupNames(i, typeURL)
}

func decode[T proto.Message](t *testing.T, e *Engine, typ, name string, m T) T {
	t.Helper()
	r := e.Resource(typ, name)
	if r == nil {
		t.Fatalf("no %s %q", typ, name)
	}
	if err := proto.Unmarshal(r.Bytes, m); err != nil {
		t.Fatalf("decode %s %s: %v", typ, name, err)
	}
	return m
}

func unpack[T proto.Message](t *testing.T, a interface{ GetValue() []byte }, m T) T {
	t.Helper()
	if err := proto.Unmarshal(a.GetValue(), m); err != nil {
		t.Fatalf("unpack %T: %v", m, err)
	}
	return m
}

func TestBookstoreGolden(t *testing.T) {
	for _, mode := range []string{"smi", "permissive"} {
		t.Run(mode, func(t *testing.T) {
			e := bookstore(t, mode == "permissive")
			got := dump(t, e)
			path := filepath.Join("testdata", "bookstore_"+mode+".golden")
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
		})
	}
}

func firstDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < len(al) || i < len(bl); i++ {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			return fmt.Sprintf("line %d:\n- %s\n+ %s", i+1, x, y)
		}
	}
	return ""
}

// dump renders every resource and group as indented JSON, in key order.
func dump(t *testing.T, e *Engine) []byte {
	t.Helper()
	return dumpIf(t, e, nil)
}

// dumpIf is dump of the resources, groups and sets whose "type name" key
// keep accepts (nil: all).
func dumpIf(t *testing.T, e *Engine, keep func(key string) bool) []byte {
	t.Helper()
	var b bytes.Buffer
	news := map[string]func() proto.Message{
		resourcev3.ClusterType:  func() proto.Message { return &clusterv3.Cluster{} },
		resourcev3.EndpointType: func() proto.Message { return &endpointv3.ClusterLoadAssignment{} },
		resourcev3.ListenerType: func() proto.Message { return &listenerv3.Listener{} },
		resourcev3.RouteType:    func() proto.Message { return &routev3.RouteConfiguration{} },
	}
	render := func(m proto.Message) {
		raw, err := protojson.Marshal(m)
		if err != nil {
			t.Fatalf("render %T: %v", m, err)
		}
		var out bytes.Buffer
		if err := json.Indent(&out, raw, "", "  "); err != nil {
			t.Fatal(err)
		}
		b.Write(out.Bytes())
		b.WriteString("\n")
	}
	for _, r := range e.Resources() {
		if keep != nil && !keep(r.Type+" "+r.Name) {
			continue
		}
		m := news[r.TypeURL]()
		if err := proto.Unmarshal(r.Bytes, m); err != nil {
			t.Fatalf("decode %s: %v", r.Key(), err)
		}
		fmt.Fprintf(&b, "=== %s %s version=%s\n", r.Type, r.Name, r.Version)
		render(m)
	}
	for _, g := range e.Groups() {
		if keep != nil && !keep("group "+g.Identity.String()) {
			continue
		}
		fmt.Fprintf(&b, "=== group %s version=%s\n", g.Identity, g.Version)
		render(g.Group)
	}
	for _, s := range e.Sets() {
		if keep != nil && !keep("set "+s.Set.GetName()) {
			continue
		}
		fmt.Fprintf(&b, "=== set %s version=%s\n", s.Set.GetName(), s.Version)
		render(s.Set)
	}
	return b.Bytes()
}

func TestBookstoreNames(t *testing.T) {
	e := bookstore(t, false)
	buyer := id("bookbuyer", "bookbuyer")
	want := []string{"bookstore/bookstore-v1|14001", "bookstore/bookstore-v2|14001", "bookstore/bookstore|14001"}
	for _, typ := range []string{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.RouteType} {
		if got := groupNames(t, e, buyer, typ); !slices.Equal(got, want) {
			t.Errorf("bookbuyer %s = %v, want %v", typ, got, want)
		}
	}
	wantListeners := []string{OutboundListener, "outbound-listener:bookstore/bookstore-v1|14001", "outbound-listener:bookstore/bookstore-v2|14001", "outbound-listener:bookstore/bookstore|14001"}
	if got := groupNames(t, e, buyer, resourcev3.ListenerType); !slices.Equal(got, wantListeners) {
		t.Errorf("bookbuyer listeners = %v, want %v", got, wantListeners)
	}
	v1 := id("bookstore", "bookstore-v1")
	wantListeners = []string{"inbound-listener:bookstore/bookstore-v1", OutboundListener, "outbound-listener:bookwarehouse/bookwarehouse|14001"}
	if got := groupNames(t, e, v1, resourcev3.ListenerType); !slices.Equal(got, wantListeners) {
		t.Errorf("bookstore-v1 listeners = %v, want %v", got, wantListeners)
	}
	wantClusters := []string{"bookstore/bookstore-v1|14001|local", "bookstore/bookstore|14001|local", "bookwarehouse/bookwarehouse|14001"}
	if got := groupNames(t, e, v1, resourcev3.ClusterType); !slices.Equal(got, wantClusters) {
		t.Errorf("bookstore-v1 clusters = %v, want %v", got, wantClusters)
	}
	wh := id("bookwarehouse", "bookwarehouse")
	if got := groupNames(t, e, wh, resourcev3.ClusterType); !slices.Equal(got, []string{"bookwarehouse/bookwarehouse|14001|local", "bookwarehouse/mysql|3306"}) {
		t.Errorf("bookwarehouse clusters = %v", got)
	}
}

func TestBookthiefScoping(t *testing.T) {
	thief := id("bookthief", "bookthief")
	smi := bookstore(t, false)
	if got := groupNames(t, smi, thief, resourcev3.ClusterType); len(got) != 0 {
		t.Errorf("SMI mode: bookthief clusters = %v, want none", got)
	}
	if got := groupNames(t, smi, thief, resourcev3.ListenerType); len(got) != 0 {
		t.Errorf("SMI mode: bookthief listeners = %v, want none", got)
	}
	perm := bookstore(t, true)
	got := groupNames(t, perm, thief, resourcev3.ClusterType)
	for _, want := range []string{"bookstore/bookstore|14001", "bookstore/bookstore-v1|14001", "bookwarehouse/mysql|3306"} {
		if !slices.Contains(got, want) {
			t.Errorf("permissive mode: bookthief clusters %v lack %s", got, want)
		}
	}
}

func TestBookstoreCluster(t *testing.T) {
	e := bookstore(t, false)
	c := decode(t, e, layout.TypeCluster, "bookstore/bookstore|14001", &clusterv3.Cluster{})
	if c.GetType() != clusterv3.Cluster_EDS || c.GetEdsClusterConfig().GetServiceName() != "bookstore/bookstore|14001" {
		t.Errorf("cluster discovery = %v %q", c.GetType(), c.GetEdsClusterConfig().GetServiceName())
	}
	tlsCtx := unpack(t, c.GetTransportSocket().GetTypedConfig(), &tlsv3.UpstreamTlsContext{})
	common := tlsCtx.GetCommonTlsContext()
	if n := common.GetTlsCertificateSdsSecretConfigs()[0].GetName(); n != layout.SecretServiceCert {
		t.Errorf("client cert secret = %q", n)
	}
	combined := common.GetCombinedValidationContext()
	if n := combined.GetValidationContextSdsSecretConfig().GetName(); n != layout.SecretRootCert {
		t.Errorf("CA secret = %q", n)
	}
	var sans []string
	for _, m := range combined.GetDefaultValidationContext().GetMatchTypedSubjectAltNames() {
		sans = append(sans, m.GetMatcher().GetExact())
	}
	want := []string{"spiffe://cluster.local/ns/bookstore/sa/bookstore-v1", "spiffe://cluster.local/ns/bookstore/sa/bookstore-v2"}
	if !slices.Equal(sans, want) {
		t.Errorf("SAN matches = %v, want %v", sans, want)
	}
	cla := decode(t, e, layout.TypeEndpoint, "bookstore/bookstore|14001", &endpointv3.ClusterLoadAssignment{})
	var addrs []string
	for _, l := range cla.GetEndpoints() {
		for _, ep := range l.GetLbEndpoints() {
			sa := ep.GetEndpoint().GetAddress().GetSocketAddress()
			addrs = append(addrs, fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue()))
		}
	}
	if !slices.Equal(addrs, []string{"10.244.2.10:14001", "10.244.2.20:14001"}) {
		t.Errorf("endpoints = %v", addrs)
	}
}

func TestSplitWeights(t *testing.T) {
	e := bookstore(t, false)
	rc := decode(t, e, layout.TypeRoute, "bookstore/bookstore|14001", &routev3.RouteConfiguration{})
	vh := rc.GetVirtualHosts()[0]
	for _, d := range []string{"bookstore", "bookstore.bookstore.svc.cluster.local", "bookstore.bookstore:14001", "10.96.10.1:14001"} {
		if !slices.Contains(vh.GetDomains(), d) {
			t.Errorf("domains %v lack %s", vh.GetDomains(), d)
		}
	}
	var got []string
	for _, c := range vh.GetRoutes()[0].GetRoute().GetWeightedClusters().GetClusters() {
		got = append(got, fmt.Sprintf("%s=%d", c.GetName(), c.GetWeight().GetValue()))
	}
	if want := []string{"bookstore/bookstore-v1|14001=75", "bookstore/bookstore-v2|14001=25"}; !slices.Equal(got, want) {
		t.Errorf("weighted clusters = %v, want %v", got, want)
	}
	// A backend is reached directly, without the split.
	rc = decode(t, e, layout.TypeRoute, "bookstore/bookstore-v1|14001", &routev3.RouteConfiguration{})
	if c := rc.GetVirtualHosts()[0].GetRoutes()[0].GetRoute().GetCluster(); c != "bookstore/bookstore-v1|14001" {
		t.Errorf("backend route cluster = %q", c)
	}
}

// inboundChain returns the filters of the inbound chain for port.
func inboundChain(t *testing.T, e *Engine, i model.Identity, port uint32) []*listenerv3.Filter {
	t.Helper()
	l := decode(t, e, layout.TypeListener, InboundListenerName(i), &listenerv3.Listener{})
	for _, fc := range l.GetFilterChains() {
		if fc.GetFilterChainMatch().GetDestinationPort().GetValue() == port {
			ds := unpack(t, fc.GetTransportSocket().GetTypedConfig(), &tlsv3.DownstreamTlsContext{})
			if !ds.GetRequireClientCertificate().GetValue() {
				t.Errorf("inbound chain %s does not require a client certificate", fc.GetName())
			}
			return fc.GetFilters()
		}
	}
	t.Fatalf("inbound listener of %s has no chain for port %d", i, port)
	return nil
}

func principalsOf(policies map[string]*rbacPolicy) map[string][]string {
	out := map[string][]string{}
	for name, p := range policies {
		for _, pr := range p.GetPrincipals() {
			out[name] = append(out[name], pr.GetAuthenticated().GetPrincipalName().GetExact())
		}
	}
	return out
}

func TestInboundRBAC(t *testing.T) {
	e := bookstore(t, false)
	filters := inboundChain(t, e, id("bookstore", "bookstore-v1"), 14001)
	hcm := unpack(t, filters[0].GetTypedConfig(), &hcmv3.HttpConnectionManager{})
	if names := []string{hcm.GetHttpFilters()[0].GetName(), hcm.GetHttpFilters()[1].GetName()}; names[0] != httpRBACFilter {
		t.Errorf("http filters = %v, want rbac first", names)
	}
	routes := hcm.GetRouteConfig().GetVirtualHosts()[0].GetRoutes()
	var names []string
	for _, r := range routes {
		names = append(names, r.GetName())
		per := unpack(t, r.GetTypedPerFilterConfig()[httpRBACFilter], &httprbacv3.RBACPerRoute{})
		got := principalsOf(per.GetRbac().GetRules().GetPolicies())
		want := map[string][]string{"bookstore/bookbuyer-access-bookstore-v1": {"spiffe://cluster.local/ns/bookbuyer/sa/bookbuyer"}}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("route %s principals = %v, want %v", r.GetName(), got, want)
		}
		if r.GetRoute().GetCluster() != "bookstore/bookstore-v1|14001|local" {
			t.Errorf("route %s cluster = %q", r.GetName(), r.GetRoute().GetCluster())
		}
	}
	if want := []string{"bookstore/bookstore-service-routes/books-bought", "bookstore/bookstore-service-routes/buy-a-book"}; !slices.Equal(names, want) {
		t.Errorf("inbound routes = %v, want %v", names, want)
	}
	if m := routes[1].GetMatch(); m.GetSafeRegex().GetRegex() != ".*a-book.*new" || m.GetHeaders()[0].GetName() != ":method" {
		t.Errorf("buy-a-book match = %v", m)
	}

	// TCP: network RBAC before tcp_proxy.
	filters = inboundChain(t, e, id("bookwarehouse", "mysql"), 3306)
	rb := unpack(t, filters[0].GetTypedConfig(), &netrbacv3.RBAC{})
	got := principalsOf(rb.GetRules().GetPolicies())
	if want := map[string][]string{"bookwarehouse/bookwarehouse-access-mysql": {"spiffe://cluster.local/ns/bookwarehouse/sa/bookwarehouse"}}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("mysql principals = %v, want %v", got, want)
	}
	tp := unpack(t, filters[1].GetTypedConfig(), &tcpproxyv3.TcpProxy{})
	if tp.GetCluster() != "bookwarehouse/mysql|3306|local" {
		t.Errorf("mysql tcp_proxy cluster = %q", tp.GetCluster())
	}

	// Permissive: no RBAC at all.
	p := bookstore(t, true)
	filters = inboundChain(t, p, id("bookwarehouse", "mysql"), 3306)
	if len(filters) != 1 || filters[0].GetName() != "envoy.filters.network.tcp_proxy" {
		t.Errorf("permissive mysql filters = %v", filters)
	}
}

func TestEveryResourceValidatesAndIsDeterministic(t *testing.T) {
	objs := synth.Bookstore(false)
	a := bookstore(t, false)
	for seed := int64(1); seed <= 3; seed++ {
		shuffled := slices.Clone(objs)
		rand.New(rand.NewSource(seed)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		b := newEngine()
		load(t, b, shuffled)
		if !bytes.Equal(dump(t, a), dump(t, b)) {
			t.Fatalf("seed %d: output depends on input order", seed)
		}
	}
	for _, r := range a.Resources() {
		var m interface {
			proto.Message
			ValidateAll() error
		}
		switch r.Type {
		case layout.TypeCluster:
			m = &clusterv3.Cluster{}
		case layout.TypeEndpoint:
			m = &endpointv3.ClusterLoadAssignment{}
		case layout.TypeListener:
			m = &listenerv3.Listener{}
		case layout.TypeRoute:
			m = &routev3.RouteConfiguration{}
		}
		if err := proto.Unmarshal(r.Bytes, m); err != nil {
			t.Fatalf("%s: %v", r.Key(), err)
		}
		if err := m.ValidateAll(); err != nil {
			t.Errorf("%s: %v", r.Key(), err)
		}
		if r.Type != layout.TypeListener || strings.HasPrefix(r.Name, "inbound") {
			if again, _ := deterministic.Marshal(m); hashOf(again) != r.Version {
				t.Errorf("%s: version is not the hash of its bytes", r.Key())
			}
		}
	}
}

func TestGroupNamesSortedAndUnique(t *testing.T) {
	for _, permissive := range []bool{false, true} {
		e := bookstore(t, permissive)
		for _, g := range e.Groups() {
			for typ := range typeURLSet(g) {
				own := g.Group.GetResources()[typ].GetNames()
				if !slices.IsSorted(own) || len(slices.Compact(slices.Clone(own))) != len(own) {
					t.Errorf("group %s %s own names not sorted and unique: %v", g.Identity, typ, own)
				}
				n := e.GroupNames(g.Identity, typ)
				if !slices.IsSorted(n) || len(slices.Compact(slices.Clone(n))) != len(n) {
					t.Errorf("group %s %s names not sorted and unique: %v", g.Identity, typ, n)
				}
				for _, name := range n {
					if e.Resource(shortType(typ), name) == nil {
						t.Errorf("group %s lists missing %s %s", g.Identity, typ, name)
					}
				}
			}
			if GroupVersion(g.Group) != g.Version {
				t.Errorf("group %s version is not GroupVersion of its content", g.Identity)
			}
			if sets := g.Group.GetSets(); !slices.IsSorted(sets) || len(slices.Compact(slices.Clone(sets))) != len(sets) {
				t.Errorf("group %s sets not sorted and unique: %v", g.Identity, sets)
			}
			for _, name := range g.Group.GetSets() {
				if e.Set(name) == nil {
					t.Errorf("group %s lists the missing set %s", g.Identity, name)
				}
			}
		}
		for _, s := range e.Sets() {
			if SetVersion(s.Set) != s.Version {
				t.Errorf("set %s version is not SetVersion of its content", s.Set.GetName())
			}
			for typ, names := range s.Set.GetResources() {
				if n := names.GetNames(); len(n) == 0 || !slices.IsSorted(n) || len(slices.Compact(slices.Clone(n))) != len(n) {
					t.Errorf("set %s %s names not sorted, unique and non-empty: %v", s.Set.GetName(), typ, n)
				}
			}
		}
	}
	perm := bookstore(t, true)
	wantListeners := []string{OutboundListener}
	for _, s := range perm.svcs.every() {
		wantListeners = append(wantListeners, perm.svcs.frag(s.nn).listeners...)
	}
	if got := groupNames(t, perm, id("bookthief", "bookthief"), resourcev3.ListenerType); !slices.Equal(got, wantListeners) || len(got) < 5 {
		t.Errorf("permissive bookthief listeners = %v, want %v", got, wantListeners)
	}
}

func TestConstantFilters(t *testing.T) {
	for _, f := range []func() any{func() any { return routerFilter() }, func() any { return originalDst() }, func() any { return tlsInspector() }} {
		if f() == nil {
			t.Error("nil constant filter")
		}
	}
}

type rbacPolicy = rbacv3.Policy

// typeURLSet is every type URL a group serves names of, its own or through
// its sets.
func typeURLSet(g *Group) map[string]bool {
	out := map[string]bool{}
	for typ := range g.Group.GetResources() {
		out[typ] = true
	}
	if len(g.Group.GetSets()) > 0 {
		for _, typ := range typeURLs {
			out[typ] = true
		}
	}
	return out
}
