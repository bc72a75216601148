package pool

import (
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"math/rand"
	"slices"
	"sort"
	"testing"
	"time"
	"unsafe"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// resource builds the mesh-compiled key and value of a resource, as the
// compiler writes it.
func resource(t *testing.T, typ string, m proto.Message, name string, gen uint64) kv {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	cr := &meshv1.CompiledResource{TypeUrl: typeURLs[typ], Name: name, Version: hex.EncodeToString(sum[:]), Resource: b, Generation: gen}
	v, err := proto.Marshal(cr)
	if err != nil {
		t.Fatal(err)
	}
	return kv{layout.ResourceKey(typ, name), v}
}

func cluster(t *testing.T, name string, timeoutSec int64, gen uint64) kv {
	return resource(t, layout.TypeCluster, &clusterv3.Cluster{Name: name, ConnectTimeout: durationpb.New(time.Duration(timeoutSec) * time.Second)}, name, gen)
}

func endpoints(t *testing.T, name string, priority uint32, gen uint64) kv {
	return resource(t, layout.TypeEndpoint, &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{Priority: priority}}}, name, gen)
}

func group(t *testing.T, ns, sa string, gen uint64, byType map[string][]string) kv {
	t.Helper()
	g := &meshv1.ProxyGroup{Identity: &meshv1.Identity{Namespace: ns, ServiceAccount: sa}, Resources: map[string]*meshv1.ResourceNames{}, Generation: gen}
	for typeURL, names := range byType {
		g.Resources[typeURL] = &meshv1.ResourceNames{Names: names}
	}
	v, err := proto.Marshal(g)
	if err != nil {
		t.Fatal(err)
	}
	return kv{layout.GroupKey(ns, sa), v}
}

// kv is one mesh-compiled write.
type kv struct {
	key   string
	value []byte
}

func stage(t *testing.T, p *Pool, w kv) {
	t.Helper()
	if err := p.Stage(w.key, w.value); err != nil {
		t.Fatal(err)
	}
}

func commit(t *testing.T, p *Pool, n uint64) *Change {
	t.Helper()
	ch, err := p.Commit(&meshv1.Generation{Number: n})
	if err != nil {
		t.Fatal(err)
	}
	checkIDs(t, p, ch)
	return ch
}

// checkIDs checks that each TypeChange's IDs are those of its names that
// have one, every updated name included, then clears them so that tests
// compare names.
func checkIDs(t *testing.T, p *Pool, ch *Change) {
	t.Helper()
	if ch == nil {
		return
	}
	for gid, types := range ch.Groups {
		for typeURL, tc := range types {
			var want []ID
			for _, n := range append(slices.Clone(tc.Updated), tc.Removed...) {
				id, ok := p.ID(typeURL, n)
				if !ok {
					if slices.Contains(tc.Updated, n) {
						t.Errorf("%s %s: updated %s has no ID", gid, typeURL, n)
					}
					continue
				}
				want = append(want, id)
			}
			if !slices.Equal(tc.IDs, want) {
				t.Errorf("%s %s: IDs %v, want %v", gid, typeURL, tc.IDs, want)
			}
			tc.IDs = nil
		}
	}
}

func names(rs []*Resource) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Name)
	}
	return out
}

const (
	cds = resourcev3.ClusterType
	eds = resourcev3.EndpointType
)

// seed commits generation 1: group a/a names clusters c1, c2 and endpoints
// c1; group b/b names cluster c2 only.
func seed(t *testing.T) *Pool {
	p := New()
	stage(t, p, cluster(t, "c1", 1, 1))
	stage(t, p, cluster(t, "c2", 1, 1))
	stage(t, p, endpoints(t, "c1", 1, 1))
	stage(t, p, group(t, "a", "a", 1, map[string][]string{cds: {"c2", "c1"}, eds: {"c1"}}))
	stage(t, p, group(t, "b", "b", 1, map[string][]string{cds: {"c2"}}))
	ch := commit(t, p, 1)
	want := map[string]map[string]*TypeChange{
		"a/a": {cds: {Updated: []string{"c1", "c2"}}, eds: {Updated: []string{"c1"}}},
		"b/b": {cds: {Updated: []string{"c2"}}},
	}
	if diff := cmp.Diff(want, ch.Groups); diff != "" {
		t.Fatalf("initial change (-want +got):\n%s", diff)
	}
	return p
}

