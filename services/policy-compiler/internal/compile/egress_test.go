package compile

import (
	"bytes"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	httprbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/model"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/synth"
)

// egressGolden compares got with testdata/name.golden (-update rewrites it).
func egressGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
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

// validateAll decodes every resource of e and runs its ValidateAll, as
// Envoy's own checks would.
func validateAll(t *testing.T, e *Engine) {
	t.Helper()
	news := map[string]func() validated{
		resourcev3.ClusterType:  func() validated { return &clusterv3.Cluster{} },
		resourcev3.EndpointType: func() validated { return &endpointv3.ClusterLoadAssignment{} },
		resourcev3.ListenerType: func() validated { return &listenerv3.Listener{} },
		resourcev3.RouteType:    func() validated { return &routev3.RouteConfiguration{} },
	}
	for _, r := range e.Resources() {
		m := news[r.TypeURL]()
		if err := proto.Unmarshal(r.Bytes, m); err != nil {
			t.Fatalf("decode %s: %v", r.Key(), err)
		}
		if err := m.ValidateAll(); err != nil {
			t.Errorf("%s fails ValidateAll: %v", r.Key(), err)
		}
	}
}

// TestEgressGolden: the bookstore with Egress objects (http by host
// through an HTTPRouteGroup, with an ExternalName Service naming the host;
// https by SNI; tcp by range), and the same mesh with enableEgress (global
// passthrough, where the Egresses are not applied): every resource passes
// ValidateAll and equals the golden file.
func TestEgressGolden(t *testing.T) {
	for name, objs := range map[string][]synth.Object{
		"bookstore_egress":      synth.BookstoreEgress(),
		"bookstore_passthrough": append(synth.BookstoreEgress(), synth.PassthroughMeshConfig(false)),
	} {
		t.Run(name, func(t *testing.T) {
			e := newEngine()
			load(t, e, objs)
			validateAll(t, e)
			distinctMatches(t, e)
			egressGolden(t, name, dump(t, e))
		})
	}
}

func egressListener(t *testing.T, e *Engine, name string) *listenerv3.Listener {
	t.Helper()
	return decode(t, e, layout.TypeListener, name, &listenerv3.Listener{})
}

