package compile

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/model"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/synth"
)

// TestOversizedGroupSpillsIntoItsOwnSets (issue 15, item 10): an identity
// that may reach thousands of services in SMI mode has more names than a
// NATS value holds. Its group used to be compiled as one value over the
// limit, which the compiler then left out (logged, never written), so its
// proxies kept their old configuration. Now the group's names go into name
// sets of its own, each within the bound; the proxies are served every
// name; and when the identity's reach shrinks, the group carries its names
// again and its sets are deleted.
func TestOversizedGroupSpillsIntoItsOwnSets(t *testing.T) {
	cfg := synth.Config{Namespaces: 10, Services: 12000, PodsPerService: 1, TrafficTargets: 12000, SourcesPerTarget: 1}
	scanner := model.Identity{Namespace: cfg.SvcNamespace(0), Name: synth.SvcName(0)}
	objs := synth.Generate(cfg)
	for _, o := range objs {
		if tt, ok := o.Msg.(*meshv1.TrafficTarget); ok {
			tt.Sources = append(tt.Sources, synth.Subject(scanner.Namespace, scanner.Name))
		}
	}
	e := newEngine()
	d := load(t, e, objs)

	grp := e.groups.get(scanner)
	if grp == nil {
		t.Fatal("no group for the identity that reaches every service")
	}
	if v, _ := proto.Marshal(grp.Group); len(v) > bus.MaxValueSize-4096 {
		t.Fatalf("group %s is %d bytes, over the NATS limit", grp.Key(), len(v))
	}
	var spilled []string
	for _, name := range grp.Group.GetSets() {
		if strings.HasPrefix(name, "group/") {
			spilled = append(spilled, name)
		}
	}
	if len(spilled) < 2 {
		t.Fatalf("the group lists sets %v, want two or more of its own", grp.Group.GetSets())
	}
	for _, name := range spilled {
		s := e.groups.set(name)
		if s == nil || !slices.ContainsFunc(d.Sets, func(x *Set) bool { return x.Set.GetName() == name }) {
			t.Fatalf("set %s is listed but not compiled", name)
		}
		if v, _ := proto.Marshal(s.Set); len(v) > bus.MaxValueSize-4096 {
			t.Errorf("set %s is %d bytes, over the NATS limit", name, len(v))
		}
	}
	clusters := e.groups.names(scanner, TypeURL(layout.TypeCluster))
	for i := range cfg.Services {
		svc := model.NN{Namespace: cfg.SvcNamespace(i), Name: synth.SvcName(i)}
		if i > 0 && !slices.Contains(clusters, ClusterName(svc, synth.SyntheticPort(i).Number)) {
			t.Fatalf("the spilled group does not reach %s", svc)
		}
	}
	// An ordinary identity's group is unchanged: its names, no set.
	other := model.Identity{Namespace: cfg.SvcNamespace(7), Name: synth.SvcName(7)}
	if g := e.groups.get(other); g == nil || len(g.Group.GetSets()) != 0 || len(g.Group.GetResources()) == 0 {
		t.Errorf("group of %s: %v", other, g)
	}

	// The reach shrinks: the group carries its names again, and its sets go.
	for _, o := range objs {
		if tt, ok := o.Msg.(*meshv1.TrafficTarget); ok && o.Name != synth.SvcName(1)+"-access" {
			tt = proto.Clone(tt).(*meshv1.TrafficTarget)
			tt.Sources = tt.Sources[:len(tt.Sources)-1]
			if err := e.Apply(o.Kind, o.Namespace, o.Name, tt); err != nil {
				t.Fatal(err)
			}
		}
	}
	d = e.Compile()
	grp = e.groups.get(scanner)
	if slices.ContainsFunc(grp.Group.GetSets(), func(s string) bool { return strings.HasPrefix(s, "group/") }) {
		t.Errorf("the group still lists its own sets: %v", grp.Group.GetSets())
	}
	for _, name := range spilled {
		if e.groups.set(name) != nil || !slices.Contains(d.DeletedSets, layout.SetKey(name)) {
			t.Errorf("set %s was not deleted", name)
		}
	}
	if !slices.Contains(e.groups.names(scanner, TypeURL(layout.TypeCluster)), ClusterName(model.NN{Namespace: cfg.SvcNamespace(1), Name: synth.SvcName(1)}, synth.SyntheticPort(1).Number)) {
		t.Error("the group no longer reaches the one service still allowed")
	}
}

// TestPermissiveGRPCGroupsShareNameSets (issue 17, section 1): in a
// permissive mesh every identity reaches every service, and a gRPC group
// that copied every service's gRPC names passed MaxGroupBytes at about
// 2,000 services and was left out (invalid), its proxies kept on old
// config. gRPC groups now list the gRPC permissive name sets, as Envoy
// groups list theirs: at 4,000 services (3,200 http ports) every gRPC group stays far under
// the bound and still serves every name of a compile from scratch.
func TestPermissiveGRPCGroupsShareNameSets(t *testing.T) {
	cfg := synth.Config{Namespaces: 10, Services: 4000, PodsPerService: 1, Permissive: true}
	e := New(Options{MeshName: synth.MeshName, MeshConfig: model.NN{Namespace: synth.MeshConfigNamespace, Name: synth.MeshConfigName}, ProxylessGRPC: true})
	load(t, e, synth.Generate(cfg))

	largest := 0
	for _, g := range e.groups.grpc {
		v, err := proto.Marshal(g.Group)
		if err != nil {
			t.Fatal(err)
		}
		largest = max(largest, len(v))
	}
	// The names one identity is served (every group's but for its bare
	// names and server listeners).
	one := model.Identity{Namespace: cfg.SvcNamespace(3), Name: synth.SvcName(3)}
	byType := map[string][]string{}
	for _, typ := range []string{layout.TypeCluster, layout.TypeEndpoint, layout.TypeListener, layout.TypeRoute} {
		byType[typ] = e.GRPCGroupNames(one, TypeURL(typ))
	}
	names := namesSize(byType)
	if len(e.groups.grpc) < cfg.Services {
		t.Fatalf("%d gRPC groups, want one per service identity (%d)", len(e.groups.grpc), cfg.Services)
	}
	t.Logf("%d services, permissive: largest gRPC group %d bytes; the names it serves (what a group without sets carried) %d bytes; MaxGroupBytes %d",
		cfg.Services, largest, names, MaxGroupBytes)
	if names <= MaxGroupBytes {
		t.Errorf("the names served (%d bytes) fit MaxGroupBytes: the mesh is too small to test the bound", names)
	}
	if largest > MaxGroupBytes/16 {
		t.Errorf("largest gRPC group %d bytes: it grows with the mesh (MaxGroupBytes %d)", largest, MaxGroupBytes)
	}
	// It is served every name a compile from scratch gives it.
	client, err := e.GRPCClient(one)
	if err != nil {
		t.Fatal(err)
	}
	server, err := e.GRPCServer(one)
	if err != nil {
		t.Fatal(err)
	}
	for typ, want := range namesByType(append(client, server...)) {
		if got := e.GRPCGroupNames(one, typ); !slices.Equal(got, want) {
			t.Errorf("%s of %s: %d names served, %d compiled from scratch", typ, one, len(got), len(want))
		}
	}
	for _, name := range e.GRPCGroup(one).Group.GetSets() {
		if !strings.HasPrefix(name, "grpc-permissive-") {
			t.Errorf("gRPC group of %s lists set %s", one, name)
		}
	}
}