func TestStagedWritesWaitForAGeneration(t *testing.T) {
	p := seed(t)
	stage(t, p, cluster(t, "c1", 9, 2))
	if got := p.Get("a/a", cds, "c1").Version; got == "" {
		t.Fatal("c1 missing")
	}
	before := p.Get("a/a", cds, "c1").Version
	if p.Staged() != 1 {
		t.Fatalf("staged = %d, want 1", p.Staged())
	}
	if after := p.Get("a/a", cds, "c1").Version; after != before {
		t.Fatal("a staged write was served before its generation")
	}
	ch := commit(t, p, 2)
	if p.Get("a/a", cds, "c1").Version == before {
		t.Fatal("the commit did not apply the staged write")
	}
	want := map[string]map[string]*TypeChange{"a/a": {cds: {Updated: []string{"c1"}}}}
	wantChange(t, want, ch)
	if ch.Resources != 1 || p.Staged() != 0 {
		t.Errorf("resources = %d staged = %d, want 1 and 0", ch.Resources, p.Staged())
	}
}

func TestOlderOrEqualGenerationIsIgnored(t *testing.T) {
	p := seed(t)
	stage(t, p, cluster(t, "c2", 7, 2))
	for _, n := range []uint64{0, 1} {
		ch, err := p.Commit(&meshv1.Generation{Number: n})
		if ch != nil || err != nil {
			t.Fatalf("generation %d after 1: change %v err %v, want ignored", n, ch, err)
		}
	}
	if g, _ := p.Generation(); g != 1 || p.Staged() != 1 {
		t.Fatalf("generation %d staged %d, want 1 and the write still staged", g, p.Staged())
	}
	ch := commit(t, p, 5)
	want := map[string]map[string]*TypeChange{"a/a": {cds: {Updated: []string{"c2"}}}, "b/b": {cds: {Updated: []string{"c2"}}}}
	wantChange(t, want, ch)
	if ch, _ := p.Commit(&meshv1.Generation{Number: 3}); ch != nil {
		t.Error("generation 3 after 5 was applied")
	}
}

func TestUnchangedRewriteAffectsNobody(t *testing.T) {
	p := seed(t)
	stage(t, p, cluster(t, "c1", 1, 2)) // same bytes, same version
	ch := commit(t, p, 2)
	if len(ch.Groups) != 0 || ch.Resources != 0 {
		t.Errorf("an unchanged rewrite changed %v (%d resources)", ch.Groups, ch.Resources)
	}
}

func TestGroupNeverServedAResourceThePoolLacks(t *testing.T) {
	p := seed(t)
	// The group names c3 before any c3 exists (a compiler bug, or a key
	// still on its way): c3 stays out of the view.
	stage(t, p, group(t, "a", "a", 2, map[string][]string{cds: {"c1", "c2", "c3"}, eds: {"c1"}}))
	ch := commit(t, p, 2)
	if len(ch.Groups) != 0 {
		t.Errorf("a dangling name changed the view: %v", ch.Groups)
	}
	if ch.Dangling != 1 {
		t.Errorf("dangling = %d, want 1", ch.Dangling)
	}
	if got := names(p.View("a/a", cds, nil)); !cmp.Equal(got, []string{"c1", "c2"}) {
		t.Errorf("view = %v, want [c1 c2]", got)
	}
	if p.Get("a/a", cds, "c3") != nil {
		t.Error("Get served a resource the pool lacks")
	}
	// c3 arrives: only a/a, which names it, is told.
	stage(t, p, cluster(t, "c3", 3, 3))
	ch = commit(t, p, 3)
	want := map[string]map[string]*TypeChange{"a/a": {cds: {Updated: []string{"c3"}}}}
	wantChange(t, want, ch)
	// c3 is deleted while still named: it leaves the view as a removal.
	stage(t, p, kv{layout.ResourceKey(layout.TypeCluster, "c3"), nil})
	ch = commit(t, p, 4)
	want = map[string]map[string]*TypeChange{"a/a": {cds: {Removed: []string{"c3"}}}}
	wantChange(t, want, ch)
	if ch.Dangling != 1 {
		t.Errorf("dangling = %d, want 1", ch.Dangling)
	}
}