// TestEgressResources checks what each source's proxy is served: only the
// sources of an Egress get its listeners, routes and clusters; the virtual
// host carries the host, host:port and the ExternalName Service's names;
// https chains match the SNIs, tcp chains the range.
func TestEgressResources(t *testing.T) {
	e := newEngine()
	load(t, e, synth.BookstoreEgress())
	buyer, thief, v1 := id("bookbuyer", "bookbuyer"), id("bookthief", "bookthief"), id("bookstore", "bookstore-v1")

	if got := groupNames(t, e, buyer, resourcev3.ListenerType); !slices.Contains(got, "egress-listener:bookbuyer/bookbuyer|80") || !slices.Contains(got, OutboundListener) {
		t.Errorf("bookbuyer listeners %v", got)
	}
	if got := groupNames(t, e, buyer, resourcev3.RouteType); !slices.Contains(got, "egress:bookbuyer/bookbuyer|80") {
		t.Errorf("bookbuyer routes %v", got)
	}
	if got := groupNames(t, e, buyer, resourcev3.ClusterType); !slices.Contains(got, "egress:api.books.example:80") || slices.Contains(got, PassthroughCluster) {
		t.Errorf("bookbuyer clusters %v", got)
	}
	for _, typ := range []string{resourcev3.ListenerType, resourcev3.RouteType, resourcev3.ClusterType} {
		for _, n := range groupNames(t, e, thief, typ) {
			if strings.HasPrefix(n, "egress") || n == PassthroughCluster || n == OutboundListener {
				t.Errorf("bookthief, no Egress's source, is served %s", n)
			}
		}
	}
	rc := decode(t, e, layout.TypeRoute, "egress:bookbuyer/bookbuyer|80", &routev3.RouteConfiguration{})
	vh := rc.GetVirtualHosts()
	if len(vh) != 1 {
		t.Fatalf("virtual hosts %v", vh)
	}
	for _, d := range []string{"api.books.example", "api.books.example:80", "books-api", "books-api.bookbuyer.svc.cluster.local:80"} {
		if !slices.Contains(vh[0].GetDomains(), d) {
			t.Errorf("domains %v lack %s", vh[0].GetDomains(), d)
		}
	}
	if r := vh[0].GetRoutes(); len(r) != 1 || r[0].GetMatch().GetSafeRegex().GetRegex() != "/books/.*" || r[0].GetRoute().GetCluster() != "egress:api.books.example:80" {
		t.Errorf("routes %v", r)
	}
	c := decode(t, e, layout.TypeCluster, "egress:api.books.example:80", &clusterv3.Cluster{})
	if c.GetType() != clusterv3.Cluster_STRICT_DNS || c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress().GetAddress() != "api.books.example" {
		t.Errorf("cluster %v", c)
	}

	if got := groupNames(t, e, v1, resourcev3.ClusterType); !slices.Contains(got, PassthroughCluster) {
		t.Errorf("bookstore-v1 clusters %v", got)
	}
	tls := egressListener(t, e, "egress-listener:bookstore/bookstore-v1|443")
	if len(tls.GetListenerFilters()) != 1 || tls.GetBindToPort().GetValue() || len(tls.GetFilterChains()) != 1 {
		t.Fatalf("443 listener %v", tls)
	}
	m := tls.GetFilterChains()[0].GetFilterChainMatch()
	if m.GetTransportProtocol() != "tls" || !slices.Equal(m.GetServerNames(), []string{"*.github.com", "api.github.com"}) {
		t.Errorf("443 chain match %v", m)
	}
	db := egressListener(t, e, "egress-listener:bookstore/bookstore-v1|5432")
	if len(db.GetListenerFilters()) != 0 {
		t.Errorf("a tcp-only egress listener has listener filters %v (a server that speaks first would wait)", db.GetListenerFilters())
	}
	pr := db.GetFilterChains()[0].GetFilterChainMatch().GetPrefixRanges()
	if len(pr) != 1 || pr[0].GetAddressPrefix() != "10.20.0.0" || pr[0].GetPrefixLen().GetValue() != 16 {
		t.Errorf("5432 chain ranges %v", pr)
	}
	tp := unpack(t, db.GetFilterChains()[0].GetFilters()[0].GetTypedConfig(), &tcpproxyv3.TcpProxy{})
	if tp.GetCluster() != PassthroughCluster {
		t.Errorf("5432 tcp_proxy to %q", tp.GetCluster())
	}
	if out := egressListener(t, e, OutboundListener); out.GetDefaultFilterChain().GetFilters()[0].GetName() != "envoy.filters.network.direct_response" {
		t.Errorf("without enableEgress the default chain must close: %v", out.GetDefaultFilterChain())
	}
}

