package compile

import (
	"slices"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/model"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/synth"
)

func keys(d *Delta) []string {
	var out []string
	for _, r := range d.Resources {
		out = append(out, r.Type+" "+r.Name)
	}
	for _, k := range d.DeletedResources {
		out = append(out, "delete "+k)
	}
	for _, g := range d.Groups {
		out = append(out, "group "+g.Identity.String())
	}
	for _, k := range d.DeletedGroups {
		out = append(out, "delete "+k)
	}
	for _, s := range d.Sets {
		out = append(out, "set "+s.Set.GetName())
	}
	for _, k := range d.DeletedSets {
		out = append(out, "delete "+k)
	}
	return out
}

func apply(t *testing.T, e *Engine, objs ...synth.Object) *Delta {
	t.Helper()
	for _, o := range objs {
		if err := e.Apply(o.Kind, o.Namespace, o.Name, o.Msg); err != nil {
			t.Fatal(err)
		}
	}
	d := e.Compile()
	if len(d.Invalid) > 0 {
		t.Fatalf("invalid: %v", d.Invalid)
	}
	return d
}

func remove(t *testing.T, e *Engine, kind, ns, name string) *Delta {
	t.Helper()
	if err := e.Apply(kind, ns, name, nil); err != nil {
		t.Fatal(err)
	}
	return e.Compile()
}

func TestNoChangeWritesNothing(t *testing.T) {
	e := bookstore(t, false)
	d := apply(t, e, synth.Bookstore(false)...)
	if !d.Empty() || len(d.Statuses) != 0 {
		t.Errorf("re-applying the same objects changed %v and %d statuses", keys(d), len(d.Statuses))
	}
}

// TestVerdictsAreNewsOnce: the statuses of a Compile are copies that the
// caller stamps with a time and a generation; a MeshConfig change re-judges
// every policy and returns no status, and neither does a new
// metadata.generation of an object whose verdict stays the same.
func TestVerdictsAreNewsOnce(t *testing.T) {
	e := newEngine()
	d := apply(t, e, synth.Bookstore(false)...)
	if len(d.Statuses) != 8 {
		t.Fatalf("%d statuses, want the 8 bookstore policies", len(d.Statuses))
	}
	for _, st := range d.Statuses {
		st.Time, st.Generation = timestamppb.Now(), 1
	}
	if d := apply(t, e, synth.MeshConfig(true)); len(d.Statuses) != 0 {
		t.Errorf("a MeshConfig change returned %d unchanged statuses", len(d.Statuses))
	}
	split := func(gen int64) synth.Object {
		o := synth.TrafficSplit("bookstore", "bookstore-split", "bookstore", synth.Backend{Service: "bookstore-v1"}, synth.Backend{Service: "bookstore-v2"})
		o.Msg.(*meshv1.TrafficSplit).Meta.Generation = gen
		return o
	}
	if d := apply(t, e, split(2)); len(d.Statuses) != 1 || d.Statuses[0].GetCondition() != meshv1.PolicyCondition_POLICY_CONDITION_REJECTED {
		t.Fatalf("statuses = %v, want the rejection", d.Statuses)
	}
	if d := apply(t, e, split(3)); len(d.Statuses) != 0 {
		t.Errorf("the same rejection at a new generation returned %v", d.Statuses)
	}
}

func TestEndpointChangeTouchesOneResource(t *testing.T) {
	e := bookstore(t, false)
	http := synth.Port{Number: 14001, Name: "bookwarehouse-port", AppProtocol: "http"}
	slice := synth.EndpointSlice("bookwarehouse", "bookwarehouse", "bookwarehouse-pqrst", []synth.Port{http},
		synth.Endpoint{Pod: "bookwarehouse-9e8d7c6b5-uvwxy", IP: "10.244.3.10"}, synth.Endpoint{Pod: "bookwarehouse-2", IP: "10.244.3.11"})
	d := apply(t, e, slice)
	if got, want := keys(d), []string{"endpoint bookwarehouse/bookwarehouse|14001"}; !slices.Equal(got, want) {
		t.Errorf("endpoint change wrote %v, want %v", got, want)
	}
}