func TestGroupOnlyGetsWhatItNames(t *testing.T) {
	p := seed(t)
	if p.Get("b/b", cds, "c1") != nil {
		t.Error("b/b got c1, which it does not name")
	}
	if p.Get("nobody/x", cds, "c1") != nil || p.View("nobody/x", cds, nil) != nil {
		t.Error("an unknown group got resources")
	}
	sub := []ID{p.Acquire(cds, "c2"), p.Acquire(cds, "c9")}
	slices.Sort(sub)
	if got := names(p.View("a/a", cds, sub)); !cmp.Equal(got, []string{"c2"}) {
		t.Errorf("subscribed view = %v, want [c2]", got)
	}
	if got := p.View("a/a", cds, []ID{}); len(got) != 0 {
		t.Errorf("an empty explicit subscription sees %v", names(got))
	}
	if got := names(p.View("a/a", cds, nil)); !cmp.Equal(got, []string{"c1", "c2"}) {
		t.Errorf("names = %v", got)
	}
}

func TestGroupEditDiffsItsView(t *testing.T) {
	p := seed(t)
	// In one generation: a/a drops c1 (and its endpoints), c2 changes.
	stage(t, p, group(t, "a", "a", 2, map[string][]string{cds: {"c2"}}))
	stage(t, p, cluster(t, "c2", 5, 2))
	ch := commit(t, p, 2)
	want := map[string]map[string]*TypeChange{
		"a/a": {cds: {Updated: []string{"c2"}, Removed: []string{"c1"}}, eds: {Removed: []string{"c1"}}},
		"b/b": {cds: {Updated: []string{"c2"}}},
	}
	wantChange(t, want, ch)
	// c1 now has no group: changing it affects nobody.
	stage(t, p, cluster(t, "c1", 8, 3))
	if ch := commit(t, p, 3); len(ch.Groups) != 0 {
		t.Errorf("a resource nobody names affected %v", ch.Groups)
	}
	// Deleting a group removes everything from its view.
	stage(t, p, kv{layout.GroupKey("b", "b"), nil})
	ch = commit(t, p, 4)
	want = map[string]map[string]*TypeChange{"b/b": {cds: {Removed: []string{"c2"}}}}
	wantChange(t, want, ch)
	if p.HasGroup("b/b") {
		t.Error("deleted group still present")
	}
}

func TestLastStagedWriteWins(t *testing.T) {
	p := seed(t)
	w := cluster(t, "c1", 4, 2)
	stage(t, p, w)
	stage(t, p, kv{w.key, nil})
	stage(t, p, w)
	ch := commit(t, p, 2)
	if r := p.Get("a/a", cds, "c1"); r == nil || ch.Resources != 1 {
		t.Fatalf("c1 = %v, resources = %d", r, ch.Resources)
	}
}

func TestBadKeysAreRefused(t *testing.T) {
	p := New()
	for _, c := range []struct {
		key   string
		value []byte
	}{
		{layout.GenerationKey, []byte{}},
		{"nonsense", []byte{}},
		{layout.ResourceKey(layout.TypeCluster, "x"), []byte{0xff, 0xff}},
	} {
		if err := p.Stage(c.key, c.value); err == nil {
			t.Errorf("Stage(%q) accepted", c.key)
		}
	}
	if p.Staged() != 0 {
		t.Errorf("staged = %d after refusals", p.Staged())
	}
	// A record whose content contradicts its key is reported at commit and
	// not applied; the rest of the generation is.
	w := cluster(t, "c1", 1, 1)
	stage(t, p, kv{layout.ResourceKey(layout.TypeCluster, "other"), w.value})
	stage(t, p, w)
	stage(t, p, group(t, "a", "a", 1, map[string][]string{cds: {"c1", "other"}}))
	ch, err := p.Commit(&meshv1.Generation{Number: 1})
	if err == nil {
		t.Error("a mismatched record was not reported")
	}
	if got := names(p.View("a/a", cds, nil)); !cmp.Equal(got, []string{"c1"}) {
		t.Errorf("view = %v, want [c1]", got)
	}
	if ch == nil || ch.Generation != 1 {
		t.Errorf("change = %v, want generation 1 applied", ch)
	}
}

