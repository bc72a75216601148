package compile

import (
	"slices"
	"sort"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/model"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/synth"
)

// namesByType lists res's names by type URL, sorted.
func namesByType(res []*Resource) map[string][]string {
	out := map[string][]string{}
	for _, r := range res {
		out[r.TypeURL] = append(out[r.TypeURL], r.Name)
	}
	for _, names := range out {
		sort.Strings(names)
	}
	return out
}

// checkGRPCIncremental compares, for each identity, the gRPC group the
// incremental compile of e keeps with the flavour compiled from scratch
// (GRPCClient and GRPCServer): the same names, each resource held at the
// same version. It also checks that plain, the same mesh compiled without
// the gRPC flavour, has the same Envoy groups and resources.
func checkGRPCIncremental(t *testing.T, step string, e, plain *Engine, ids []model.Identity) {
	t.Helper()
	for _, i := range ids {
		client, err := e.GRPCClient(i)
		if err != nil {
			t.Fatal(err)
		}
		server, err := e.GRPCServer(i)
		if err != nil {
			t.Fatal(err)
		}
		want := append(client, server...)
		// An identity in the mesh has a group, empty when it reaches and
		// serves nothing (bookthief in SMI mode), as its Envoy group does.
		g := e.GRPCGroup(i)
		if (g == nil) != (e.Group(i) == nil) {
			t.Errorf("%s: %s has gRPC group %v and Envoy group %v", step, i, g != nil, e.Group(i) != nil)
			continue
		}
		if g == nil {
			if len(want) > 0 {
				t.Errorf("%s: %s has no gRPC group", step, i)
			}
			continue
		}
		// The names it is served: its own and its sets'.
		got := map[string][]string{}
		for _, typ := range []string{layout.TypeCluster, layout.TypeEndpoint, layout.TypeListener, layout.TypeRoute} {
			if names := e.GRPCGroupNames(i, TypeURL(typ)); len(names) > 0 {
				got[TypeURL(typ)] = names
			}
		}
		if diff := cmp.Diff(namesByType(want), got); diff != "" {
			t.Errorf("%s: gRPC group of %s (-from scratch +incremental):\n%s", step, i, diff)
		}
		for _, r := range want {
			if have := e.Resource(r.Type, r.Name); have == nil || have.Version != r.Version {
				t.Errorf("%s: %s %s held at another version than compiled from scratch", step, r.Type, r.Name)
			}
		}
		if g.Key() != layout.GRPCGroupKey(i.Namespace, i.Name) {
			t.Errorf("gRPC group key %s", g.Key())
		}
	}
	for _, pg := range plain.Groups() {
		if g := e.Group(pg.Identity); g == nil || g.Version != pg.Version {
			t.Errorf("%s: Envoy group of %s differs with the gRPC flavour on", step, pg.Identity)
		}
	}
	if len(plain.Groups()) != len(e.groups.byID) {
		t.Errorf("%s: %d Envoy groups with the gRPC flavour, %d without", step, len(e.groups.byID), len(plain.Groups()))
	}
	for _, r := range plain.Resources() {
		if have := e.Resource(r.Type, r.Name); have == nil || have.Version != r.Version {
			t.Errorf("%s: Envoy %s %s differs with the gRPC flavour on", step, r.Type, r.Name)
		}
	}
}