func TestSyntheticEndpointChangeTouchesOneResource(t *testing.T) {
	cfg := synth.Config{Namespaces: 10, Services: 200, PodsPerService: 2, TrafficTargets: 200, HTTPRouteGroups: 20, TrafficSplits: 5}
	e := newEngine()
	load(t, e, synth.Generate(cfg))
	for _, i := range []int{0, 4, 17, 199} {
		d := apply(t, e, cfg.Slice(i, "192.168.0.1"))
		if len(keys(d)) != 1 || d.Resources[0].Type != layout.TypeEndpoint {
			t.Errorf("service %d: endpoint change wrote %v", i, keys(d))
		}
	}
}

func TestTrafficTargetChange(t *testing.T) {
	e := bookstore(t, false)
	// Let bookthief reach bookstore-v1.
	tt := synth.TrafficTarget("bookstore", "bookbuyer-access-bookstore-v1", "bookstore-v1",
		[]*meshv1.TrafficTargetRule{synth.Rule("HTTPRouteGroup", "bookstore-service-routes", "buy-a-book", "books-bought")},
		synth.Subject("bookbuyer", "bookbuyer"), synth.Subject("bookthief", "bookthief"))
	d := apply(t, e, tt)
	want := []string{
		"listener inbound-listener:bookstore/bookstore-v1",
		"group bookthief/bookthief",
	}
	if got := keys(d); !slices.Equal(got, want) {
		t.Errorf("TrafficTarget change wrote %v, want %v", got, want)
	}
	// bookthief reaches v1, hence the apex and, through it, v2's cluster.
	got := groupNames(t, e, id("bookthief", "bookthief"), resourcev3.ClusterType)
	if !slices.Equal(got, []string{"bookstore/bookstore-v1|14001", "bookstore/bookstore-v2|14001", "bookstore/bookstore|14001"}) {
		t.Errorf("bookthief clusters = %v", got)
	}
	// Deleting the TrafficTarget takes both bookbuyer and bookthief off v1.
	d = remove(t, e, layout.KindTrafficTarget, "bookstore", "bookbuyer-access-bookstore-v1")
	if got := groupNames(t, e, id("bookthief", "bookthief"), resourcev3.ClusterType); len(got) != 0 {
		t.Errorf("after delete, bookthief clusters = %v", got)
	}
	if got := groupNames(t, e, id("bookthief", "bookthief"), resourcev3.ListenerType); len(got) != 0 {
		t.Errorf("after delete, bookthief listeners = %v, want none", got)
	}
}

func TestSplitWeightChange(t *testing.T) {
	e := bookstore(t, false)
	d := apply(t, e, synth.TrafficSplit("bookstore", "bookstore-split", "bookstore", synth.Backend{Service: "bookstore-v1", Weight: 0}, synth.Backend{Service: "bookstore-v2", Weight: 100}))
	if got := keys(d); !slices.Equal(got, []string{"route bookstore/bookstore|14001"}) {
		t.Errorf("weight change wrote %v", got)
	}
	rc := decode(t, e, layout.TypeRoute, "bookstore/bookstore|14001", &routev3.RouteConfiguration{})
	cs := rc.GetVirtualHosts()[0].GetRoutes()[0].GetRoute().GetWeightedClusters().GetClusters()
	if len(cs) != 1 || cs[0].GetName() != "bookstore/bookstore-v2|14001" || cs[0].GetWeight().GetValue() != 100 {
		t.Errorf("weighted clusters = %v", cs)
	}
}