func TestVersionOf(t *testing.T) {
	p := seed(t)
	v1 := VersionOf(p.View("a/a", cds, nil))
	if v1 != VersionOf(p.View("a/a", cds, nil)) {
		t.Error("version is not deterministic")
	}
	if g := GenerationOfVersion(v1); g != (Gen{0, 1}) {
		t.Errorf("generation of %q = %v, want 1", v1, g)
	}
	stage(t, p, cluster(t, "c1", 3, 7))
	commit(t, p, 7)
	v2 := VersionOf(p.View("a/a", cds, nil))
	if v2 == v1 || GenerationOfVersion(v2) != (Gen{0, 7}) {
		t.Errorf("after a change: %q (was %q), want a new version at generation 7", v2, v1)
	}
	for _, s := range []string{"", "x", ".1", "abc.def", ":3.abc", "0:3.abc", "x:3.abc", "3:.abc"} {
		if g := GenerationOfVersion(s); g != (Gen{}) {
			t.Errorf("GenerationOfVersion(%q) = %v, want the zero Gen", s, g)
		}
	}
	for v, want := range map[string]Gen{"12.ab": {0, 12}, "1733000000000:4.ab": {1733000000000, 4}, "5:4.ab.make-before-break": {5, 4}} {
		if g := GenerationOfVersion(v); g != want {
			t.Errorf("GenerationOfVersion(%q) = %v, want %v", v, g, want)
		}
	}
}

func TestGenOrder(t *testing.T) {
	ordered := []Gen{{}, {0, 1}, {0, 900}, {5, 1}, {5, 2}, {6, 1}}
	for i, a := range ordered {
		for j, b := range ordered {
			if a.Less(b) != (i < j) {
				t.Errorf("%v.Less(%v) = %v", a, b, a.Less(b))
			}
		}
	}
	if s := (Gen{0, 7}).String(); s != "7" {
		t.Errorf("epoch 0 prints %q, want the version prefix edges served before epochs: 7", s)
	}
	if s := (Gen{1733000000000, 7}).String(); s != "1733000000000:7" {
		t.Errorf("Gen prints %q", s)
	}
}

// commitEpoch commits generation n of epoch e.
func commitEpoch(t *testing.T, p *Pool, e, n uint64) *Change {
	t.Helper()
	ch, err := p.Commit(&meshv1.Generation{Epoch: e, Number: n})
	if err != nil {
		t.Fatal(err)
	}
	checkIDs(t, p, ch)
	return ch
}

// TestNewEpochReplacesEverything (issue 15, item 2): mesh-compiled was lost
// and the compiler rewrote it under a new epoch, numbering from 1 again. The
// pool takes generation 1 of the new epoch as newer than generation 9 of
// the old one, and as a full replacement: a group, a set and a resource the
// new epoch did not write are gone; every resource, even one with the same
// bytes, gets a version of the new epoch, so each group is told of every
// name in its view; and a later generation of the old epoch is ignored.
func TestNewEpochReplacesEverything(t *testing.T) {
	p := seed(t)
	stage(t, p, groupWithSets(t, "b", "b", 2, map[string][]string{cds: {"c2"}}, "s1"))
	stage(t, p, setKV(t, "s1", 2, map[string][]string{eds: {"c1"}}))
	commitEpoch(t, p, 0, 9)
	before := p.Get("a/a", cds, "c2")

	// The new epoch holds a/a with c2 (same bytes) and a new c3; b/b, c1,
	// endpoints c1 and set s1 were not written again.
	stage(t, p, cluster(t, "c2", 2, 1))
	stage(t, p, cluster(t, "c3", 3, 1))
	stage(t, p, group(t, "a", "a", 1, map[string][]string{cds: {"c2", "c3"}}))
	const epoch = 1733000000000
	ch := commitEpoch(t, p, epoch, 1)
	if ch == nil || !ch.Replaced || ch.Epoch != epoch || ch.Generation != 1 {
		t.Fatalf("change = %+v, want epoch %d generation 1 applied as a replacement", ch, epoch)
	}
	if got := p.Applied(); got != (Gen{epoch, 1}) {
		t.Errorf("applied %v", got)
	}
	if p.HasGroup("b/b") || p.sets["s1"] != nil || p.res[resKey{cds, "c1"}] != nil || p.res[resKey{eds, "c1"}] != nil {
		t.Error("the new epoch kept a group, set or resource it did not write")
	}
	after := p.Get("a/a", cds, "c2")
	if after == nil {
		t.Fatal("c2 missing from a/a")
	}
	if after.Version == before.Version || GenerationOfVersion(after.Version) != (Gen{epoch, 1}) {
		t.Errorf("c2 version %q (was %q), want one of generation %d:1", after.Version, before.Version, epoch)
	}
	want := map[string]map[string]*TypeChange{
		"a/a": {cds: {Updated: []string{"c2", "c3"}, Removed: []string{"c1"}}, eds: {Removed: []string{"c1"}}},
		"b/b": {cds: {Removed: []string{"c2"}}, eds: {Removed: []string{"c1"}}},
	}
	if diff := cmp.Diff(want, ch.Groups, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("changes (-want +got):\n%s", diff)
	}
	if v := VersionOf(p.View("a/a", cds, nil)); !(Gen{0, 9}).Less(GenerationOfVersion(v)) {
		t.Errorf("state-of-the-world version %q is not after the old epoch's", v)
	}

	// A late generation of the old epoch changes nothing.
	stage(t, p, cluster(t, "c2", 9, 10))
	if ch := commitEpoch(t, p, 0, 10); ch != nil {
		t.Errorf("a generation of the old epoch was applied: %+v", ch)
	}
	// The next generation of the new epoch is an ordinary commit.
	if ch := commitEpoch(t, p, epoch, 2); ch == nil || ch.Replaced {
		t.Errorf("the next generation of the epoch: %+v", ch)
	}
}

