package compile

import (
	"fmt"
	"math/rand"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/synth"
)

// snapshot is every current resource and group key with its version.
func snapshot(e *Engine) []string {
	var out []string
	for _, r := range e.Resources() {
		out = append(out, r.Key()+"@"+r.Version)
	}
	for _, g := range e.Groups() {
		out = append(out, g.Key()+"@"+g.Version)
	}
	for _, s := range e.Sets() {
		out = append(out, s.Key()+"@"+s.Version)
	}
	return out
}

// TestIncrementalEqualsCold applies random edits one compile at a time and
// checks, after each, that the incremental engine holds exactly what a
// fresh engine compiles from the same objects. This is what makes the
// dirty tracking trustworthy.
func TestIncrementalEqualsCold(t *testing.T) { incrementalEqualsCold(t, 0) }

// TestNamespaceJoinLeaveEqualsCold is TestIncrementalEqualsCold with every
// other edit on a Namespace (it leaves the mesh, joins again, is ignored,
// or changes only what does not decide its membership), the other edits
// mixed in: a Namespace change recompiles only its namespace's services
// and identities, and must still equal a cold compile.
func TestNamespaceJoinLeaveEqualsCold(t *testing.T) { incrementalEqualsCold(t, 2) }

// incrementalEqualsCold runs the random edits; with nsEvery > 0, every
// nsEvery-th edit is on a Namespace.
func incrementalEqualsCold(t *testing.T, nsEvery int) {
	cfg := synth.Config{Namespaces: 5, Services: 40, PodsPerService: 2, TrafficTargets: 30, SourcesPerTarget: 2, HTTPRouteGroups: 5, TrafficSplits: 3, Retries: 8, Egresses: 12}
	for seed := int64(1); seed <= 4; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewSource(seed))
			state := map[string]synth.Object{}
			var order []string
			base := append(synth.Generate(cfg), synth.BookstoreEgress()...)
			base = append(base, synth.BookstoreShapes()...) // headless and selectorless Services
			base = append(base, synth.BookstoreIngress()...)
			for _, o := range base {
				if _, ok := state[o.Key()]; !ok {
					order = append(order, o.Key())
				}
				state[o.Key()] = o
			}
			e := newEngine()
			for _, k := range order {
				o := state[k]
				if err := e.Apply(o.Kind, o.Namespace, o.Name, o.Msg); err != nil {
					t.Fatal(err)
				}
			}
			e.Compile()
			var nsKeys []string
			for _, k := range order {
				if state[k].Kind == layout.KindNamespace {
					nsKeys = append(nsKeys, k)
				}
			}
			deleted := map[string]synth.Object{}
			keptSteps := 0
			defer func() { t.Logf("%d of 60 steps compared with kept versions", keptSteps) }()
			for step := 0; step < 60; step++ {
				k := order[rng.Intn(len(order))]
				if nsEvery > 0 && step%nsEvery == 0 {
					k = nsKeys[rng.Intn(len(nsKeys))]
				}
				o, present := state[k]
				var next *synth.Object
				switch {
				case !present:
					restored := deleted[k]
					next = &restored
					delete(deleted, k)
				case rng.Intn(4) == 0 && o.Kind != layout.KindMeshConfig:
					deleted[k] = o
				default:
					m := mutate(rng, o)
					next = &m
				}
				if next == nil {
					delete(state, k)
					if err := e.Apply(o.Kind, o.Namespace, o.Name, nil); err != nil {
						t.Fatal(err)
					}
				} else {
					state[k] = *next
					if err := e.Apply(next.Kind, next.Namespace, next.Name, next.Msg); err != nil {
						t.Fatal(err)
					}
				}
				if d := e.Compile(); len(d.Invalid) > 0 {
					t.Fatal(d.Invalid)
				}
				// A rejected policy keeps its last good version in the
				// incremental engine: the cold engine is seeded with those
				// (Kept), as a restarted compiler or a new leader is.
				cold := newEngine()
				if errs := cold.Seed(e.Kept()); len(errs) > 0 {
					t.Fatal(errs)
				}
				for _, k := range order {
					if o, ok := state[k]; ok {
						if err := cold.Apply(o.Kind, o.Namespace, o.Name, o.Msg); err != nil {
							t.Fatal(err)
						}
					}
				}
				cold.Compile()
				if len(e.Kept()) > 0 {
					keptSteps++
				}
				if got, want := snapshot(e), snapshot(cold); !slices.Equal(got, want) {
					t.Fatalf("step %d (%s %s, kept %v): incremental output differs from a seeded cold compile:\n%s", step, k, describe(next), keptKeys(e.Kept()), diffLists(want, got))
				}
				if got, want := keptKeys(cold.Kept()), keptKeys(e.Kept()); !slices.Equal(got, want) {
					t.Fatalf("step %d: the seeded cold engine keeps %v, the incremental one %v", step, got, want)
				}
			}
		})
	}
}

func describe(o *synth.Object) string {
	if o == nil {
		return "deleted"
	}
	return "changed"
}

func diffLists(want, got []string) string {
	var out string
	for _, w := range want {
		if !slices.Contains(got, w) {
			out += "- " + w + "\n"
		}
	}
	for _, g := range got {
		if !slices.Contains(want, g) {
			out += "+ " + g + "\n"
		}
	}
	return out
}