func TestPodAndServiceLifecycle(t *testing.T) {
	e := bookstore(t, false)
	// A second bookbuyer pod changes nothing.
	d := apply(t, e, synth.Pod("bookbuyer", "bookbuyer-2", "bookbuyer", "10.244.1.11", map[string]string{"app": "bookbuyer"}))
	if !d.Empty() {
		t.Errorf("second pod wrote %v", keys(d))
	}
	// A new identity gets a group (once its ServiceAccount and a pod exist).
	if d := apply(t, e, synth.ServiceAccount("bookbuyer", "reader")); !d.Empty() {
		t.Errorf("a ServiceAccount without pods wrote %v", keys(d))
	}
	d = apply(t, e, synth.Pod("bookbuyer", "reader-0", "reader", "10.244.1.12", map[string]string{"app": "reader"}))
	if got := keys(d); !slices.Equal(got, []string{"group bookbuyer/reader"}) {
		t.Errorf("new identity wrote %v", got)
	}
	d = remove(t, e, layout.KindPod, "bookbuyer", "reader-0")
	if got := keys(d); !slices.Equal(got, []string{"delete " + layout.GroupKey("bookbuyer", "reader")}) {
		t.Errorf("last pod gone wrote %v", got)
	}
	// Deleting mysql's Service removes its resources and bookwarehouse's access.
	d = remove(t, e, layout.KindService, "bookwarehouse", "mysql")
	got := keys(d)
	for _, want := range []string{
		"delete " + layout.ResourceKey(layout.TypeCluster, "bookwarehouse/mysql|3306"),
		"delete " + layout.ResourceKey(layout.TypeEndpoint, "bookwarehouse/mysql|3306"),
		"delete " + layout.ResourceKey(layout.TypeListener, "inbound-listener:bookwarehouse/mysql"),
		"group bookwarehouse/bookwarehouse",
		"group bookwarehouse/mysql",
	} {
		if !slices.Contains(got, want) {
			t.Errorf("service delete wrote %v, missing %q", got, want)
		}
	}
}

func TestPermissiveToggle(t *testing.T) {
	e := bookstore(t, false)
	apply(t, e, synth.MeshConfig(true))
	perm := bookstore(t, true)
	if string(dump(t, e)) != string(dump(t, perm)) {
		t.Error("switching to permissive differs from compiling permissive from scratch")
	}
	apply(t, e, synth.MeshConfig(false))
	if string(dump(t, e)) != string(dump(t, bookstore(t, false))) {
		t.Error("switching back to SMI differs from compiling SMI from scratch")
	}
}

func TestNothingBeforeMeshedNamespace(t *testing.T) {
	e := newEngine()
	var objs []synth.Object
	for _, o := range synth.Bookstore(false) {
		if o.Kind != layout.KindNamespace {
			objs = append(objs, o)
		}
	}
	d := apply(t, e, objs...)
	if len(d.Resources) != 0 || len(d.Groups) != 0 {
		t.Errorf("compiled %v without meshed namespaces", keys(d))
	}
}