func TestDropStaged(t *testing.T) {
	p := seed(t)
	stage(t, p, cluster(t, "c9", 1, 2))
	p.DropStaged()
	if p.Staged() != 0 {
		t.Fatalf("%d staged after DropStaged", p.Staged())
	}
	commit(t, p, 2)
	if _, ok := p.ID(cds, "c9"); ok {
		t.Error("a dropped write was applied")
	}
}

func TestSharedResourceIsWrappedOnce(t *testing.T) {
	p := seed(t)
	a, b := p.Get("a/a", cds, "c2"), p.Get("b/b", cds, "c2")
	if a == nil || a != b || a.Any != b.Any || a.Delta.Resource != a.Any {
		t.Error("two groups do not share one wrapped resource")
	}
}

func groupWithSets(t *testing.T, ns, sa string, gen uint64, byType map[string][]string, sets ...string) kv {
	t.Helper()
	w := group(t, ns, sa, gen, byType)
	g := &meshv1.ProxyGroup{}
	if err := proto.Unmarshal(w.value, g); err != nil {
		t.Fatal(err)
	}
	g.Sets = sets
	v, err := proto.Marshal(g)
	if err != nil {
		t.Fatal(err)
	}
	return kv{w.key, v}
}

func setKV(t *testing.T, name string, gen uint64, byType map[string][]string) kv {
	t.Helper()
	s := &meshv1.NameSet{Name: name, Resources: map[string]*meshv1.ResourceNames{}, Generation: gen}
	for typeURL, names := range byType {
		s.Resources[typeURL] = &meshv1.ResourceNames{Names: names}
	}
	v, err := proto.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return kv{layout.SetKey(name), v}
}

// seedSets commits generation 1: set s1 names clusters c1, c2; set s2
// names cluster c3. a/a lists s1 and names c3 itself; b/b lists s1 and s2;
// c/c lists s2 only.
func seedSets(t *testing.T) *Pool {
	t.Helper()
	p := New()
	for _, c := range []string{"c1", "c2", "c3"} {
		stage(t, p, cluster(t, c, 1, 1))
	}
	stage(t, p, setKV(t, "s1", 1, map[string][]string{cds: {"c2", "c1"}}))
	stage(t, p, setKV(t, "s2", 1, map[string][]string{cds: {"c3"}}))
	stage(t, p, groupWithSets(t, "a", "a", 1, map[string][]string{cds: {"c3"}}, "s1"))
	stage(t, p, groupWithSets(t, "b", "b", 1, nil, "s2", "s1"))
	stage(t, p, groupWithSets(t, "c", "c", 1, nil, "s2"))
	ch := commit(t, p, 1)
	want := map[string]map[string]*TypeChange{
		"a/a": {cds: {Updated: []string{"c1", "c2", "c3"}}},
		"b/b": {cds: {Updated: []string{"c1", "c2", "c3"}}},
		"c/c": {cds: {Updated: []string{"c3"}}},
	}
	if diff := cmp.Diff(want, ch.Groups); diff != "" {
		t.Fatalf("initial change (-want +got):\n%s", diff)
	}
	return p
}

func TestSetNamesJoinTheGroupsView(t *testing.T) {
	p := seedSets(t)
	if got := names(p.View("b/b", cds, nil)); !cmp.Equal(got, []string{"c1", "c2", "c3"}) {
		t.Errorf("b/b names = %v", got)
	}
	sub := []ID{p.Acquire(cds, "c1"), p.Acquire(cds, "c3")}
	slices.Sort(sub)
	if got := names(p.View("a/a", cds, sub)); !cmp.Equal(got, []string{"c1", "c3"}) {
		t.Errorf("a/a subscribed view = %v", got)
	}
	if p.Get("c/c", cds, "c1") == nil == (p.Get("a/a", cds, "c1") == nil) {
		t.Error("c1 should be served to a/a (through s1) and not to c/c")
	}
}