// TestEgressPassthrough: with enableEgress every proxy, bookthief's
// included, forwards unknown destinations through passthrough-outbound,
// and the Egress objects give nothing of their own (OSM's behaviour);
// turning it off again restores them.
func TestEgressPassthrough(t *testing.T) {
	e := newEngine()
	load(t, e, append(synth.BookstoreEgress(), synth.PassthroughMeshConfig(false)))
	thief := id("bookthief", "bookthief")
	if got := groupNames(t, e, thief, resourcev3.ClusterType); !slices.Contains(got, PassthroughCluster) {
		t.Errorf("bookthief clusters %v", got)
	}
	if got := groupNames(t, e, thief, resourcev3.ListenerType); !slices.Contains(got, OutboundListener) {
		t.Errorf("bookthief listeners %v", got)
	}
	out := egressListener(t, e, OutboundListener)
	tp := unpack(t, out.GetDefaultFilterChain().GetFilters()[0].GetTypedConfig(), &tcpproxyv3.TcpProxy{})
	if tp.GetCluster() != PassthroughCluster {
		t.Fatalf("default chain %v", out.GetDefaultFilterChain())
	}
	c := decode(t, e, layout.TypeCluster, PassthroughCluster, &clusterv3.Cluster{})
	if c.GetType() != clusterv3.Cluster_ORIGINAL_DST || c.GetLbPolicy() != clusterv3.Cluster_CLUSTER_PROVIDED {
		t.Errorf("passthrough cluster %v", c)
	}
	for _, r := range e.Resources() {
		if strings.HasPrefix(r.Name, "egress") {
			t.Errorf("with enableEgress the Egresses are not applied, yet %s exists", r.Key())
		}
	}
	// Off again: the Egresses apply, the default chain closes.
	load(t, e, []synth.Object{synth.MeshConfig(false)})
	if e.Resource(layout.TypeListener, "egress-listener:bookbuyer/bookbuyer|80") == nil {
		t.Error("enableEgress off: bookbuyer's egress listener is missing")
	}
	if got := groupNames(t, e, thief, resourcev3.ClusterType); slices.Contains(got, PassthroughCluster) {
		t.Errorf("enableEgress off: bookthief still lists %s", PassthroughCluster)
	}
	if out := egressListener(t, e, OutboundListener); out.GetDefaultFilterChain().GetName() != "outbound:unknown-destination" {
		t.Errorf("enableEgress off: default chain %v", out.GetDefaultFilterChain())
	}
}

func modelNN(ns, name string) model.NN { return model.NN{Namespace: ns, Name: name} }

func egressObj(t *testing.T, e *Engine, ns, name string) *meshv1.Egress {
	t.Helper()
	return proto.Clone(e.Model().Egress(modelNN(ns, name))).(*meshv1.Egress)
}

// TestEgressRejected: an invalid Egress is rejected with its field path
// and libs/policy's words, and its last good version stays served.
func TestEgressRejected(t *testing.T) {
	cases := []struct {
		name          string
		edit          func(*meshv1.Egress)
		reason, field string
		msg           string
	}{
		{"HTTPRouteGroup not found", func(x *meshv1.Egress) { x.Matches[0].Name = "missing" },
			ReasonRouteNotFound, "spec.matches[0].name",
			`Egress bookbuyer/books-api rejected: spec.matches[0].name: HTTPRouteGroup "missing" not found (or rejected) in namespace "bookbuyer"`},
		{"bad CIDR", func(x *meshv1.Egress) { x.IpAddresses = []string{"10.0.0.0/33"} },
			ReasonInvalidValue, "spec.ipAddresses[0]", ""},
		{"http without hosts", func(x *meshv1.Egress) { x.Hosts = nil },
			ReasonMissingField, "spec.hosts",
			"Egress bookbuyer/books-api rejected: spec.hosts: port 80 (spec.ports[0]) is http, which is allowed by host: list the hosts"},
		{"the sidecar's port", func(x *meshv1.Egress) { x.Ports[0].Number = 15001 },
			ReasonInvalidPort, "spec.ports[0].number", ""},
		{"unknown protocol", func(x *meshv1.Egress) { x.Ports[0].Protocol = "udp" },
			ReasonInvalidValue, "spec.ports[0].protocol",
			`Egress bookbuyer/books-api rejected: spec.ports[0].protocol: protocol "udp" is not supported, want "http", "https", "tcp" or "tcp-server-first"`},
		{"host with a port", func(x *meshv1.Egress) { x.Hosts = []string{"api.books.example:80"} },
			ReasonInvalidValue, "spec.hosts[0]", ""},
		{"mtls", func(x *meshv1.Egress) { x.Sources[0].HasMtls = true },
			ReasonUnsupportedField, "spec.sources[0].mtls", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEngine()
			load(t, e, synth.BookstoreEgress())
			before := snapshot(e)
			bad := egressObj(t, e, "bookbuyer", "books-api")
			c.edit(bad)
			if err := e.Apply(layout.KindEgress, "bookbuyer", "books-api", bad); err != nil {
				t.Fatal(err)
			}
			d := e.Compile()
			if len(d.Statuses) != 1 {
				t.Fatalf("statuses %v", d.Statuses)
			}
			st := d.Statuses[0]
			if st.GetCondition() != meshv1.PolicyCondition_POLICY_CONDITION_REJECTED || st.GetReason() != c.reason || st.GetFieldPath() != c.field ||
				st.GetObject().GetKind() != "Egress" || !strings.HasPrefix(st.GetMessage(), "Egress bookbuyer/books-api rejected: "+c.field+": ") {
				t.Fatalf("status %v, want %s at %s", st, c.reason, c.field)
			}
			if c.msg != "" && st.GetMessage() != c.msg {
				t.Errorf("message %q\nwant    %q", st.GetMessage(), c.msg)
			}
			if got := snapshot(e); !slices.Equal(got, before) {
				t.Errorf("a rejected edit changed the compiled state:\n%s", diffLists(before, got))
			}
		})
	}
}