func TestRejections(t *testing.T) {
	routes := []*meshv1.TrafficTargetRule{synth.Rule("HTTPRouteGroup", "bookstore-service-routes", "buy-a-book", "books-bought")}
	ttWith := func(mut func(tt *meshv1.TrafficTarget)) synth.Object {
		o := synth.TrafficTarget("bookstore", "bookbuyer-access-bookstore-v1", "bookstore-v1", routes, synth.Subject("bookbuyer", "bookbuyer"))
		o.Msg = proto.Clone(o.Msg)
		mut(o.Msg.(*meshv1.TrafficTarget))
		return o
	}
	cases := []struct {
		name               string
		obj                synth.Object
		kind, reason, path string
		message            string
	}{
		{
			name: "missing route group",
			obj: ttWith(func(tt *meshv1.TrafficTarget) {
				tt.Rules = []*meshv1.TrafficTargetRule{synth.Rule("HTTPRouteGroup", "no-such-routes")}
			}),
			kind: "TrafficTarget", reason: ReasonRouteNotFound, path: "spec.rules[0].name",
			message: `TrafficTarget bookstore/bookbuyer-access-bookstore-v1 rejected: spec.rules[0].name: HTTPRouteGroup "no-such-routes" not found (or rejected) in namespace "bookstore"`,
		},
		{
			name: "wrong rule kind",
			obj: ttWith(func(tt *meshv1.TrafficTarget) {
				tt.Rules = append(tt.Rules, synth.Rule("UDPRoute", "x"))
			}),
			kind: "TrafficTarget", reason: ReasonUnknownRuleKind, path: "spec.rules[1].kind",
			message: `TrafficTarget bookstore/bookbuyer-access-bookstore-v1 rejected: spec.rules[1].kind: kind "UDPRoute" is not supported, want "HTTPRouteGroup" or "TCPRoute"`,
		},
		{
			name: "wrong destination kind",
			obj: ttWith(func(tt *meshv1.TrafficTarget) {
				tt.Destination.Kind = "Group"
			}),
			kind: "TrafficTarget", reason: ReasonInvalidKind, path: "spec.destination.kind",
			message: `TrafficTarget bookstore/bookbuyer-access-bookstore-v1 rejected: spec.destination.kind: kind "Group" is not supported, want "ServiceAccount"`,
		},
		{
			name: "unknown match",
			obj: ttWith(func(tt *meshv1.TrafficTarget) {
				tt.Rules[0].Matches = []string{"buy-a-book", "steal-a-book"}
			}),
			kind: "TrafficTarget", reason: ReasonMatchNotFound, path: "spec.rules[0].matches[1]",
			message: `TrafficTarget bookstore/bookbuyer-access-bookstore-v1 rejected: spec.rules[0].matches[1]: HTTPRouteGroup "bookstore-service-routes" has no match named "steal-a-book"`,
		},
		{
			name: "invalid regex",
			obj: synth.HTTPRouteGroup("bookstore", "bookstore-service-routes",
				&meshv1.HTTPMatch{Name: "books-bought", PathRegex: "/books-bought"},
				&meshv1.HTTPMatch{Name: "buy-a-book", PathRegex: "(a-book", Methods: []string{"GET"}}),
			kind: "HTTPRouteGroup", reason: ReasonInvalidRegex, path: "spec.matches[1].pathRegex",
			message: "HTTPRouteGroup bookstore/bookstore-service-routes rejected: spec.matches[1].pathRegex: invalid RE2 regular expression \"(a-book\": error parsing regexp: missing closing ): `(a-book`",
		},
		{
			name: "split weights sum to zero",
			obj:  synth.TrafficSplit("bookstore", "bookstore-split", "bookstore", synth.Backend{Service: "bookstore-v1"}, synth.Backend{Service: "bookstore-v2"}),
			kind: "TrafficSplit", reason: ReasonZeroTotalWeight, path: "spec.backends",
			message: "TrafficSplit bookstore/bookstore-split rejected: spec.backends: the weights of the 2 backends sum to 0",
		},
		{
			name: "negative weight",
			obj:  synth.TrafficSplit("bookstore", "bookstore-split", "bookstore", synth.Backend{Service: "bookstore-v1", Weight: -1}, synth.Backend{Service: "bookstore-v2", Weight: 5}),
			kind: "TrafficSplit", reason: ReasonInvalidWeight, path: "spec.backends[0].weight",
			message: "TrafficSplit bookstore/bookstore-split rejected: spec.backends[0].weight: weight -1 is negative",
		},
		{
			name: "tcp port out of range",
			obj:  synth.TCPRoute("bookwarehouse", "mysql", 3306, 70000),
			kind: "TCPRoute", reason: ReasonInvalidPort, path: "spec.matches.ports[1]",
			message: "TCPRoute bookwarehouse/mysql rejected: spec.matches.ports[1]: port 70000 is outside 1-65535",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := bookstore(t, false)
			before := string(dump(t, e))
			d := apply(t, e, c.obj)
			if !d.Empty() {
				t.Errorf("a rejected policy changed the output: %v", keys(d))
			}
			if string(dump(t, e)) != before {
				t.Error("the last good output was not kept")
			}
			if len(d.Statuses) != 1 {
				t.Fatalf("statuses = %v, want one", d.Statuses)
			}
			st := d.Statuses[0]
			if st.GetCondition() != meshv1.PolicyCondition_POLICY_CONDITION_REJECTED || st.GetObject().GetKind() != c.kind ||
				st.GetReason() != c.reason || st.GetFieldPath() != c.path || st.GetMessage() != c.message {
				t.Errorf("status = %v %s %s %q %q\nwant %s %s %q %q", st.GetCondition(), st.GetObject().GetKind(), st.GetReason(), st.GetFieldPath(), st.GetMessage(), c.kind, c.reason, c.path, c.message)
			}
			if e.Rejected() != 1 {
				t.Errorf("Rejected() = %d", e.Rejected())
			}
			// Fixing the object accepts it again.
			for _, o := range synth.Bookstore(false) {
				if o.Kind == c.obj.Kind && o.Name == c.obj.Name && o.Namespace == c.obj.Namespace {
					d = apply(t, e, o)
				}
			}
			if len(d.Statuses) != 1 || d.Statuses[0].GetCondition() != meshv1.PolicyCondition_POLICY_CONDITION_ACCEPTED {
				t.Errorf("after the fix, statuses = %v", d.Statuses)
			}
			if string(dump(t, e)) != before {
				t.Error("after the fix, the output differs from the original")
			}
		})
	}
}

