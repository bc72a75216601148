package pool

import (
	"slices"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// routeAs is a route configuration named name (the name a proxy asks
// for), stored under key; retries > 0 puts a retry policy with that many
// retries on it and "-retry" on its virtual host's name.
func routeAs(t *testing.T, key, name string, retries uint32, gen uint64) kv {
	vh := &routev3.VirtualHost{Name: name, Domains: []string{"*"}}
	if retries > 0 {
		vh.Name += "-retry"
		vh.RetryPolicy = &routev3.RetryPolicy{RetryOn: "unavailable", NumRetries: wrapperspb.UInt32(retries)}
	}
	return resource(t, layout.TypeRoute, &routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{vh}}, key, gen)
}

// aliasGroup is a group naming route and, when target is set, served
// target under that name.
func aliasGroup(t *testing.T, sa string, gen uint64, route, target string) kv {
	t.Helper()
	g := &meshv1.ProxyGroup{
		Identity:  &meshv1.Identity{Namespace: "ns", ServiceAccount: sa},
		Resources: map[string]*meshv1.ResourceNames{resourcev3.RouteType: {Names: []string{route}}},
	}
	if target != "" {
		g.Aliases = map[string]*meshv1.ResourceAliases{resourcev3.RouteType: {Names: map[string]string{route: target}}}
	}
	v, err := proto.Marshal(g)
	if err != nil {
		t.Fatal(err)
	}
	return kv{layout.GroupKey("ns", sa), v}
}

func servedName(t *testing.T, r *Resource) string {
	t.Helper()
	var rc routev3.RouteConfiguration
	if err := r.Any.UnmarshalTo(&rc); err != nil {
		t.Fatal(err)
	}
	return rc.GetVirtualHosts()[0].GetName()
}

// TestAliasServesPerGroupContent: two groups asking for the same route
// name get different content when one of them aliases it to its copy; the
// alias's content carries the requested name, ID and a revision of its
// own. Changing the copy, moving the alias and dropping it each report the
// name as updated for the aliasing group only, and the shared route's
// change reaches only the group without the alias.
func TestAliasServesPerGroupContent(t *testing.T) {
	const shared, copyA, copyB = "grpc:b/svc|80", "grpc:b/svc|80|retry|ns/a", "grpc:b/svc|80|retry|ns/a2"
	rt := resourcev3.RouteType
	p := New()
	for _, w := range []kv{
		routeAs(t, shared, shared, 0, 1), routeAs(t, copyA, shared, 1, 1),
		aliasGroup(t, "a", 1, shared, copyA), aliasGroup(t, "c", 1, shared, ""),
	} {
		stage(t, p, w)
	}
	commit(t, p, 1)
	ga, gc := GroupID("ns", "a"), GroupID("ns", "c")
	ra, rc := p.Get(ga, rt, shared), p.Get(gc, rt, shared)
	if ra == nil || rc == nil {
		t.Fatalf("served %v and %v, want the route to both", ra, rc)
	}
	if servedName(t, ra) != shared+"-retry" || servedName(t, rc) != shared {
		t.Errorf("group a got %q, group c %q: want the copy and the shared route", servedName(t, ra), servedName(t, rc))
	}
	if ra.Name != shared || ra.Delta.GetName() != shared || ra.ID != rc.ID || ra.Rev == rc.Rev || ra.Version == rc.Version {
		t.Errorf("alias resource %q (delta %q) id %d rev %d version %s; shared id %d rev %d version %s",
			ra.Name, ra.Delta.GetName(), ra.ID, ra.Rev, ra.Version, rc.ID, rc.Rev, rc.Version)
	}
	if v := p.View(ga, rt, nil); len(v) != 1 || v[0] != ra {
		t.Errorf("group a's view %v, want the alias", v)
	}
	if p.Get(ga, rt, copyA) != nil {
		t.Error("the copy is served under its own name")
	}
	updated := func(ch *Change, gid string) []string {
		if tc := ch.Groups[gid][rt]; tc != nil {
			return tc.Updated
		}
		return nil
	}
	want := []string{shared}
	// The copy changes: only group a is pushed.
	stage(t, p, routeAs(t, copyA, shared, 2, 2))
	ch := commit(t, p, 2)
	if !slices.Equal(updated(ch, ga), want) || ch.Groups[gc] != nil {
		t.Errorf("copy change: %v", ch.Groups)
	}
	if r := p.Get(ga, rt, shared); r.Rev == ra.Rev {
		t.Error("the alias kept its revision across a new content")
	}
	// The shared route changes: only group c is pushed.
	stage(t, p, resource(t, layout.TypeRoute, &routev3.RouteConfiguration{Name: shared}, shared, 3))
	ch = commit(t, p, 3)
	if !slices.Equal(updated(ch, gc), want) || ch.Groups[ga] != nil {
		t.Errorf("shared change: %v", ch.Groups)
	}
	// The alias moves to another copy: group a is pushed the new content.
	before := p.Get(ga, rt, shared)
	stage(t, p, routeAs(t, copyB, shared, 3, 4))
	stage(t, p, aliasGroup(t, "a", 4, shared, copyB))
	ch = commit(t, p, 4)
	if !slices.Equal(updated(ch, ga), want) || ch.Groups[gc] != nil {
		t.Errorf("alias move: %v", ch.Groups)
	}
	if r := p.Get(ga, rt, shared); r.Rev == before.Rev || r.Version == before.Version {
		t.Error("the moved alias serves the old content")
	}
	// Rewriting the group with the same alias pushes nothing new.
	held := p.Get(ga, rt, shared)
	stage(t, p, aliasGroup(t, "a", 5, shared, copyB))
	ch = commit(t, p, 5)
	if ch.Groups[ga] != nil || p.Get(ga, rt, shared).Rev != held.Rev {
		t.Errorf("same alias rewritten: %v", ch.Groups)
	}
	// The alias is dropped: group a gets the shared route again.
	stage(t, p, aliasGroup(t, "a", 6, shared, ""))
	stage(t, p, kv{layout.ResourceKey(layout.TypeRoute, copyB), nil})
	stage(t, p, kv{layout.ResourceKey(layout.TypeRoute, copyA), nil})
	ch = commit(t, p, 6)
	if !slices.Equal(updated(ch, ga), want) {
		t.Errorf("alias dropped: %v", ch.Groups)
	}
	if r := p.Get(ga, rt, shared); r != p.Get(gc, rt, shared) {
		t.Error("without its alias group a does not get the shared route")
	}
	if len(p.alias.res)+len(p.alias.users)+len(p.alias.byTarget)+len(p.alias.held) != 0 {
		t.Errorf("aliases left behind: %+v", p.alias)
	}
	if p.DanglingNames() != 0 {
		t.Errorf("%d dangling names", p.DanglingNames())
	}
}