func TestSetEditReachesEveryGroupListingIt(t *testing.T) {
	p := seedSets(t)
	// s1 gains c4 (arriving in the same commit) and loses c1; c3 joins s1,
	// which a/a and b/b already see otherwise.
	stage(t, p, cluster(t, "c4", 1, 2))
	stage(t, p, setKV(t, "s1", 2, map[string][]string{cds: {"c2", "c3", "c4"}}))
	ch := commit(t, p, 2)
	want := map[string]map[string]*TypeChange{
		"a/a": {cds: {Updated: []string{"c4"}, Removed: []string{"c1"}}},
		"b/b": {cds: {Updated: []string{"c4"}, Removed: []string{"c1"}}},
	}
	wantChange(t, want, ch)
	// A resource of a set changes: every group listing the set is told once,
	// also when it names the resource itself too.
	stage(t, p, cluster(t, "c3", 7, 3))
	ch = commit(t, p, 3)
	want = map[string]map[string]*TypeChange{
		"a/a": {cds: {Updated: []string{"c3"}}},
		"b/b": {cds: {Updated: []string{"c3"}}},
		"c/c": {cds: {Updated: []string{"c3"}}},
	}
	wantChange(t, want, ch)
	// c3 leaves s1 but stays in s2 and a/a's own names: nobody loses it.
	stage(t, p, setKV(t, "s1", 4, map[string][]string{cds: {"c2", "c4"}}))
	if ch := commit(t, p, 4); len(ch.Groups) != 0 {
		t.Errorf("a name still named otherwise changed %v", ch.Groups)
	}
	// A set naming a resource the pool lacks: left out, counted dangling,
	// served when it arrives.
	stage(t, p, setKV(t, "s2", 5, map[string][]string{cds: {"c3", "c5"}}))
	ch = commit(t, p, 5)
	if len(ch.Groups) != 0 || ch.Dangling != 2 {
		t.Errorf("dangling set name: change %v, dangling %d, want none and 2", ch.Groups, ch.Dangling)
	}
	stage(t, p, cluster(t, "c5", 1, 6))
	ch = commit(t, p, 6)
	want = map[string]map[string]*TypeChange{
		"b/b": {cds: {Updated: []string{"c5"}}},
		"c/c": {cds: {Updated: []string{"c5"}}},
	}
	wantChange(t, want, ch)
}

func TestGroupSwitchesSets(t *testing.T) {
	p := seedSets(t)
	// c/c moves from s2 to s1, and s1 changes in the same commit: the view
	// diff covers both.
	stage(t, p, groupWithSets(t, "c", "c", 2, nil, "s1"))
	stage(t, p, cluster(t, "c2", 9, 2))
	ch := commit(t, p, 2)
	want := map[string]map[string]*TypeChange{
		"a/a": {cds: {Updated: []string{"c2"}}},
		"b/b": {cds: {Updated: []string{"c2"}}},
		"c/c": {cds: {Updated: []string{"c1", "c2"}, Removed: []string{"c3"}}},
	}
	wantChange(t, want, ch)
	// s2 changes: c/c no longer lists it; b/b loses c3 and already sees c1
	// through s1.
	stage(t, p, setKV(t, "s2", 3, map[string][]string{cds: {"c1"}}))
	ch = commit(t, p, 3)
	want = map[string]map[string]*TypeChange{"b/b": {cds: {Removed: []string{"c3"}}}}
	wantChange(t, want, ch)
	// Listing a set before it exists: nothing until it arrives.
	stage(t, p, groupWithSets(t, "c", "c", 4, nil, "s1", "s9"))
	if ch := commit(t, p, 4); len(ch.Groups) != 0 {
		t.Errorf("listing an absent set changed %v", ch.Groups)
	}
	stage(t, p, setKV(t, "s9", 5, map[string][]string{cds: {"c3"}, eds: {"c1"}}))
	ch = commit(t, p, 5)
	want = map[string]map[string]*TypeChange{"c/c": {cds: {Updated: []string{"c3"}}}}
	wantChange(t, want, ch)
	if ch.Dangling != 1 {
		t.Errorf("dangling = %d, want 1 (endpoints c1)", ch.Dangling)
	}
}