func TestRouteGroupEditRecompilesUsers(t *testing.T) {
	e := bookstore(t, false)
	d := apply(t, e, synth.HTTPRouteGroup("bookwarehouse", "bookwarehouse-service-routes",
		&meshv1.HTTPMatch{Name: "restock-books", PathRegex: "/restock-books/v2", Methods: []string{"POST"}}))
	if got := keys(d); !slices.Equal(got, []string{"listener inbound-listener:bookwarehouse/bookwarehouse"}) {
		t.Errorf("route group edit wrote %v", got)
	}
	l := decode(t, e, layout.TypeListener, InboundListenerName(id("bookwarehouse", "bookwarehouse")), &listenerv3.Listener{})
	if !strings.Contains(string(e.Resource(layout.TypeListener, l.GetName()).Bytes), "/restock-books/v2") {
		t.Error("inbound listener lacks the new path regex")
	}
}

func TestInvalidResourceIsReportedNotEmitted(t *testing.T) {
	e := bookstore(t, false)
	inbound := InboundListenerName(id("bookwarehouse", "mysql"))
	before := e.Resource(layout.TypeListener, inbound).Version
	// Port 70000 passes the watcher but not Envoy's validation rules; the
	// service selects mysql's pods, so mysql's inbound listener gets it too.
	bad := synth.Service("bookwarehouse", "broken", "10.96.20.9", map[string]string{"app": "mysql"}, synth.Port{Number: 70000, Name: "tcp", AppProtocol: "tcp"})
	if err := e.Apply(bad.Kind, bad.Namespace, bad.Name, bad.Msg); err != nil {
		t.Fatal(err)
	}
	d := e.Compile()
	var msgs []string
	for _, err := range d.Invalid {
		msgs = append(msgs, err.Error())
	}
	all := strings.Join(msgs, "\n")
	for _, want := range []string{"listener outbound-listener:bookwarehouse/broken|70000 fails validation", "listener " + inbound + " fails validation"} {
		if !strings.Contains(all, want) {
			t.Errorf("invalid resources %q lack %q", all, want)
		}
	}
	for _, r := range d.Resources {
		if r.Name == inbound {
			t.Error("the invalid inbound listener was emitted")
		}
	}
	if got := e.Resource(layout.TypeListener, inbound).Version; got != before {
		t.Error("the last good inbound listener was not kept")
	}
	if !slices.Contains(groupNames(t, e, id("bookwarehouse", "mysql"), resourcev3.ListenerType), inbound) {
		t.Error("mysql's group no longer lists its (last good) inbound listener")
	}
	// The rest of the mesh is intact.
	if got := groupNames(t, e, id("bookbuyer", "bookbuyer"), resourcev3.ClusterType); len(got) != 3 {
		t.Errorf("bookbuyer clusters = %v", got)
	}
}

