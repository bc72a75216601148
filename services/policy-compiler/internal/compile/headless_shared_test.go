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

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/model"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/synth"
)

var replicasSvc = model.NN{Namespace: "bookwarehouse", Name: "cache-replicas"}

// sharedHeadless is synth.BookstoreShapes with a second headless Service,
// cache-replicas, selecting cache's pods on the same port 6379; its slice
// lists eps (cache's two pods when none).
func sharedHeadless(eps ...synth.Endpoint) []synth.Object {
	redis := synth.Port{Number: 6379, Name: "redis", AppProtocol: "tcp"}
	if len(eps) == 0 {
		eps = []synth.Endpoint{{Pod: "cache-0", IP: "10.244.3.30"}, {Pod: "cache-1", IP: "10.244.3.31"}}
	}
	return append(synth.BookstoreShapes(),
		synth.HeadlessService("bookwarehouse", "cache-replicas", map[string]string{"app": "cache"}, redis),
		synth.EndpointSlice("bookwarehouse", "cache-replicas", "cache-replicas-xyz", []synth.Port{redis}, eps...))
}

// listenerAddrs are the addresses of a listener, "ip:port", or nil when
// there is no such listener.
func listenerAddrs(t *testing.T, e *Engine, name string) []string {
	t.Helper()
	if e.Resource(layout.TypeListener, name) == nil {
		return nil
	}
	l := decode(t, e, layout.TypeListener, name, &listenerv3.Listener{})
	as := []string{fmt.Sprintf("%s:%d", l.GetAddress().GetSocketAddress().GetAddress(), l.GetAddress().GetSocketAddress().GetPortValue())}
	for _, a := range l.GetAdditionalAddresses() {
		as = append(as, fmt.Sprintf("%s:%d", a.GetAddress().GetSocketAddress().GetAddress(), a.GetAddress().GetSocketAddress().GetPortValue()))
	}
	return as
}

// noDuplicateAddresses fails when two listeners one proxy group is served
// share an address: Envoy refuses the second ("duplicate address"), which
// ValidateAll, checking one resource at a time, does not see.
func noDuplicateAddresses(t *testing.T, e *Engine) {
	t.Helper()
	for _, g := range e.Groups() {
		if g.Flavour != "" {
			continue
		}
		seen := map[string]string{}
		for _, n := range e.GroupNames(g.Identity, resourcev3.ListenerType) {
			for _, a := range listenerAddrs(t, e, n) {
				if other, dup := seen[a]; dup {
					t.Errorf("group %s: listeners %s and %s both on %s", g.Identity, other, n, a)
				}
				seen[a] = n
			}
		}
	}
}

// serviceVerdicts are the current Service verdicts, "name condition field".
func serviceVerdicts(e *Engine) []string {
	var out []string
	for k, st := range e.pol.verdicts {
		if k.kind == layout.KindService {
			out = append(out, fmt.Sprintf("%s %s %s", k.nn, st.GetCondition(), st.GetFieldPath()))
		}
	}
	slices.Sort(out)
	return out
}