// mutate returns a plausible edit of an object.
func mutate(rng *rand.Rand, o synth.Object) synth.Object {
	m := proto.Clone(o.Msg)
	switch v := m.(type) {
	case *meshv1.EndpointSlice:
		if len(v.Ports) > 0 && rng.Intn(3) == 0 {
			n := int32(18000 + rng.Intn(100)) // a named targetPort resolves elsewhere
			v.Ports[0].Port = &n
		} else if len(v.Endpoints) > 0 && rng.Intn(2) == 0 {
			v.Endpoints = v.Endpoints[1:]
		} else {
			v.Endpoints = append(v.Endpoints, &meshv1.Endpoint{Addresses: []string{fmt.Sprintf("192.168.7.%d", rng.Intn(250))}, Conditions: &meshv1.EndpointConditions{Ready: true}})
		}
	case *meshv1.Pod:
		switch rng.Intn(3) {
		case 0:
			v.ServiceAccount = "moved-" + v.ServiceAccount
		case 1:
			v.Labels = map[string]string{"app": "elsewhere"}
		default:
			v.PodIps = []string{"10.99.0.1"}
		}
	case *meshv1.Service:
		if v.GetType() == "ExternalName" {
			mutateExternalName(rng, v)
			break
		}
		if v.GetOsmAnnotations() != nil || (len(v.GetSelector()) == 0 && rng.Intn(2) == 0) {
			// A selectorless Service's declared identities come and go
			// (absent: refused), or it gains a selector.
			switch rng.Intn(3) {
			case 0:
				v.OsmAnnotations = nil
			case 1:
				v.OsmAnnotations = map[string]string{layout.AnnotationServiceAccounts: "bookwarehouse/mysql,bookwarehouse/bookwarehouse"}
			default:
				v.Selector = map[string]string{"app": "mysql"}
			}
			break
		}
		if v.GetHeadless() && rng.Intn(3) == 0 {
			v.Headless, v.ClusterIps = false, []string{"10.96.99.9"} // no longer headless
			break
		}
		switch rng.Intn(3) {
		case 0:
			v.Ports[0].AppProtocol = map[string]string{"http": "tcp", "tcp": "grpc", "grpc": "http"}[v.Ports[0].GetAppProtocol()]
		case 1:
			v.Selector = map[string]string{"app": "svc-00001"}
		default:
			v.Ports = append(v.Ports, &meshv1.ServicePort{Name: "extra", Port: 7070, AppProtocol: "tcp"})
		}
	case *meshv1.TrafficTarget:
		if len(v.Sources) > 1 && rng.Intn(2) == 0 {
			v.Sources = v.Sources[1:]
		} else {
			v.Sources = append(v.Sources, synth.Subject("bookthief", "bookthief"))
		}
	case *meshv1.TrafficSplit:
		for _, b := range v.Backends {
			b.Weight = int32(1 + rng.Intn(100))
		}
	case *meshv1.HTTPRouteGroup:
		switch {
		case len(v.Matches) > 1 && rng.Intn(3) == 0:
			v.Matches = v.Matches[1:] // rejects the TrafficTargets naming the match dropped
		case rng.Intn(4) == 0:
			v.Matches[0].PathRegex = "(" // rejected: keeps its last good version
		default:
			for _, mt := range v.Matches {
				mt.PathRegex += "/x"
			}
		}
	case *meshv1.TCPRoute:
		v.Matches.Ports = []int32{int32(9000 + rng.Intn(100))}
	case *meshv1.MeshConfig:
		if rng.Intn(3) == 0 { // Retry policies off, or back on (unset)
			if v.GetFeatureFlags() == nil {
				off := false
				v.FeatureFlags = &meshv1.FeatureFlags{EnableRetryPolicy: &off}
			} else {
				v.FeatureFlags = nil
			}
			break
		}
		if rng.Intn(2) == 0 {
			v.Traffic.EnableEgress = !v.Traffic.EnableEgress
			break
		}
		v.Traffic.EnablePermissiveTrafficPolicyMode = !v.Traffic.EnablePermissiveTrafficPolicyMode
	case *meshv1.Retry:
		switch rng.Intn(3) {
		case 0:
			n := v.GetRetryPolicy().GetNumRetries() + 1
			v.RetryPolicy.NumRetries = &n
		case 1:
			v.Destinations = append(v.Destinations, &meshv1.RetrySubject{Kind: "Service", Name: "bookstore", Namespace: "bookstore"})
		default:
			v.Source = &meshv1.RetrySubject{Kind: "ServiceAccount", Name: "bookbuyer", Namespace: "bookbuyer"}
		}
	case *meshv1.Egress:
		mutateEgress(rng, v)
	case *meshv1.IngressBackend:
		mutateIngress(rng, v)
	case *meshv1.Namespace:
		switch rng.Intn(3) {
		case 0:
			v.Ignored = !v.Ignored
		case 1: // another mesh's, then this one's again
			if v.MonitoredBy == synth.MeshName {
				v.MonitoredBy = "other-mesh"
			} else {
				v.MonitoredBy = synth.MeshName
			}
		default: // no change to its membership
			v.Meta = &meshv1.ObjectMeta{Name: v.GetMeta().GetName(), Generation: v.GetMeta().GetGeneration() + 1}
		}
	}
	o.Msg = m
	return o
}