// TestEgressIncremental: each change rebuilds only what depends on it.
func TestEgressIncremental(t *testing.T) {
	e := newEngine()
	load(t, e, synth.BookstoreEgress())
	keys := func(d *Delta) []string {
		var out []string
		for _, r := range d.Resources {
			out = append(out, r.Key())
		}
		for _, k := range d.DeletedResources {
			out = append(out, "deleted "+k)
		}
		for _, g := range d.Groups {
			out = append(out, g.Key())
		}
		slices.Sort(out)
		return out
	}
	step := func(name string, want []string, objs ...synth.Object) {
		t.Helper()
		d := load(t, e, objs)
		slices.Sort(want)
		if got := keys(d); !slices.Equal(got, want) {
			t.Errorf("%s wrote %v\nwant %v", name, got, want)
		}
	}
	gh := egressObj(t, e, "bookstore", "github")
	gh.Hosts = append(gh.Hosts, "uploads.github.com")
	step("an SNI added", []string{
		layout.ResourceKey(layout.TypeListener, "egress-listener:bookstore/bookstore-v1|443"),
		layout.ResourceKey(layout.TypeListener, "egress-listener:bookstore/bookstore-v2|443"),
	}, synth.Object{Kind: layout.KindEgress, Namespace: "bookstore", Name: "github", Msg: gh})

	ba := egressObj(t, e, "bookbuyer", "books-api")
	ba.Sources = append(ba.Sources, synth.EgressSource("bookthief", "bookthief"))
	step("a source added", []string{
		layout.GroupKey("bookthief", "bookthief"),
		layout.ResourceKey(layout.TypeListener, "egress-listener:bookthief/bookthief|80"),
		layout.ResourceKey(layout.TypeRoute, "egress:bookthief/bookthief|80"),
	}, synth.Object{Kind: layout.KindEgress, Namespace: "bookbuyer", Name: "books-api", Msg: ba})

	hrg := proto.Clone(e.Model().HTTPRouteGroup(modelNN("bookbuyer", "books-api-routes"))).(*meshv1.HTTPRouteGroup)
	hrg.Matches[0].PathRegex = "/books/[0-9]+"
	step("an HTTPRouteGroup the Egress names", []string{
		layout.ResourceKey(layout.TypeRoute, "egress:bookbuyer/bookbuyer|80"),
		layout.ResourceKey(layout.TypeRoute, "egress:bookthief/bookthief|80"),
	}, synth.Object{Kind: layout.KindHTTPRouteGroup, Namespace: "bookbuyer", Name: "books-api-routes", Msg: hrg})

	step("an ExternalName Service retargeted", []string{
		layout.ResourceKey(layout.TypeRoute, "egress:bookbuyer/bookbuyer|80"),
		layout.ResourceKey(layout.TypeRoute, "egress:bookthief/bookthief|80"),
	}, synth.ExternalNameService("bookbuyer", "books-api", "elsewhere.example"))

	step("an endpoint", []string{layout.ResourceKey(layout.TypeEndpoint, "bookstore/bookstore-v1|14001")},
		synth.EndpointSlice("bookstore", "bookstore-v1", "bookstore-v1-fghij", []synth.Port{{Number: 14001, Name: "bookstore-port", AppProtocol: "http"}},
			synth.Endpoint{Pod: "bookstore-v1-6b7f8c9d4-klmno", IP: "10.244.2.10"}, synth.Endpoint{Pod: "x", IP: "10.244.2.99"}))

	step("the Egress deleted", []string{
		layout.GroupKey("bookbuyer", "bookbuyer"),
		layout.GroupKey("bookthief", "bookthief"),
		"deleted " + layout.ResourceKey(layout.TypeCluster, "egress:api.books.example:80"),
		"deleted " + layout.ResourceKey(layout.TypeListener, "egress-listener:bookbuyer/bookbuyer|80"),
		"deleted " + layout.ResourceKey(layout.TypeListener, "egress-listener:bookthief/bookthief|80"),
		"deleted " + layout.ResourceKey(layout.TypeRoute, "egress:bookbuyer/bookbuyer|80"),
		"deleted " + layout.ResourceKey(layout.TypeRoute, "egress:bookthief/bookthief|80"),
	}, synth.Object{Kind: layout.KindEgress, Namespace: "bookbuyer", Name: "books-api"})
}