func TestSetDeleted(t *testing.T) {
	p := seedSets(t)
	stage(t, p, kv{layout.SetKey("s1"), nil})
	ch := commit(t, p, 2)
	want := map[string]map[string]*TypeChange{
		"a/a": {cds: {Removed: []string{"c1", "c2"}}},
		"b/b": {cds: {Removed: []string{"c1", "c2"}}},
	}
	wantChange(t, want, ch)
	if got := names(p.View("a/a", cds, nil)); !cmp.Equal(got, []string{"c3"}) {
		t.Errorf("a/a names = %v, want [c3]", got)
	}
	// The set comes back: its names return to every group still listing it.
	stage(t, p, setKV(t, "s1", 3, map[string][]string{cds: {"c1"}}))
	ch = commit(t, p, 3)
	want = map[string]map[string]*TypeChange{
		"a/a": {cds: {Updated: []string{"c1"}}},
		"b/b": {cds: {Updated: []string{"c1"}}},
	}
	wantChange(t, want, ch)
}

func TestSetRecordMustMatchItsKey(t *testing.T) {
	p := seedSets(t)
	w := setKV(t, "other", 2, map[string][]string{cds: {"c1"}})
	stage(t, p, kv{layout.SetKey("s2"), w.value})
	if _, err := p.Commit(&meshv1.Generation{Number: 2}); err == nil {
		t.Error("a set record under another set's key was applied")
	}
	if got := names(p.View("c/c", cds, nil)); !cmp.Equal(got, []string{"c3"}) {
		t.Errorf("c/c names = %v, want [c3] (s2 unchanged)", got)
	}
}

// TestRandomCommitsMatchFullDiff applies random generations of resource,
// group and set writes and checks each Change against a diff of every
// group's full view before and after: the index-driven commit must report
// exactly what a full recomputation would.
func TestRandomCommitsMatchFullDiff(t *testing.T) {
	for _, seed := range []int64{1, 2, 3} {
		randomCommits(t, rand.New(rand.NewSource(seed)))
	}
}

func randomCommits(t *testing.T, rng *rand.Rand) {
	clusters := []string{"c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7"}
	sets := []string{"s0", "s1", "s2"}
	groups := []string{"g0", "g1", "g2", "g3"}
	pick := func(from []string) []string {
		var out []string
		for _, n := range from {
			if rng.Intn(3) == 0 {
				out = append(out, n)
			}
		}
		return out
	}
	views := func(p *Pool) map[string][]string {
		out := map[string][]string{}
		for _, g := range groups {
			id := GroupID(g, g)
			view := names(p.View(id, cds, nil))
			if len(view) > 0 {
				out[id] = view
			}
			// Get and View agree.
			for _, c := range clusters {
				_, named := slices.BinarySearch(view, c)
				if got := p.Get(id, cds, c) != nil; got != named {
					t.Fatalf("%s: Get(%s) = %v, View %v", id, c, got, view)
				}
			}
		}
		return out
	}
	p := New()
	versions := map[string]int64{}
	for gen := uint64(1); gen <= 300; gen++ {
		before := views(p)
		was := maps.Clone(versions)
		for range 1 + rng.Intn(4) {
			switch rng.Intn(3) {
			case 0:
				c := clusters[rng.Intn(len(clusters))]
				if rng.Intn(4) == 0 {
					stage(t, p, kv{layout.ResourceKey(layout.TypeCluster, c), nil})
					delete(versions, c)
				} else {
					v := int64(rng.Intn(3) + 1)
					stage(t, p, cluster(t, c, v, gen))
					versions[c] = v
				}
			case 1:
				s := sets[rng.Intn(len(sets))]
				if rng.Intn(5) == 0 {
					stage(t, p, kv{layout.SetKey(s), nil})
				} else {
					stage(t, p, setKV(t, s, gen, map[string][]string{cds: pick(clusters)}))
				}
			case 2:
				g := groups[rng.Intn(len(groups))]
				if rng.Intn(6) == 0 {
					stage(t, p, kv{layout.GroupKey(g, g), nil})
				} else {
					stage(t, p, groupWithSets(t, g, g, gen, map[string][]string{cds: pick(clusters)}, pick(sets)...))
				}
			}
		}
		// A key written twice in one generation keeps its last value: what
		// changed is what differs from the generation before.
		changed := map[string]bool{}
		for _, c := range clusters {
			v0, ok0 := was[c]
			v1, ok1 := versions[c]
			changed[c] = ok0 != ok1 || v0 != v1
		}
		ch := commit(t, p, gen)
		after := views(p)
		want := map[string]map[string]*TypeChange{}
		for _, g := range groups {
			id := GroupID(g, g)
			tc := diffNames(before[id], after[id])
			for _, n := range after[id] {
				if _, kept := slices.BinarySearch(before[id], n); kept && changed[n] {
					tc.Updated = append(tc.Updated, n)
				}
			}
			if len(tc.Updated)+len(tc.Removed) > 0 {
				sort.Strings(tc.Updated)
				want[id] = map[string]*TypeChange{cds: &tc}
			}
		}
		if diff := cmp.Diff(want, ch.Groups, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("generation %d: change differs from the full diff (-want +got):\n%s", gen, diff)
		}
	}
}