// TestGRPCFlavourIncremental: with Options.ProxylessGRPC the engine keeps a
// gRPC group per identity beside its unchanged Envoy group, and edits (a
// split's weights, endpoints, a pod's IP, matches that change the gRPC
// client routes, route matches removed, a TrafficTarget deleted, a pod
// gone) leave it and its resources as a compile from scratch has them, with
// no stale server listener left.
func TestGRPCFlavourIncremental(t *testing.T) {
	for _, mode := range []string{"smi", "permissive"} {
		t.Run(mode, func(t *testing.T) {
			e := New(Options{MeshName: synth.MeshName, MeshConfig: model.NN{Namespace: synth.MeshConfigNamespace, Name: synth.MeshConfigName}, ProxylessGRPC: true})
			plain := newEngine()
			objs := synth.Bookstore(mode == "permissive")
			load(t, e, objs)
			load(t, plain, objs)
			ids := []model.Identity{id("bookbuyer", "bookbuyer"), id("bookthief", "bookthief"), id("bookstore", "bookstore-v1"), id("bookstore", "bookstore-v2"), id("bookwarehouse", "bookwarehouse")}
			checkGRPCIncremental(t, "initial", e, plain, ids)
			if e.GRPCGroup(id("bookbuyer", "bookbuyer")) == nil || e.GRPCGroup(id("bookstore", "bookstore-v1")) == nil {
				t.Fatal("no gRPC group for bookbuyer or bookstore-v1")
			}
			oldServer := GRPCServerListenerName("10.244.2.10", 14001)
			if e.Resource(layout.TypeListener, oldServer) == nil {
				t.Fatalf("no server listener %s", oldServer)
			}
			http := synth.Port{Number: 14001, Name: "bookstore-port", AppProtocol: "http"}
			steps := []struct {
				name string
				objs []synth.Object
			}{
				{"split 10/90", []synth.Object{synth.TrafficSplit("bookstore", "bookstore-split", "bookstore.bookstore.svc.cluster.local",
					synth.Backend{Service: "bookstore-v1", Weight: 10}, synth.Backend{Service: "bookstore-v2", Weight: 90})}},
				{"endpoints", []synth.Object{synth.EndpointSlice("bookstore", "bookstore-v2", "bookstore-v2-klmno", []synth.Port{http},
					synth.Endpoint{Pod: "bookstore-v2-8d9e7f6c5-pqrst", IP: "10.244.2.20"}, synth.Endpoint{Pod: "bookstore-v2-8d9e7f6c5-other", IP: "10.244.2.21"})}},
				{"pod IP", []synth.Object{synth.Pod("bookstore", "bookstore-v1-6b7f8c9d4-klmno", "bookstore-v1", "10.244.9.10", map[string]string{"app": "bookstore", "version": "v1"})}},
				{"gRPC route matches", []synth.Object{synth.HTTPRouteGroup("bookstore", "bookstore-service-routes",
					&meshv1.HTTPMatch{Name: "buy-a-book", PathRegex: "/bookstore.Books/Buy", Methods: []string{"POST"}},
					&meshv1.HTTPMatch{Name: "books-bought", PathRegex: "/bookstore.Books/Bought", Headers: map[string]string{"x-shop": "main"}})}},
				{"route matches", []synth.Object{synth.HTTPRouteGroup("bookstore", "bookstore-service-routes")}},
				{"target deleted", []synth.Object{{Kind: layout.KindTrafficTarget, Namespace: "bookstore", Name: "bookbuyer-access-bookstore-v1"}}},
				{"pod gone", []synth.Object{{Kind: layout.KindPod, Namespace: "bookbuyer", Name: "bookbuyer-5d8c7b9f4-abcde"}}},
			}
			for _, s := range steps {
				load(t, e, s.objs)
				load(t, plain, s.objs)
				checkGRPCIncremental(t, s.name, e, plain, ids)
			}
			// The bare name bookstore:14001 is bookstore's while no other
			// namespace has a service bookstore with an http port 14001.
			store := id("bookstore", "bookstore-v2")
			bare := func() bool {
				return slices.Contains(e.GRPCGroupNames(store, TypeURL(layout.TypeListener)), "bookstore:14001")
			}
			if want := mode == "permissive"; bare() != want {
				t.Errorf("bookstore-v2's gRPC group lists bookstore:14001: %v, want %v (it reaches the bookstore service: %v)", bare(), want, want)
			}
			for _, s := range []struct {
				name string
				objs []synth.Object
				want bool
			}{
				{"a second bookstore", []synth.Object{synth.Service("bookbuyer", "bookstore", "10.96.30.1", map[string]string{"app": "bookbuyer"}, http)}, false},
				{"the second bookstore gone", []synth.Object{{Kind: layout.KindService, Namespace: "bookbuyer", Name: "bookstore"}}, true},
			} {
				load(t, e, s.objs)
				load(t, plain, s.objs)
				checkGRPCIncremental(t, s.name, e, plain, ids)
				if want := s.want && mode == "permissive"; bare() != want {
					t.Errorf("%s: bookstore-v2's gRPC group lists bookstore:14001: %v, want %v", s.name, bare(), want)
				}
				if got := e.Resource(layout.TypeListener, "bookstore:14001") != nil; got != s.want {
					t.Errorf("%s: listener bookstore:14001 exists: %v, want %v", s.name, got, s.want)
				}
			}
			if e.Resource(layout.TypeListener, oldServer) != nil {
				t.Errorf("server listener %s of bookstore-v1's old pod IP is left", oldServer)
			}
			if !slices.Contains(e.GRPCGroupNames(id("bookstore", "bookstore-v1"), TypeURL(layout.TypeListener)), GRPCServerListenerName("10.244.9.10", 14001)) {
				t.Error("bookstore-v1's gRPC group does not list the server listener of its new pod IP")
			}
		})
	}
}