// mutateEgress is a random edit of an Egress for TestIncrementalEqualsCold.
func mutateEgress(rng *rand.Rand, v *meshv1.Egress) {
	switch rng.Intn(4) {
	case 0:
		v.Sources = append(v.Sources, synth.EgressSource("bookthief", "bookthief"))
	case 1:
		if len(v.Sources) > 1 {
			v.Sources = v.Sources[1:]
		}
	case 2:
		v.Hosts = append(v.Hosts, "more.example.org")
	default:
		v.Ports = append(v.Ports, synth.EgressPort(int32(8000+rng.Intn(3)), []string{"tcp", "https", "tcp-server-first"}[rng.Intn(3)]))
		if len(v.IpAddresses) == 0 && len(v.Hosts) == 0 {
			v.IpAddresses = []string{"192.0.2.0/24"}
		}
	}
}

// mutateExternalName retargets an ExternalName Service, or makes it name
// an Egress host of the bookstore.
func mutateExternalName(rng *rand.Rand, v *meshv1.Service) {
	v.ExternalName = []string{"api.books.example", "api.github.com", "nowhere.example"}[rng.Intn(3)]
}

// distinctMatches fails when two filter chains of a listener have equal
// matches, which Envoy refuses (a NACK of the whole listener).
func distinctMatches(t *testing.T, e *Engine) {
	t.Helper()
	for _, r := range e.Resources() {
		if r.TypeURL != resourcev3.ListenerType {
			continue
		}
		l := &listenerv3.Listener{}
		if err := proto.Unmarshal(r.Bytes, l); err != nil {
			t.Fatal(err)
		}
		seen := map[string]string{}
		for _, fc := range l.GetFilterChains() {
			b, err := proto.MarshalOptions{Deterministic: true}.Marshal(fc.GetFilterChainMatch())
			if err != nil {
				t.Fatal(err)
			}
			if other, dup := seen[string(b)]; dup {
				t.Errorf("listener %s: chains %s and %s have the same match %v", l.GetName(), other, fc.GetName(), fc.GetFilterChainMatch())
			}
			seen[string(b)] = fc.GetName()
		}
	}
}

