package model

import (
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

func svc(ns, name string, sel map[string]string) *meshv1.Service {
	return &meshv1.Service{Meta: &meshv1.ObjectMeta{Namespace: ns, Name: name}, Selector: sel}
}

func pod(ns, name, sa string, labels map[string]string) *meshv1.Pod {
	return &meshv1.Pod{Meta: &meshv1.ObjectMeta{Namespace: ns, Name: name}, ServiceAccount: sa, Labels: labels, Phase: meshv1.PodPhase_POD_PHASE_RUNNING}
}

func mustApply(t *testing.T, m *Model, kind, ns, name string, v proto.Message) {
	t.Helper()
	if _, err := m.Apply(kind, ns, name, v); err != nil {
		t.Fatal(err)
	}
}

func ids(s ...string) []Identity {
	var out []Identity
	for i := 0; i < len(s); i += 2 {
		out = append(out, Identity{s[i], s[i+1]})
	}
	return out
}

func TestIdentityIndexes(t *testing.T) {
	// Objects arrive in every order: the indexes must not depend on it.
	steps := []struct {
		kind, name string
		v          proto.Message
	}{
		{layout.KindService, "web", svc("a", "web", map[string]string{"app": "web"})},
		{layout.KindService, "web-v1", svc("a", "web-v1", map[string]string{"app": "web", "version": "v1"})},
		{layout.KindService, "manual", svc("a", "manual", nil)},
		{layout.KindPod, "web-1", pod("a", "web-1", "web-sa", map[string]string{"app": "web", "version": "v1"})},
		{layout.KindPod, "web-2", pod("a", "web-2", "web-v2-sa", map[string]string{"app": "web", "version": "v2"})},
		{layout.KindPod, "other", pod("a", "other", "other-sa", map[string]string{"app": "other"})},
	}
	for _, order := range [][]int{{0, 1, 2, 3, 4, 5}, {5, 4, 3, 2, 1, 0}, {3, 0, 4, 1, 5, 2}} {
		m := New("osm", NN{})
		for _, i := range order {
			mustApply(t, m, steps[i].kind, "a", steps[i].name, steps[i].v)
		}
		if got, want := m.ServiceIdentities(NN{"a", "web"}), ids("a", "web-sa", "a", "web-v2-sa"); !slices.Equal(got, want) {
			t.Errorf("order %v: web identities = %v, want %v", order, got, want)
		}
		if got, want := m.ServiceIdentities(NN{"a", "web-v1"}), ids("a", "web-sa"); !slices.Equal(got, want) {
			t.Errorf("order %v: web-v1 identities = %v, want %v", order, got, want)
		}
		if got := m.ServiceIdentities(NN{"a", "manual"}); len(got) != 0 {
			t.Errorf("order %v: a selector-less service has identities %v", order, got)
		}
		if got, want := m.IdentityServices(Identity{"a", "web-sa"}), []NN{{"a", "web"}, {"a", "web-v1"}}; !slices.Equal(got, want) {
			t.Errorf("order %v: web-sa services = %v, want %v", order, got, want)
		}
		if got, want := m.Identities(), ids("a", "other-sa", "a", "web-sa", "a", "web-v2-sa"); !slices.Equal(got, want) {
			t.Errorf("order %v: identities = %v", order, got)
		}
	}
}

func TestPodAndServiceUpdates(t *testing.T) {
	m := New("osm", NN{})
	mustApply(t, m, layout.KindService, "a", "web", svc("a", "web", map[string]string{"app": "web"}))
	mustApply(t, m, layout.KindPod, "a", "p", pod("a", "p", "one", map[string]string{"app": "web"}))
	// The pod changes identity.
	mustApply(t, m, layout.KindPod, "a", "p", pod("a", "p", "two", map[string]string{"app": "web"}))
	if got := m.ServiceIdentities(NN{"a", "web"}); !slices.Equal(got, ids("a", "two")) {
		t.Errorf("after an identity change: %v", got)
	}
	if m.HasPods(Identity{"a", "one"}) || len(m.IdentityServices(Identity{"a", "one"})) != 0 {
		t.Error("the old identity is still indexed")
	}
	// The service stops selecting it.
	mustApply(t, m, layout.KindService, "a", "web", svc("a", "web", map[string]string{"app": "api"}))
	if got := m.ServiceIdentities(NN{"a", "web"}); len(got) != 0 {
		t.Errorf("after a selector change: %v", got)
	}
	if id, svcs, ok := m.PodBacking(NN{"a", "p"}); !ok || id.Name != "two" || len(svcs) != 0 {
		t.Errorf("PodBacking = %v %v %v", id, svcs, ok)
	}
	// A finished pod does not count.
	done := pod("a", "p", "two", map[string]string{"app": "api"})
	done.Phase = meshv1.PodPhase_POD_PHASE_SUCCEEDED
	mustApply(t, m, layout.KindPod, "a", "p", done)
	if m.HasPods(Identity{"a", "two"}) {
		t.Error("a succeeded pod counts")
	}
	mustApply(t, m, layout.KindPod, "a", "p", nil)
	mustApply(t, m, layout.KindService, "a", "web", nil)
	if len(m.svcIDs) != 0 || len(m.idServices) != 0 || len(m.labelPods) != 0 || len(m.selSvcs) != 0 || len(m.svcPods) != 0 || len(m.idPods) != 0 {
		t.Errorf("indexes not empty after deleting everything: %v %v %v %v %v %v", m.svcIDs, m.idServices, m.labelPods, m.selSvcs, m.svcPods, m.idPods)
	}
}

func TestSlicesSplitsAndRoutes(t *testing.T) {
	m := New("osm", NN{"osm-system", "osm-mesh-config"})
	slice := &meshv1.EndpointSlice{Service: &meshv1.NamespacedName{Namespace: "a", Name: "web"}}
	mustApply(t, m, layout.KindEndpointSlice, "a", "web-1", slice)
	mustApply(t, m, layout.KindEndpointSlice, "a", "web-2", slice)
	if n := len(m.EndpointSlices(NN{"a", "web"})); n != 2 {
		t.Errorf("%d slices", n)
	}
	moved := &meshv1.EndpointSlice{Service: &meshv1.NamespacedName{Namespace: "a", Name: "api"}}
	mustApply(t, m, layout.KindEndpointSlice, "a", "web-2", moved)
	if n, k := len(m.EndpointSlices(NN{"a", "web"})), len(m.EndpointSlices(NN{"a", "api"})); n != 1 || k != 1 {
		t.Errorf("after a move: %d and %d slices", n, k)
	}

	mustApply(t, m, layout.KindTrafficSplit, "a", "s", &meshv1.TrafficSplit{Service: "web.a.svc.cluster.local"})
	if got := m.SplitsForApex(NN{"a", "web"}); !slices.Equal(got, []NN{{"a", "s"}}) {
		t.Errorf("splits for apex = %v", got)
	}
	tt := &meshv1.TrafficTarget{Rules: []*meshv1.TrafficTargetRule{{Kind: "HTTPRouteGroup", Name: "r"}, {Kind: "TCPRoute", Name: "t"}, {Kind: "Bogus", Name: "x"}}}
	mustApply(t, m, layout.KindTrafficTarget, "a", "tt", tt)
	if got := m.RouteUsers(layout.KindHTTPRouteGroup, NN{"a", "r"}); !slices.Equal(got, []NN{{"a", "tt"}}) {
		t.Errorf("route users = %v", got)
	}
	mustApply(t, m, layout.KindTrafficTarget, "a", "tt", nil)
	if got := m.RouteUsers(layout.KindTCPRoute, NN{"a", "t"}); len(got) != 0 {
		t.Errorf("route users after delete = %v", got)
	}

	// Only this mesh's MeshConfig counts; namespaces need the mesh label.
	mustApply(t, m, layout.KindMeshConfig, "other", "cfg", &meshv1.MeshConfig{Traffic: &meshv1.TrafficSpec{EnablePermissiveTrafficPolicyMode: true}})
	if m.Permissive() {
		t.Error("another namespace's MeshConfig applied")
	}
	mustApply(t, m, layout.KindMeshConfig, "osm-system", "osm-mesh-config", &meshv1.MeshConfig{Traffic: &meshv1.TrafficSpec{EnablePermissiveTrafficPolicyMode: true}})
	if !m.Permissive() {
		t.Error("the mesh's MeshConfig did not apply")
	}
	mustApply(t, m, layout.KindNamespace, "", "a", &meshv1.Namespace{MonitoredBy: "osm"})
	mustApply(t, m, layout.KindNamespace, "", "b", &meshv1.Namespace{MonitoredBy: "other-mesh"})
	mustApply(t, m, layout.KindNamespace, "", "c", &meshv1.Namespace{MonitoredBy: "osm", Ignored: true})
	if got := m.MeshedNamespaces(); !slices.Equal(got, []string{"a"}) {
		t.Errorf("meshed namespaces = %v", got)
	}
	if _, err := m.Apply(layout.KindService, "a", "x", &meshv1.Pod{}); err == nil {
		t.Error("a value of the wrong type was accepted")
	}
	if _, err := m.Apply("gadget", "a", "x", nil); err == nil {
		t.Error("an unknown kind was accepted")
	}
}