func TestIDsFollowResourcesAndReferences(t *testing.T) {
	p := seed(t)
	r := p.res[resKey{cds, "c1"}]
	if id, ok := p.ID(cds, "c1"); !ok || id != r.ID || !keyIs(p, id, cds, "c1") {
		t.Fatalf("ID(c1) = %v %v, resource ID %v", id, ok, r.ID)
	}
	if _, name := p.Key(r.ID); unsafe.StringData(r.Name) != unsafe.StringData(name) {
		t.Error("the resource and the ID table keep separate copies of the name")
	}
	if _, ok := p.ID(eds, "c2"); ok {
		t.Error("a name held under another type has an ID")
	}
	// A new content gets a new revision under the same ID.
	stage(t, p, cluster(t, "c1", 9, 2))
	commit(t, p, 2)
	r2 := p.res[resKey{cds, "c1"}]
	if r2.ID != r.ID || r2.Rev == r.Rev || r2.Rev < firstRev {
		t.Fatalf("rewritten c1: ID %v rev %d, was ID %v rev %d", r2.ID, r2.Rev, r.ID, r.Rev)
	}
	// A stream's reference keeps the ID of a deleted resource.
	p.Ref(r2.ID)
	stage(t, p, kv{layout.ResourceKey(layout.TypeCluster, "c1"), nil})
	ch, err := p.Commit(&meshv1.Generation{Number: 3})
	if err != nil {
		t.Fatal(err)
	}
	if ids := ch.Groups["a/a"][cds].IDs; !slices.Equal(ids, []ID{r.ID}) {
		t.Fatalf("removal IDs = %v, want [%v]", ids, r.ID)
	}
	if id, ok := p.ID(cds, "c1"); !ok || id != r.ID {
		t.Fatal("a referenced ID was freed with its resource")
	}
	// Dropping the reference frees it at the next write, and a new name
	// reusing the ID continues its revisions.
	p.Unref(r.ID)
	p.Collect()
	if _, ok := p.ID(cds, "c1"); ok {
		t.Fatal("an unreferenced ID of a deleted resource was kept")
	}
	other := p.Acquire(eds, "dangling")
	if other != r.ID {
		t.Fatalf("freed ID %v not reused (got %v)", r.ID, other)
	}
	stage(t, p, endpoints(t, "dangling", 1, 4))
	commit(t, p, 4)
	if r3 := p.res[resKey{eds, "dangling"}]; r3.ID != other || r3.Rev <= r2.Rev {
		t.Fatalf("reused ID: ID %v rev %d, want ID %v and a rev above %d", r3.ID, r3.Rev, other, r2.Rev)
	}
	// A name a stream acquired without a resource lives as long as the
	// reference.
	n := p.IDs()
	id := p.Acquire(cds, "subscribed-only")
	if p.IDs() != n+1 || !keyIs(p, id, cds, "subscribed-only") {
		t.Fatalf("Acquire: %d IDs (was %d), ID %v", p.IDs(), n, id)
	}
	p.Unref(id)
	commit(t, p, 5)
	if p.IDs() != n {
		t.Fatalf("%d IDs after the last reference went, want %d", p.IDs(), n)
	}
}

// keyIs reports whether id stands for typeURL/name.
func keyIs(p *Pool, id ID, typeURL, name string) bool {
	t, n := p.Key(id)
	return t == typeURL && n == name
}

// wantChange compares the groups a commit changed with want.
func wantChange(t *testing.T, want map[string]map[string]*TypeChange, ch *Change) {
	t.Helper()
	if diff := cmp.Diff(want, ch.Groups); diff != "" {
		t.Errorf("change (-want +got):\n%s", diff)
	}
}