// TestEgressMixedPort: Egresses giving one identity http, https and tcp
// (to every destination and to a range) on one port merge into one
// listener whose chains Envoy can tell apart: http on plain text, https
// by SNI on TLS, tcp by range or for the rest; so do http and tcp alone
// on another port.
func TestEgressMixedPort(t *testing.T) {
	e := newEngine()
	src := []*meshv1.EgressSource{synth.EgressSource("bookbuyer", "bookbuyer")}
	load(t, e, append(synth.BookstoreEgress(),
		synth.Egress("bookbuyer", "mixed-tcp", synth.EgressSpec{Sources: src, Ports: []*meshv1.EgressPort{synth.EgressPort(80, "tcp")}}),
		synth.Egress("bookbuyer", "mixed-range", synth.EgressSpec{Sources: src, IPAddresses: []string{"192.0.2.0/24"}, Ports: []*meshv1.EgressPort{synth.EgressPort(80, "tcp-server-first")}}),
		synth.Egress("bookbuyer", "mixed-tls", synth.EgressSpec{Sources: src, Hosts: []string{"secure.example"}, Ports: []*meshv1.EgressPort{synth.EgressPort(80, "https")}}),
		// http and tcp to every destination, without https, on 8080.
		synth.Egress("bookbuyer", "plain", synth.EgressSpec{Sources: src, Hosts: []string{"plain.example"},
			Ports: []*meshv1.EgressPort{synth.EgressPort(8080, "http"), synth.EgressPort(8080, "tcp")}}),
	))
	validateAll(t, e)
	distinctMatches(t, e)
	l := egressListener(t, e, "egress-listener:bookbuyer/bookbuyer|80")
	var got []string
	for _, fc := range l.GetFilterChains() {
		got = append(got, fc.GetName()+" "+fc.GetFilterChainMatch().GetTransportProtocol())
	}
	want := []string{
		"egress:bookbuyer/bookbuyer|80:http raw_buffer",
		"egress:bookbuyer/bookbuyer|80:https:any tls",
		"egress:bookbuyer/bookbuyer|80:tcp ",
	}
	if !slices.Equal(got, want) || len(l.GetListenerFilters()) != 1 {
		t.Errorf("chains %q (listener filters %d), want %q and the tls_inspector", got, len(l.GetListenerFilters()), want)
	}
	// tcp-server-first shares the port with https: a client that waits for
	// its server is matched without an SNI after a second, not closed.
	if !l.GetContinueOnListenerFiltersTimeout() || l.GetListenerFiltersTimeout().AsDuration() != serverFirstWait {
		t.Errorf("listener filters timeout %v, continue %v", l.GetListenerFiltersTimeout(), l.GetContinueOnListenerFiltersTimeout())
	}
}

// TestEgressHTTPByDestination: an http Egress with ipAddresses allows its
// hosts only at those destinations, by an RBAC override on their routes;
// the other hosts of the port stay unrestricted.
func TestEgressHTTPByDestination(t *testing.T) {
	e := newEngine()
	load(t, e, append(synth.BookstoreEgress(),
		synth.Egress("bookbuyer", "internal-api", synth.EgressSpec{
			Sources: []*meshv1.EgressSource{synth.EgressSource("bookbuyer", "bookbuyer")},
			Hosts:   []string{"internal.example"}, IPAddresses: []string{"192.0.2.0/24"},
			Ports: []*meshv1.EgressPort{synth.EgressPort(80, "http")},
		})))
	validateAll(t, e)
	rc := decode(t, e, layout.TypeRoute, "egress:bookbuyer/bookbuyer|80", &routev3.RouteConfiguration{})
	for _, vh := range rc.GetVirtualHosts() {
		a := vh.GetRoutes()[0].GetTypedPerFilterConfig()[httpRBACFilter]
		switch vh.GetName() {
		case "internal.example:80":
			per := unpack(t, a, &httprbacv3.RBACPerRoute{})
			ips := per.GetRbac().GetRules().GetPolicies()["egress-destinations"].GetPermissions()[0].GetOrRules().GetRules()
			if len(ips) != 1 || ips[0].GetDestinationIp().GetAddressPrefix() != "192.0.2.0" || ips[0].GetDestinationIp().GetPrefixLen().GetValue() != 24 {
				t.Errorf("internal.example's RBAC %v", per)
			}
		case "api.books.example:80":
			if a != nil {
				t.Errorf("api.books.example, allowed at any destination, has an RBAC override %v", a)
			}
		default:
			t.Errorf("virtual host %s", vh.GetName())
		}
	}
	l := egressListener(t, e, "egress-listener:bookbuyer/bookbuyer|80")
	h := unpack(t, l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig(), &hcmv3.HttpConnectionManager{})
	if f := h.GetHttpFilters(); len(f) != 2 || f[0].GetName() != httpRBACFilter {
		t.Errorf("http filters %v, want the RBAC filter before the router", f)
	}
}