func TestOversizedResourceIsReportedNotEmitted(t *testing.T) {
	e := New(Options{MeshName: synth.MeshName, MaxResourceBytes: 1500})
	load := func() *Delta {
		for _, o := range synth.Bookstore(false) {
			if err := e.Apply(o.Kind, o.Namespace, o.Name, o.Msg); err != nil {
				t.Fatal(err)
			}
		}
		return e.Compile()
	}
	d := load()
	if len(d.Invalid) == 0 {
		t.Fatal("no resource reported over 1500 bytes")
	}
	for _, err := range d.Invalid {
		if !strings.Contains(err.Error(), "over the 1500-byte limit") {
			t.Errorf("unexpected error %v", err)
		}
	}
	for _, r := range e.Resources() {
		if len(r.Bytes) > 1500 {
			t.Errorf("%s (%d bytes) was kept", r.Key(), len(r.Bytes))
		}
	}
	for _, g := range e.Groups() {
		for typ := range typeURLSet(g) {
			for _, n := range e.GroupNames(g.Identity, typ) {
				if e.Resource(shortType(typ), n) == nil {
					t.Errorf("group %s lists the missing %s", g.Identity, n)
				}
			}
		}
	}
}

// TestPermissiveBroadcastWritesOneSet adds and removes a service in a
// permissive mesh: every proxy now reaches it, yet only the service's own
// resources (its listener among them) and one name set are written, and no
// group.
func TestPermissiveBroadcastWritesOneSet(t *testing.T) {
	cfg := synth.Config{Namespaces: 5, Services: 60, PodsPerService: 2, Permissive: true}
	e := newEngine()
	load(t, e, synth.Generate(cfg))
	extra := synth.Service("ns-000", "extra", "172.31.0.1", map[string]string{"app": "extra"}, synth.Port{Number: 8080, Name: "http", AppProtocol: "http"})
	set := PermissiveSetName(permissiveShard(model.NN{Namespace: "ns-000", Name: "extra"}))
	d := apply(t, e, extra)
	want := []string{
		"cluster ns-000/extra|8080", "cluster ns-000/extra|8080|local", "endpoint ns-000/extra|8080",
		"listener outbound-listener:ns-000/extra|8080", "route ns-000/extra|8080", "set " + set,
	}
	if got := keys(d); !slices.Equal(got, want) {
		t.Errorf("adding a service wrote %v, want %v", got, want)
	}
	for _, g := range e.Groups() {
		if got := e.GroupNames(g.Identity, resourcev3.RouteType); !slices.Contains(got, "ns-000/extra|8080") {
			t.Fatalf("group %s does not reach the new service: routes %v", g.Identity, got)
		}
	}
	d = remove(t, e, layout.KindService, "ns-000", "extra")
	want = []string{
		"delete " + layout.ResourceKey(layout.TypeCluster, "ns-000/extra|8080"),
		"delete " + layout.ResourceKey(layout.TypeCluster, "ns-000/extra|8080|local"),
		"delete " + layout.ResourceKey(layout.TypeEndpoint, "ns-000/extra|8080"),
		"delete " + layout.ResourceKey(layout.TypeListener, "outbound-listener:ns-000/extra|8080"),
		"delete " + layout.ResourceKey(layout.TypeRoute, "ns-000/extra|8080"),
		"set " + set,
	}
	if got := keys(d); !slices.Equal(got, want) {
		t.Errorf("removing a service wrote %v, want %v", got, want)
	}
}