// TestHeadlessSharedAddressOneOwner: two headless Services selecting the
// same pods on the same port give one listener per address, whatever the
// order they are applied in: cache, first by name, owns both addresses;
// cache-replicas keeps its clusters, gets no listener and is accepted with
// a warning naming spec.ports[0], the address and its owner. Without the
// owners, bookwarehouse is served two listeners on each address.
func TestHeadlessSharedAddressOneOwner(t *testing.T) {
	objs := sharedHeadless()
	for _, order := range []string{"applied after", "applied first"} {
		t.Run(order, func(t *testing.T) {
			in := slices.Clone(objs)
			if order == "applied first" {
				slices.Reverse(in)
			}
			e := newEngine()
			d := load(t, e, in)
			noDuplicateAddresses(t, e)
			if got, want := listenerAddrs(t, e, ServiceListenerName(cacheSvc, 6379)), []string{"10.244.3.30:6379", "10.244.3.31:6379"}; !slices.Equal(got, want) {
				t.Errorf("cache's listener on %v, want %v", got, want)
			}
			if got := listenerAddrs(t, e, ServiceListenerName(replicasSvc, 6379)); got != nil {
				t.Errorf("cache-replicas has a listener on %v", got)
			}
			if e.Resource(layout.TypeCluster, DirectClusterName(replicasSvc, 6379)) == nil {
				t.Error("cache-replicas lost its direct cluster")
			}
			var warned []*meshv1.PolicyStatus
			for _, st := range d.Statuses {
				if st.GetObject().GetKind() == "Service" && st.GetObject().GetName() == "cache-replicas" {
					warned = append(warned, st)
				}
			}
			want := "Service bookwarehouse/cache-replicas accepted with a warning: spec.ports[0]: port 6379's endpoint 10.244.3.30:6379 is also an endpoint of port 6379 of headless Service bookwarehouse/cache, which serves it (and 1 more of its addresses)"
			if len(warned) != 1 || warned[0].GetCondition() != meshv1.PolicyCondition_POLICY_CONDITION_ACCEPTED_WITH_WARNING ||
				warned[0].GetReason() != ReasonHeadlessAddressTaken || warned[0].GetFieldPath() != "spec.ports[0]" ||
				!strings.HasPrefix(warned[0].GetMessage(), want) {
				t.Errorf("cache-replicas statuses %v, want one warning starting %q", warned, want)
			}
			if got, want := serviceVerdicts(e), []string{
				"bookwarehouse/cache-replicas POLICY_CONDITION_ACCEPTED_WITH_WARNING spec.ports[0]",
				"bookwarehouse/legacy-db POLICY_CONDITION_ACCEPTED ",
			}; !slices.Equal(got, want) {
				t.Errorf("Service verdicts %v, want %v", got, want)
			}
			if e.Rejected() != 0 {
				t.Errorf("Rejected() = %d: a warning is no rejection", e.Rejected())
			}
		})
	}
}

// TestHeadlessOwnerDeletedLoserTakesOver: deleting the owner moves its
// addresses to cache-replicas' listener in the same compile, which writes
// only what the two Services and their client's group change and accepts
// cache-replicas; restoring cache takes them back. Each step equals a cold
// compile (verdicts included); a partial overlap leaves the loser its own
// addresses.
func TestHeadlessOwnerDeletedLoserTakesOver(t *testing.T) {
	objs := sharedHeadless()
	e := newEngine()
	load(t, e, objs)
	var cacheObj synth.Object
	var live []synth.Object
	for _, o := range objs {
		if o.Kind == layout.KindService && o.Name == "cache" {
			cacheObj = o
			continue
		}
		live = append(live, o)
	}
	d := remove(t, e, layout.KindService, "bookwarehouse", "cache")
	if got, want := listenerAddrs(t, e, ServiceListenerName(replicasSvc, 6379)), []string{"10.244.3.30:6379", "10.244.3.31:6379"}; !slices.Equal(got, want) {
		t.Errorf("after deleting cache, cache-replicas' listener on %v, want %v", got, want)
	}
	if len(d.Statuses) != 1 || d.Statuses[0].GetObject().GetName() != "cache-replicas" || d.Statuses[0].GetCondition() != meshv1.PolicyCondition_POLICY_CONDITION_ACCEPTED {
		t.Errorf("statuses %v, want cache-replicas accepted", d.Statuses)
	}
	for _, k := range keys(d) {
		if !strings.Contains(k, "bookwarehouse/cache") && k != "group bookwarehouse/bookwarehouse" && k != "group bookwarehouse/cache" {
			t.Errorf("deleting cache wrote %s", k)
		}
	}
	noDuplicateAddresses(t, e)
	equalsColdWithVerdicts(t, e, live)

	d = apply(t, e, cacheObj)
	if got := listenerAddrs(t, e, ServiceListenerName(replicasSvc, 6379)); got != nil {
		t.Errorf("cache back, cache-replicas still has a listener on %v", got)
	}
	if len(d.Statuses) != 1 || d.Statuses[0].GetCondition() != meshv1.PolicyCondition_POLICY_CONDITION_ACCEPTED_WITH_WARNING {
		t.Errorf("statuses %v, want cache-replicas warned again", d.Statuses)
	}
	noDuplicateAddresses(t, e)
	equalsColdWithVerdicts(t, e, objs)

	partial := sharedHeadless(synth.Endpoint{Pod: "cache-1", IP: "10.244.3.31"}, synth.Endpoint{Pod: "cache-9", IP: "10.244.3.39"})
	apply(t, e, partial[len(partial)-1])
	if got, want := listenerAddrs(t, e, ServiceListenerName(replicasSvc, 6379)), []string{"10.244.3.39:6379"}; !slices.Equal(got, want) {
		t.Errorf("partial overlap: cache-replicas' listener on %v, want %v", got, want)
	}
	noDuplicateAddresses(t, e)
	equalsColdWithVerdicts(t, e, partial)
}

