package compile

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/model"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/synth"
)

// grpcRoutes is bookstore's HTTPRouteGroup with matches gRPC calls take.
func grpcRoutes() synth.Object {
	return synth.HTTPRouteGroup("bookstore", "bookstore-service-routes",
		&meshv1.HTTPMatch{Name: "buy-a-book", PathRegex: "/bookstore.Books/Buy", Methods: []string{"POST"}},
		&meshv1.HTTPMatch{Name: "books-bought", PathRegex: "/bookstore.Books/Bought", Headers: map[string]string{"x-shop": "main"}})
}

func grpcEngine() *Engine {
	return New(Options{MeshName: synth.MeshName, MeshConfig: model.NN{Namespace: synth.MeshConfigNamespace, Name: synth.MeshConfigName}, ProxylessGRPC: true})
}

// TestGRPCRetryGolden: with the gRPC flavour, bookbuyer's Retry gives it a
// copy of bookstore's gRPC route, stored under GRPCRetryRouteName but
// named as the shared route (the name bookbuyer's shared API listeners
// ask for), with gRPC's part of the policy (retry_on unavailable, not 5xx;
// num_retries 3; backoff 25ms; no per_try_timeout), and bookbuyer's gRPC
// group aliasing the shared route to it; no other group does. Checked
// against testdata/bookstore_retry_grpc_<mode>.golden.
func TestGRPCRetryGolden(t *testing.T) {
	const shared, copyKey = "grpc:bookstore/bookstore|14001", "grpc:bookstore/bookstore|14001|retry|bookbuyer/bookbuyer"
	for _, mode := range []string{"smi", "permissive"} {
		t.Run(mode, func(t *testing.T) {
			e := grpcEngine()
			// A match gRPC calls can take (bookstore's own allow no POST).
			load(t, e, append(synth.Bookstore(mode == "permissive"), buyerRetry(), grpcRoutes()))
			rc := decode(t, e, layout.TypeRoute, copyKey, &routev3.RouteConfiguration{})
			if err := rc.ValidateAll(); err != nil {
				t.Fatal(err)
			}
			if rc.GetName() != shared {
				t.Errorf("the copy is named %q, want the shared name %q", rc.GetName(), shared)
			}
			for _, r := range rc.GetVirtualHosts()[0].GetRoutes() {
				rp := r.GetRoute().GetRetryPolicy()
				if r.GetName() == "deny" {
					if rp != nil {
						t.Errorf("the refusing route retries: %v", rp)
					}
					continue
				}
				if rp.GetRetryOn() != "unavailable" || rp.GetNumRetries().GetValue() != 3 || rp.GetPerTryTimeout() != nil ||
					rp.GetRetryBackOff().GetBaseInterval().AsDuration().String() != "25ms" {
					t.Errorf("route %q retry policy %v", r.GetName(), rp)
				}
			}
			buyer := e.GRPCGroup(id("bookbuyer", "bookbuyer"))
			wantN := map[string]int{"smi": 1, "permissive": 2}[mode]
			if got := buyer.Group.GetAliases()[TypeURL(layout.TypeRoute)].GetNames(); len(got) != wantN || got[shared] != copyKey {
				t.Errorf("bookbuyer's gRPC group aliases %v, want %s → %s (and bookwarehouse's in permissive mode, which it then reaches)", got, shared, copyKey)
			}
			if !slices.Contains(e.GRPCGroupNames(id("bookbuyer", "bookbuyer"), TypeURL(layout.TypeRoute)), shared) {
				t.Error("bookbuyer's gRPC group does not list the shared route its alias serves")
			}
			for _, g := range e.Groups() {
				if g.Identity != id("bookbuyer", "bookbuyer") || g.Flavour != layout.ProxylessGRPC {
					if len(g.Group.GetAliases()) > 0 {
						t.Errorf("group %s has aliases %v", g.Key(), g.Group.GetAliases())
					}
				}
			}
			got := dumpIf(t, e, func(key string) bool {
				return strings.Contains(key, "grpc:") && strings.Contains(key, "|retry|")
			})
			var b bytes.Buffer
			b.Write(got)
			for _, g := range e.Groups() {
				if g.Key() == layout.GRPCGroupKey("bookbuyer", "bookbuyer") {
					b.WriteString("=== " + g.Key() + " version=" + g.Version + "\n")
				}
			}
			path := filepath.Join("testdata", "bookstore_retry_grpc_"+mode+".golden")
			if *update {
				if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(b.Bytes(), want) {
				t.Errorf("gRPC retry output differs from %s (run with -update after checking the change):\n%s", path, firstDiff(string(want), string(b.Bytes())))
			}
		})
	}
}

// TestGRPCRetryIncrementalEqualsCold: adding the Retry, changing the
// destination's gRPC route matches (which rebuilds the copy), changing
// the Retry to HTTP conditions only (no copy, no alias for proxyless) and
// deleting it each leave the gRPC engine holding what a fresh engine
// compiles from the same objects.
func TestGRPCRetryIncrementalEqualsCold(t *testing.T) {
	for _, mode := range []string{"smi", "permissive"} {
		t.Run(mode, func(t *testing.T) {
			objs := synth.Bookstore(mode == "permissive")
			e := grpcEngine()
			load(t, e, objs)
			httpOnly := buyerRetry()
			httpOnly.Msg.(*meshv1.Retry).RetryPolicy.RetryOn = "5xx"
			type step struct {
				name string
				objs []synth.Object
			}
			steps := []step{
				{"retry added", []synth.Object{buyerRetry()}},
				{"gRPC route matches", []synth.Object{grpcRoutes()}},
				{"split", []synth.Object{synth.TrafficSplit("bookstore", "bookstore-split", "bookstore.bookstore.svc.cluster.local",
					synth.Backend{Service: "bookstore-v1", Weight: 10}, synth.Backend{Service: "bookstore-v2", Weight: 90})}},
				{"http conditions only", []synth.Object{httpOnly}},
				{"retry back", []synth.Object{buyerRetry()}},
				{"retry deleted", []synth.Object{{Kind: layout.KindRetry, Namespace: "bookbuyer", Name: "bookbuyer-retry"}}},
			}
			all := slices.Clone(objs)
			for _, s := range steps {
				apply(t, e, s.objs...)
				for _, o := range s.objs {
					i := slices.IndexFunc(all, func(x synth.Object) bool { return x.Kind == o.Kind && x.Namespace == o.Namespace && x.Name == o.Name })
					switch {
					case o.Msg == nil && i >= 0:
						all = slices.Delete(all, i, i+1)
					case i >= 0:
						all[i] = o
					case o.Msg != nil:
						all = append(all, o)
					}
				}
				cold := grpcEngine()
				load(t, cold, all)
				if got, want := snapshot(e), snapshot(cold); !slices.Equal(got, want) {
					t.Errorf("%s: incremental differs from cold:\n%s", s.name, firstDiff(strings.Join(want, "\n"), strings.Join(got, "\n")))
				}
				copied := e.Resource(layout.TypeRoute, "grpc:bookstore/bookstore|14001|retry|bookbuyer/bookbuyer") != nil
				// In SMI mode bookstore's first matches allow no gRPC call.
				want := s.name != "http conditions only" && s.name != "retry deleted" && (mode == "permissive" || s.name != "retry added")
				if copied != want {
					t.Errorf("%s: gRPC copy exists: %v, want %v", s.name, copied, want)
				}
			}
		})
	}
}
