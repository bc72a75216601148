package xds

import (
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/google/go-cmp/cmp"

	"github.com/openservicemesh/osm/libs/xdstest"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// aliased is group ns/ns naming route rt, served target under that name
// when target is set (meshv1.ProxyGroup.aliases).
func aliased(ns string, gen uint64, target string) xdstest.Write {
	w := xdstest.Group(ns, ns, gen, map[string][]string{rds: {"rt"}})
	if target != "" {
		w.Value.(*meshv1.ProxyGroup).Aliases = map[string]*meshv1.ResourceAliases{rds: {Names: map[string]string{"rt": target}}}
	}
	return w
}

// TestAliasedNameServedPerGroup: proxies of two groups subscribe to the
// same route name; the group that aliases it to its copy gets the copy's
// content under that name, the other the shared route. A change of the
// copy, a move of the alias to another copy and its removal each reach the
// aliasing proxy (and only it), with the content it must now hold.
func TestAliasedNameServedPerGroup(t *testing.T) {
	for _, delta := range []bool{false, true} {
		t.Run(map[bool]string{false: "sotw", true: "delta"}[delta], func(t *testing.T) {
			f := newFixture(t)
			f.commit(
				res(t, xdstest.Route("rt", "shared"), "rt", 1),
				res(t, xdstest.Route("rt", "copy-a"), "rt|retry|a", 1),
				aliased("a", 1, "rt|retry|a"),
				aliased("b", 1, ""),
			)
			f.srv.SetServing(true)
			opts := func(id string) xdstest.ProxyOptions {
				return xdstest.ProxyOptions{NodeID: id, Delta: delta, Types: []string{rds}, Names: map[string][]string{rds: {"rt"}}}
			}
			pa, pb := f.proxy(spiffe("a"), opts("a")), f.proxy(spiffe("b"), opts("b"))
			cluster := func(p *xdstest.Proxy) string {
				t.Helper()
				r := xdstest.Next(t, p)
				if r.TypeURL != rds || !cmp.Equal(r.Names(), []string{"rt"}) {
					t.Fatalf("got %s %v, want the route rt", r.TypeURL, r.Names())
				}
				var rc routev3.RouteConfiguration
				if err := r.Resources["rt"].UnmarshalTo(&rc); err != nil {
					t.Fatal(err)
				}
				return rc.GetVirtualHosts()[0].GetRoutes()[0].GetRoute().GetCluster()
			}
			if got := cluster(pa); got != "copy-a" {
				t.Errorf("a's rt routes to %q, want its copy's copy-a", got)
			}
			if got := cluster(pb); got != "shared" {
				t.Errorf("b's rt routes to %q, want shared", got)
			}
			// The copy changes: a is pushed it; b's next push is the one
			// after, so this one never reached b.
			f.commit(res(t, xdstest.Route("rt", "copy-a2"), "rt|retry|a", 2))
			if got := cluster(pa); got != "copy-a2" {
				t.Errorf("after the copy's change a's rt routes to %q", got)
			}
			// The alias moves to another copy.
			f.commit(res(t, xdstest.Route("rt", "copy-a3"), "rt|retry|a3", 3), aliased("a", 3, "rt|retry|a3"))
			if got := cluster(pa); got != "copy-a3" {
				t.Errorf("after the alias moved a's rt routes to %q", got)
			}
			// The alias is dropped: a gets the shared route back.
			f.commit(aliased("a", 4, ""))
			if got := cluster(pa); got != "shared" {
				t.Errorf("without its alias a's rt routes to %q", got)
			}
			// The shared route changes: b (which got nothing so far) is
			// pushed it first.
			f.commit(res(t, xdstest.Route("rt", "shared2"), "rt", 5))
			if got := cluster(pb); got != "shared2" {
				t.Errorf("b's next push routes to %q, want the shared change", got)
			}
		})
	}
}