// equalsColdWithVerdicts is equalsColdOf that also compares the Service
// verdicts.
func equalsColdWithVerdicts(t *testing.T, e *Engine, objs []synth.Object) {
	t.Helper()
	equalsColdOf(t, e, objs)
	cold := newEngine()
	load(t, cold, objs)
	if got, want := serviceVerdicts(e), serviceVerdicts(cold); !slices.Equal(got, want) {
		t.Errorf("Service verdicts %v, a cold compile's %v", got, want)
	}
}

// TestHeadlessSharedIncrementalEqualsCold: random edits of the two
// headless Services sharing addresses (their slices, their pods, the
// Services, deleted and restored), each compile compared with a cold one,
// verdicts included, and no group served two listeners on one address.
func TestHeadlessSharedIncrementalEqualsCold(t *testing.T) {
	for seed := int64(1); seed <= 6; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewSource(seed))
			objs := sharedHeadless()
			var focus []int
			for i, o := range objs {
				if strings.HasPrefix(o.Name, "cache") && o.Kind != layout.KindServiceAccount {
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
				case rng.Intn(4) == 0:
					present[i] = false
					remove(t, e, o.Kind, o.Namespace, o.Name)
				case o.Kind == layout.KindEndpointSlice && rng.Intn(2) == 0:
					// Move the slice to the other's addresses, or a shared port.
					m := proto.Clone(o.Msg).(*meshv1.EndpointSlice)
					m.Endpoints = append(m.Endpoints, &meshv1.Endpoint{Addresses: []string{fmt.Sprintf("10.244.3.%d", 30+rng.Intn(4))}, Conditions: &meshv1.EndpointConditions{Ready: true}})
					objs[i].Msg = m
					apply(t, e, objs[i])
				default:
					objs[i] = mutate(rng, o)
					if s, ok := objs[i].Msg.(*meshv1.Service); ok && len(s.ClusterIps) > 0 {
						s.ClusterIps = []string{fmt.Sprintf("10.96.99.%d", len(o.Name))} // one cluster IP per Service, as Kubernetes gives
					}
					apply(t, e, objs[i])
				}
				var live []synth.Object
				for j, o := range objs {
					if present[j] {
						live = append(live, o)
					}
				}
				equalsColdWithVerdicts(t, e, live)
				noDuplicateAddresses(t, e)
				if t.Failed() {
					t.Fatalf("step %d: %s", step, objs[i].Key())
				}
			}
		})
	}
}

// TestHeadlessSharedGolden: the listeners and direct clusters of the two
// Services sharing addresses; every resource passed ValidateAll (compile
// validates each one).
func TestHeadlessSharedGolden(t *testing.T) {
	e := newEngine()
	load(t, e, sharedHeadless())
	got := dumpIf(t, e, func(key string) bool {
		return strings.Contains(key, "bookwarehouse/cache") && (strings.HasPrefix(key, resourcev3.ListenerType) || strings.Contains(key, "|direct"))
	})
	path := filepath.Join("testdata", "headless_shared.golden")
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