// TestPermissiveSetsComeAndGo checks that groups list exactly the name sets
// that exist, as services fill and empty them and the mode changes.
func TestPermissiveSetsComeAndGo(t *testing.T) {
	e := bookstore(t, true)
	buyer := id("bookbuyer", "bookbuyer")
	listed := func() []string { return e.Group(buyer).Group.GetSets() }
	var existing []string
	for _, s := range e.Sets() {
		existing = append(existing, s.Set.GetName())
	}
	if got := listed(); len(got) == 0 || !slices.Equal(got, existing) {
		t.Fatalf("bookbuyer lists sets %v, want the existing %v", got, existing)
	}
	// Remove every service of mysql's shard: with the last one its set
	// goes, and every group stops listing it.
	mysql := model.NN{Namespace: "bookwarehouse", Name: "mysql"}
	shard := PermissiveSetName(permissiveShard(mysql))
	var mates []model.NN
	for _, s := range e.svcs.every() {
		if s.nn != mysql && permissiveShard(s.nn) == permissiveShard(mysql) {
			mates = append(mates, s.nn)
		}
	}
	for _, nn := range mates {
		if d := remove(t, e, layout.KindService, nn.Namespace, nn.Name); slices.Contains(d.DeletedSets, layout.SetKey(shard)) {
			t.Fatalf("set %s deleted while mysql is still in it", shard)
		}
	}
	d := remove(t, e, layout.KindService, mysql.Namespace, mysql.Name)
	if !slices.Contains(d.DeletedSets, layout.SetKey(shard)) {
		t.Errorf("deleted sets %v lack %s", d.DeletedSets, shard)
	}
	if len(d.Groups) != len(e.Groups()) {
		t.Errorf("%d groups rewritten, want all %d", len(d.Groups), len(e.Groups()))
	}
	if slices.Contains(listed(), shard) {
		t.Errorf("bookbuyer still lists %s", shard)
	}
	// SMI mode: no sets at all, and no group lists one.
	smi := newEngine()
	load(t, smi, synth.Bookstore(true))
	load(t, smi, synth.Bookstore(false))
	if len(smi.Sets()) != 0 {
		t.Errorf("SMI mode kept %d sets", len(smi.Sets()))
	}
	for _, g := range smi.Groups() {
		if len(g.Group.GetSets()) != 0 {
			t.Errorf("SMI mode: group %s lists sets %v", g.Identity, g.Group.GetSets())
		}
	}
}

// TestPermissiveResourcesStaySmall compiles a permissive mesh under a
// 4 KiB resource limit: no resource, set or group grows with the number of
// services (a listener of every service's chains would be ~100 KB here,
// and passed the 1 MB NATS limit at ~2,900 services).
func TestPermissiveResourcesStaySmall(t *testing.T) {
	const limit = 4 << 10
	e := New(Options{MeshName: synth.MeshName, MeshConfig: model.NN{Namespace: synth.MeshConfigNamespace, Name: synth.MeshConfigName}, MaxResourceBytes: limit})
	cfg := synth.Config{Namespaces: 10, Services: 300, PodsPerService: 1, Permissive: true}
	load(t, e, synth.Generate(cfg)) // fails on any resource over the limit
	for _, s := range e.Sets() {
		if v, _ := proto.Marshal(s.Set); len(v) > limit {
			t.Errorf("set %s is %d bytes", s.Set.GetName(), len(v))
		}
	}
	for _, g := range e.Groups() {
		if v, _ := proto.Marshal(g.Group); len(v) > limit {
			t.Errorf("group %s is %d bytes", g.Identity, len(v))
		}
	}
	// Every proxy still reaches every service port through a listener.
	g := e.Groups()[0]
	if got := len(e.GroupNames(g.Identity, resourcev3.ListenerType)); got < cfg.Services {
		t.Errorf("group %s is served %d listeners, want one per service port (%d+)", g.Identity, got, cfg.Services)
	}
}

// TestServiceAccountDeletedDropsItsGroup (issue 15, item 6): an identity
// leaves the compiled mesh with its ServiceAccount, even while its pods
// run, so that the edge stops serving it certificates and closes its
// streams; it comes back with the ServiceAccount.
func TestServiceAccountDeletedDropsItsGroup(t *testing.T) {
	e := bookstore(t, false)
	d := remove(t, e, layout.KindServiceAccount, "bookbuyer", "bookbuyer")
	if got := keys(d); !slices.Contains(got, "delete "+layout.GroupKey("bookbuyer", "bookbuyer")) {
		t.Errorf("ServiceAccount deleted wrote %v, want its group deleted", got)
	}
	d = apply(t, e, synth.ServiceAccount("bookbuyer", "bookbuyer"))
	if got := keys(d); !slices.Contains(got, "group bookbuyer/bookbuyer") {
		t.Errorf("ServiceAccount back wrote %v, want its group", got)
	}
}
