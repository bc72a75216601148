// Package pool is the xds-edge's view of KV mesh-compiled: one shared pool of
// compiled Envoy resources, each wrapped for the wire once, and the proxy
// groups that name them.
//
// Writes are staged as they arrive and applied together, atomically, only
// when a Generation record newer than the applied one commits them.
// Generations are ordered by (epoch, number) (see Gen): a generation of a
// newer epoch replaces the whole applied state with its staged writes, since
// the compiler rewrote every key after mesh-compiled was lost. A commit
// returns exactly which groups see which resource names change, so the
// server pushes only to the proxies concerned, and only what changed. A
// group's view holds only the resources the pool has: a name a group refers
// to before its resource arrives is left out rather than served dangling.
//
// The pool does no I/O and takes no lock of its own; its owner serialises
// access with a read-write lock. The one exception is the stream references
// to IDs (see ID), counted atomically so that streams can take and drop
// them under the read lock.
package pool

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// Resource is one compiled resource, ready for the wire. It is shared by
// every stream that serves it and must not be modified.
type Resource struct {
	// TypeURL and Name identify the resource.
	TypeURL, Name string
	// Version is the resource's xDS version: "<generation>.<hash>", the
	// generation that brought this content (Gen.String: "<epoch>:<number>",
	// or "<number>" in epoch 0) and the compiler's content hash. Every
	// replica derives the same version from the same KV record, and a delta
	// proxy that reconnects with it tells the edge how new its state is
	// (see GenerationOfVersion).
	Version string
	// Hash is the compiler's content hash alone: equal hashes mean equal
	// bytes.
	Hash string
	// Epoch and Generation are the epoch of the generation that brought
	// this content and the number of the generation that last wrote it.
	Epoch, Generation uint64
	// Any wraps the serialised resource for state-of-the-world responses.
	Any *anypb.Any
	// Delta is the same bytes as a delta-xDS Resource.
	Delta *discovery.Resource
	// ID stands for TypeURL/Name in streams' bookkeeping (see ID), and Rev
	// for this content of it: a new content gets a new Rev.
	ID  ID
	Rev uint32
}

// Group is the applied configuration of one workload identity.
type Group struct {
	// ID is "namespace/serviceaccount".
	ID string
	// Names are the group's own resource names by type URL, sorted.
	Names map[string][]string
	// Sets are the names of the name sets whose names the group also
	// includes, sorted. A set the pool does not hold contributes nothing.
	Sets []string
	// Generation is the generation that last wrote the group.
	Generation uint64
	// Aliases maps, by type URL, a name in the group's view to the stored
	// resource served under it (see meshv1.ProxyGroup.aliases).
	Aliases map[string]map[string]string
}

// source is the key whose content g's proxies get under k: its alias
// target, or k itself.
func (g *Group) source(k resKey) resKey {
	if g == nil {
		return k
	}
	if t, ok := g.Aliases[k.typeURL][k.name]; ok {
		return resKey{k.typeURL, t}
	}
	return k
}

// nameSet is an applied name set: resource names several groups share.
type nameSet struct {
	// names by type URL, sorted.
	names map[string][]string
}

func (s *nameSet) has(typeURL, name string) bool {
	if s == nil {
		return false
	}
	_, found := slices.BinarySearch(s.names[typeURL], name)
	return found
}

// GroupID is the pool's key for the group of namespace/serviceAccount.
func GroupID(namespace, serviceAccount string) string { return namespace + "/" + serviceAccount }

// TypeChange is what changed for one group in one xDS type.
type TypeChange struct {
	// Updated are names now in the group's view whose content is new to it.
	Updated []string
	// Removed are names that left the group's view.
	Removed []string
	// IDs are the IDs of the Updated and Removed names that have one (a
	// removed name whose ID no stream referred to has none), so that a
	// stream can note what to look at without keeping strings.
	IDs []ID
}

// Change is the result of a commit.
type Change struct {
	// Epoch and Generation are the epoch and number just applied.
	Epoch, Generation uint64
	// Replaced says the commit started a new epoch: it replaced the whole
	// applied state, and every resource got a new version.
	Replaced bool
	// CommitTime is when the compiler committed it.
	CommitTime time.Time
	// Groups maps each affected group to its changed types.
	Groups map[string]map[string]*TypeChange
	// Resources is the number of resources written or deleted.
	Resources int
	// Dangling is the number of (group, name) references touched by this
	// commit that name a resource the pool lacks; they are not served until
	// the resource arrives.
	Dangling int
}

type resKey struct{ typeURL, name string }

type staged struct {
	value  []byte // nil: delete
	parsed layout.Compiled
}

// Pool is the applied compiled state plus the writes staged for the next
// generation.
//
// A group's names are its own plus those of the name sets it lists. Three
// indexes find, from a changed key, the groups concerned without walking any
// set: refs (resource → groups naming it themselves), setRefs (resource →
// sets naming it) and users (set → groups listing it). A commit that
// rewrites a set therefore costs O(set size) once plus O(groups listing it ×
// names that changed), never O(groups × set size).
type Pool struct {
	epoch          uint64
	gen            uint64
	appliedVersion string // Applied().String()
	commitTime     time.Time
	res            map[resKey]*Resource
	groups         map[string]*Group
	sets           map[string]*nameSet
	refs           map[resKey]map[string]struct{} // resource → ids of groups naming it
	setRefs        map[resKey]map[string]struct{} // resource → names of sets naming it
	users          map[string]map[string]struct{} // set name → ids of groups listing it
	staged         map[string]staged
	order          []string // staged keys in arrival order
	ids            ids
	alias          aliases
}

// New returns an empty pool at generation 0.
func New() *Pool {
	return &Pool{
		res:     map[resKey]*Resource{},
		groups:  map[string]*Group{},
		sets:    map[string]*nameSet{},
		refs:    map[resKey]map[string]struct{}{},
		setRefs: map[resKey]map[string]struct{}{},
		users:   map[string]map[string]struct{}{},
		staged:  map[string]staged{},
		alias:   newAliases(),

		appliedVersion: "0",
	}
}

// Generation is the applied generation number and its commit time.
func (p *Pool) Generation() (uint64, time.Time) { return p.gen, p.commitTime }

// Applied is the applied generation's place in the order.
func (p *Pool) Applied() Gen { return Gen{p.epoch, p.gen} }

// AppliedVersion is Applied().String(), made once per commit: the delta
// system_version_info of every response.
func (p *Pool) AppliedVersion() string { return p.appliedVersion }

// Gen is a generation's place in the order of generations: by epoch, then
// by number within the epoch (see meshv1.Generation).
type Gen struct{ Epoch, Number uint64 }

// GenOf is g's place in the order.
func GenOf(g *meshv1.Generation) Gen { return Gen{g.GetEpoch(), g.GetNumber()} }

// Less reports whether g comes before o: an older epoch, or the same epoch
// and a lower number.
func (g Gen) Less(o Gen) bool {
	return g.Epoch < o.Epoch || (g.Epoch == o.Epoch && g.Number < o.Number)
}

// Max is the later of g and o.
func (g Gen) Max(o Gen) Gen {
	if g.Less(o) {
		return o
	}
	return g
}

// String is the generation as xDS versions carry it: "<epoch>:<number>",
// or "<number>" in epoch 0 (a mesh-compiled written before epochs).
func (g Gen) String() string {
	if g.Epoch == 0 {
		return strconv.FormatUint(g.Number, 10)
	}
	var buf [48]byte
	return string(g.appendTo(buf[:0]))
}

func (g Gen) appendTo(b []byte) []byte {
	if g.Epoch != 0 {
		b = strconv.AppendUint(b, g.Epoch, 10)
		b = append(b, ':')
	}
	return strconv.AppendUint(b, g.Number, 10)
}

// DropStaged forgets the writes staged for the next generation, for a
// feed that watches mesh-compiled again from the start (the bucket was
// recreated): the new watch delivers every key anew, and a write staged
// from the old bucket must not be mixed into the new one's generation.
func (p *Pool) DropStaged() { p.staged, p.order = map[string]staged{}, nil }

// HasGroup reports whether the applied generation holds the group gid (see
// GroupID): whether its identity is in the compiled mesh.
func (p *Pool) HasGroup(gid string) bool {
	_, ok := p.groups[gid]
	return ok
}

// DanglingNames counts, over every group, the names whose resource the
// pool lacks: zero when the applied state is a whole generation. A commit
// counts only the dangling names it touched (Change.Dangling); this walks
// the whole pool, for an owner that must know when it is whole again.
func (p *Pool) DanglingNames() int {
	n := 0
	for _, g := range p.groups {
		for typeURL, names := range p.named(g) {
			for _, name := range names {
				if p.resolve(g, resKey{typeURL, name}) == nil {
					n++
				}
			}
		}
	}
	return n
}

// Staged is the number of keys waiting for the next generation.
func (p *Pool) Staged() int { return len(p.staged) }

// Stage records a write to a mesh-compiled key (a resource, a group or a
// name set; value nil means the key was deleted) for the next commit. The
// last write to a key wins. Keys it cannot parse are refused and change
// nothing.
func (p *Pool) Stage(key string, value []byte) error {
	if key == layout.GenerationKey {
		return fmt.Errorf("stage %s: the generation key commits, use Commit", key)
	}
	c, err := layout.ParseCompiled(key)
	if err != nil {
		return fmt.Errorf("stage: %w", err)
	}
	if value != nil {
		// Check now so that a bad value never blocks a commit.
		var m proto.Message = &meshv1.CompiledResource{}
		switch {
		case c.Group:
			m = &meshv1.ProxyGroup{}
		case c.Set:
			m = &meshv1.NameSet{}
		}
		if err := proto.Unmarshal(value, m); err != nil {
			return fmt.Errorf("stage %s: %w", key, err)
		}
	}
	if _, ok := p.staged[key]; !ok {
		p.order = append(p.order, key)
	}
	p.staged[key] = staged{value: value, parsed: c}
	return nil
}

// before is the state a commit replaced, kept only for what it touched.
type before struct {
	views map[string]map[string][]string // rewritten group → type → names in its view
	group map[string]*Group              // rewritten group → its record before (nil: absent)
	sets  map[string]*nameSet            // rewritten set → its content (nil: absent)
	had   map[resKey]bool                // changed resource → whether the pool held it
}

// Commit applies every staged write when g is newer than the applied
// generation, and returns what changed. An older or equal generation is
// ignored (nil, nil): the pool never goes back, and the staged writes wait
// for the next generation.
//
// A generation of a newer epoch replaces the applied state: every applied
// resource, group and set its staged writes do not rewrite is deleted, and
// every resource gets a version of the new epoch, even with the same bytes,
// so that no proxy is left holding, or is served, a version of the old
// epoch as if it were current.
func (p *Pool) Commit(g *meshv1.Generation) (*Change, error) {
	next := GenOf(g)
	if !p.Applied().Less(next) {
		return nil, nil
	}
	p.Collect()
	ch := &Change{Epoch: next.Epoch, Generation: next.Number, CommitTime: g.GetCommitTime().AsTime(), Groups: map[string]map[string]*TypeChange{}}
	if next.Epoch != p.epoch {
		ch.Replaced = true
		p.stageReplacement()
	}
	old := before{views: map[string]map[string][]string{}, group: map[string]*Group{}, sets: map[string]*nameSet{}, had: map[resKey]bool{}}
	// The views of the rewritten groups, before anything is applied.
	for _, key := range p.order {
		if s := p.staged[key]; s.parsed.Group {
			id := GroupID(s.parsed.Namespace, s.parsed.Name)
			old.views[id] = p.viewNames(id)
			old.group[id] = p.groups[id]
		}
	}
	changedRes := map[resKey]struct{}{}
	var deleted []resKey
	var errs []string
	for _, key := range p.order {
		s := p.staged[key]
		switch {
		case s.parsed.Group:
			if err := p.applyGroup(GroupID(s.parsed.Namespace, s.parsed.Name), s.value); err != nil {
				errs = append(errs, err.Error())
			}
		case s.parsed.Set:
			prev := p.sets[s.parsed.Name]
			if err := p.applySet(s.parsed.Name, s.value); err != nil {
				errs = append(errs, err.Error())
				continue
			}
			old.sets[s.parsed.Name] = prev
		default:
			had := p.res[resKey{typeURLs[s.parsed.Type], s.parsed.Name}] != nil
			k, changed, err := p.applyResource(s.parsed.Type, s.parsed.Name, s.value, next.Epoch)
			if err != nil {
				errs = append(errs, err.Error())
				continue
			}
			if changed {
				changedRes[k] = struct{}{}
				old.had[k] = had
				if had && p.res[k] == nil {
					deleted = append(deleted, k)
				}
			}
		}
	}
	ch.Resources = len(changedRes)
	p.rebuildAliases(changedRes)
	p.staged, p.order = map[string]staged{}, nil
	p.epoch, p.gen, p.commitTime = next.Epoch, next.Number, ch.CommitTime
	p.appliedVersion = next.String()

	// Groups whose own record changed: diff their views per type. A resource
	// changed in the same commit counts as updated when the group keeps it.
	for id, was := range old.views {
		now := p.viewNames(id)
		for _, typeURL := range unionKeys(was, now) {
			tc := diffNames(was[typeURL], now[typeURL])
			prev, cur := old.group[id], p.groups[id]
			for _, n := range was[typeURL] {
				// Kept by the group but rewritten in this commit, or served
				// from another source (an alias added, moved or dropped).
				if _, kept := slices.BinarySearch(now[typeURL], n); !kept {
					continue
				}
				k := resKey{typeURL, n}
				src := cur.source(k)
				if _, ok := changedRes[src]; ok || prev.source(k) != src {
					tc.Updated = append(tc.Updated, n)
				}
			}
			if len(tc.Updated)+len(tc.Removed) > 0 {
				ch.typeChange(id, typeURL).merge(tc)
			}
		}
		// Dangling references, counted among what this commit touched
		// only, so the cost stays proportional to the change.
		if g := p.groups[id]; g != nil {
			for typeURL, names := range p.named(g) {
				for _, n := range names {
					if p.resolve(g, resKey{typeURL, n}) == nil {
						ch.Dangling++
					}
				}
			}
		}
	}
	// Groups whose record did not change: each (group, name) a changed
	// set or resource reaches is weighed once.
	done := map[string]map[resKey]struct{}{}
	visit := func(id string, k resKey) {
		if _, rewritten := old.views[id]; rewritten {
			return
		}
		seen := done[id]
		if seen == nil {
			seen = map[resKey]struct{}{}
			done[id] = seen
		}
		if _, ok := seen[k]; ok {
			return
		}
		seen[k] = struct{}{}
		p.weigh(ch, id, k, &old, changedRes)
	}
	for name, prev := range old.sets {
		cur := p.sets[name]
		for _, typeURL := range unionKeys(setTypes(prev), setTypes(cur)) {
			tc := diffNames(setTypes(prev)[typeURL], setTypes(cur)[typeURL])
			for _, n := range append(tc.Updated, tc.Removed...) {
				for id := range p.users[name] {
					visit(id, resKey{typeURL, n})
				}
			}
		}
	}
	for k := range changedRes {
		for id := range p.refs[k] {
			visit(id, k)
		}
		for name := range p.setRefs[k] {
			for id := range p.users[name] {
				visit(id, k)
			}
		}
		// Groups served k's content under an alias.
		for ak := range p.alias.byTarget[k] {
			for id := range p.alias.users[ak] {
				visit(id, resKey{ak.typeURL, ak.name})
			}
		}
	}
	// Deleted resources keep their IDs while streams refer to them (the
	// streams drop them as they push the removals).
	for _, k := range deleted {
		if id, ok := p.ids.byKey[k]; ok && !p.holds(k) {
			p.ids.release(id, false)
		}
	}
	for _, types := range ch.Groups {
		for typeURL, tc := range types {
			sort.Strings(tc.Updated)
			sort.Strings(tc.Removed)
			tc.IDs = make([]ID, 0, len(tc.Updated)+len(tc.Removed))
			for _, names := range [][]string{tc.Updated, tc.Removed} {
				for _, n := range names {
					if id, ok := p.ids.byKey[resKey{typeURL, n}]; ok {
						tc.IDs = append(tc.IDs, id)
					}
				}
			}
		}
	}
	if len(errs) > 0 {
		return ch, fmt.Errorf("generation %s: %d bad keys: %s", next, len(errs), strings.Join(errs, "; "))
	}
	return ch, nil
}

// stageReplacement stages the delete of every applied resource, group and
// set that the staged writes of a new epoch do not rewrite.
func (p *Pool) stageReplacement() {
	var keys []string
	for k := range p.res {
		keys = append(keys, layout.ResourceKey(shortTypes[k.typeURL], k.name))
	}
	for id := range p.groups {
		ns, sa, _ := strings.Cut(id, "/")
		keys = append(keys, layout.GroupKey(ns, sa))
	}
	for name := range p.sets {
		keys = append(keys, layout.SetKey(name))
	}
	sort.Strings(keys)
	for _, key := range keys {
		if _, ok := p.staged[key]; !ok {
			_ = p.Stage(key, nil) // keys made from parsed ones parse
		}
	}
}

// setTypes is s's names by type URL; nil (no names) for a nil set.
func setTypes(s *nameSet) map[string][]string {
	if s == nil {
		return nil
	}
	return s.names
}

// weigh records in ch how resource k changed for group id, whose record
// this commit left alone: whether k entered, left or changed in its view.
// It also counts a reference to a resource the pool lacks as dangling.
func (p *Pool) weigh(ch *Change, id string, k resKey, old *before, changedRes map[resKey]struct{}) {
	g := p.groups[id]
	if g == nil {
		return
	}
	namedNow := p.names(g, k, nil)
	// The group's record did not change, so neither did its aliases: the
	// content it gets under k is src's, before and after.
	src := g.source(k)
	_, present := p.res[src]
	had, changed := old.had[src]
	if !changed {
		had = present
	}
	was := had && p.names(g, k, old.sets)
	is := namedNow && present
	switch {
	case is && (!was || changed):
		tc := ch.typeChange(id, k.typeURL)
		tc.Updated = append(tc.Updated, k.name)
	case was && !is:
		tc := ch.typeChange(id, k.typeURL)
		tc.Removed = append(tc.Removed, k.name)
	}
	if namedNow && !present {
		ch.Dangling++
	}
}

// names reports whether group g names k, itself or through a set. The
// content of a set in prev (when prev is not nil) is taken from there: the
// set as it was before the commit.
func (p *Pool) names(g *Group, k resKey, prev map[string]*nameSet) bool {
	if _, found := slices.BinarySearch(g.Names[k.typeURL], k.name); found {
		return true
	}
	if prev == nil {
		// The current sets: the index holds the few that name k.
		for name := range p.setRefs[k] {
			if _, found := slices.BinarySearch(g.Sets, name); found {
				return true
			}
		}
		return false
	}
	for _, name := range g.Sets {
		s := p.sets[name]
		if o, ok := prev[name]; ok {
			s = o
		}
		if s.has(k.typeURL, k.name) {
			return true
		}
	}
	return false
}

func (ch *Change) typeChange(id, typeURL string) *TypeChange {
	types := ch.Groups[id]
	if types == nil {
		types = map[string]*TypeChange{}
		ch.Groups[id] = types
	}
	tc := types[typeURL]
	if tc == nil {
		tc = &TypeChange{}
		types[typeURL] = tc
	}
	return tc
}

func (tc *TypeChange) merge(o TypeChange) {
	tc.Updated = append(tc.Updated, o.Updated...)
	tc.Removed = append(tc.Removed, o.Removed...)
}

// applyResource writes or deletes one resource, as of a generation of
// epoch, and reports whether its content (or its epoch) changed.
func (p *Pool) applyResource(typ, name string, value []byte, epoch uint64) (resKey, bool, error) {
	typeURL, known := typeURLs[typ]
	if !known {
		return resKey{}, false, fmt.Errorf("resource %s/%s: unknown resource type %q", typ, name, typ)
	}
	k := resKey{typeURL, name}
	if value == nil {
		if _, ok := p.res[k]; !ok {
			return k, false, nil
		}
		delete(p.res, k)
		return k, true, nil
	}
	var cr meshv1.CompiledResource
	if err := proto.Unmarshal(value, &cr); err != nil {
		return resKey{}, false, fmt.Errorf("resource %s/%s: %w", typ, name, err)
	}
	if cr.GetName() != name || cr.GetTypeUrl() != typeURL || cr.GetVersion() == "" {
		return resKey{}, false, fmt.Errorf("resource %s/%s: record names %q of type %q version %q", typ, name, cr.GetName(), cr.GetTypeUrl(), cr.GetVersion())
	}
	if old := p.res[k]; old != nil && old.Hash == cr.GetVersion() && old.Epoch == epoch {
		// Same bytes: the version (and what proxies hold) stays.
		old.Generation = cr.GetGeneration()
		return k, false, nil
	}
	a := &anypb.Any{TypeUrl: cr.GetTypeUrl(), Value: cr.GetResource()}
	vb := append(Gen{epoch, cr.GetGeneration()}.appendTo(make([]byte, 0, 42+len(cr.GetVersion()))), '.')
	version := string(append(vb, cr.GetVersion()...))
	id := p.ids.idOf(k)
	name = p.ids.slots[id].key.name // one copy of the name, shared with the ID table
	p.res[k] = &Resource{
		TypeURL: k.typeURL, Name: name, Version: version, Hash: cr.GetVersion(), Epoch: epoch, Generation: cr.GetGeneration(), Any: a,
		Delta: &discovery.Resource{Name: name, Version: version, Resource: a},
		ID:    id, Rev: p.ids.nextRev(id),
	}
	return k, true, nil
}

// typeURLs maps the short resource types of mesh-compiled keys to xDS type
// URLs.
var typeURLs = map[string]string{
	layout.TypeCluster:  "type.googleapis.com/envoy.config.cluster.v3.Cluster",
	layout.TypeEndpoint: "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
	layout.TypeListener: "type.googleapis.com/envoy.config.listener.v3.Listener",
	layout.TypeRoute:    "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
	layout.TypeSecret:   "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
}

// shortTypes maps xDS type URLs back to the short types of keys.
var shortTypes = func() map[string]string {
	out := make(map[string]string, len(typeURLs))
	for short, typeURL := range typeURLs {
		out[typeURL] = short
	}
	return out
}()

// sortedNames returns the names by type of a ResourceNames map, each list
// sorted and without duplicates; empty lists are left out.
func sortedNames(byType map[string]*meshv1.ResourceNames) map[string][]string {
	out := make(map[string][]string, len(byType))
	for typeURL, rn := range byType {
		names := slices.Clone(rn.GetNames())
		sort.Strings(names)
		if names = slices.Compact(names); len(names) > 0 {
			out[typeURL] = names
		}
	}
	return out
}

func addRef[K comparable](m map[K]map[string]struct{}, k K, v string) {
	if m[k] == nil {
		m[k] = map[string]struct{}{}
	}
	m[k][v] = struct{}{}
}

func dropRef[K comparable](m map[K]map[string]struct{}, k K, v string) {
	delete(m[k], v)
	if len(m[k]) == 0 {
		delete(m, k)
	}
}

func (p *Pool) applyGroup(id string, value []byte) error {
	if old := p.groups[id]; old != nil {
		for typeURL, names := range old.Names {
			for _, n := range names {
				dropRef(p.refs, resKey{typeURL, n}, id)
			}
		}
		for _, s := range old.Sets {
			dropRef(p.users, s, id)
		}
		p.alias.unuse(id, old.Aliases)
		delete(p.groups, id)
	}
	if value == nil {
		return nil
	}
	var pg meshv1.ProxyGroup
	if err := proto.Unmarshal(value, &pg); err != nil {
		return fmt.Errorf("group %s: %w", id, err)
	}
	g := &Group{ID: id, Names: sortedNames(pg.GetResources()), Generation: pg.GetGeneration()}
	for typeURL, names := range g.Names {
		for _, n := range names {
			addRef(p.refs, resKey{typeURL, n}, id)
		}
	}
	for typeURL, ra := range pg.GetAliases() {
		for name, target := range ra.GetNames() {
			if name == "" || target == "" || name == target {
				continue
			}
			if g.Aliases == nil {
				g.Aliases = map[string]map[string]string{}
			}
			if g.Aliases[typeURL] == nil {
				g.Aliases[typeURL] = map[string]string{}
			}
			g.Aliases[typeURL][name] = target
		}
	}
	p.alias.use(id, g.Aliases)
	if len(pg.GetSets()) > 0 {
		g.Sets = slices.Compact(slices.Sorted(slices.Values(pg.GetSets())))
		for _, s := range g.Sets {
			addRef(p.users, s, id)
		}
	}
	p.groups[id] = g
	return nil
}

// applySet writes or deletes one name set, moving only the names that
// differ in the setRefs index.
func (p *Pool) applySet(name string, value []byte) error {
	var cur *nameSet
	if value != nil {
		var ns meshv1.NameSet
		if err := proto.Unmarshal(value, &ns); err != nil {
			return fmt.Errorf("set %s: %w", name, err)
		}
		if ns.GetName() != name {
			return fmt.Errorf("set %s: record names %q", name, ns.GetName())
		}
		cur = &nameSet{names: sortedNames(ns.GetResources())}
	}
	prev := p.sets[name]
	for _, typeURL := range unionKeys(setTypes(prev), setTypes(cur)) {
		tc := diffNames(setTypes(prev)[typeURL], setTypes(cur)[typeURL])
		for _, n := range tc.Removed {
			dropRef(p.setRefs, resKey{typeURL, n}, name)
		}
		for _, n := range tc.Updated {
			addRef(p.setRefs, resKey{typeURL, n}, name)
		}
	}
	if cur == nil {
		delete(p.sets, name)
	} else {
		p.sets[name] = cur
	}
	return nil
}

// named returns the names group g names, its own and its sets', by type,
// each sorted and without duplicates.
func (p *Pool) named(g *Group) map[string][]string {
	if len(g.Sets) == 0 {
		return g.Names
	}
	out := make(map[string][]string, len(g.Names))
	for typeURL := range g.Names {
		out[typeURL] = p.namedOf(g, typeURL)
	}
	for _, s := range g.Sets {
		if ns := p.sets[s]; ns != nil {
			for typeURL := range ns.names {
				if _, ok := out[typeURL]; !ok {
					out[typeURL] = p.namedOf(g, typeURL)
				}
			}
		}
	}
	return out
}

// namedOf returns the names of typeURL group g names, its own and its
// sets', sorted and without duplicates. Without sets it returns the group's
// own list, which callers must not modify.
func (p *Pool) namedOf(g *Group, typeURL string) []string {
	lists := [][]string{g.Names[typeURL]}
	total := len(lists[0])
	for _, s := range g.Sets {
		if ns := p.sets[s]; ns != nil && len(ns.names[typeURL]) > 0 {
			lists = append(lists, ns.names[typeURL])
			total += len(ns.names[typeURL])
		}
	}
	if len(lists) == 1 {
		return lists[0]
	}
	if len(lists) == 2 && len(lists[0]) == 0 {
		return lists[1]
	}
	out := make([]string, 0, total)
	for _, l := range lists {
		out = append(out, l...)
	}
	sort.Strings(out)
	return slices.Compact(out)
}

// viewNames returns the names in a group's view (named and present) by type.
func (p *Pool) viewNames(id string) map[string][]string {
	g := p.groups[id]
	if g == nil {
		return map[string][]string{}
	}
	named := p.named(g)
	out := make(map[string][]string, len(named))
	for typeURL, names := range named {
		var in []string
		for _, n := range names {
			if p.resolve(g, resKey{typeURL, n}) != nil {
				in = append(in, n)
			}
		}
		if len(in) > 0 {
			out[typeURL] = in
		}
	}
	return out
}

func unionKeys(a, b map[string][]string) []string {
	var out []string
	for k := range a {
		out = append(out, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// diffNames compares two sorted name lists.
func diffNames(before, after []string) TypeChange {
	var tc TypeChange
	for _, n := range after {
		if _, found := slices.BinarySearch(before, n); !found {
			tc.Updated = append(tc.Updated, n)
		}
	}
	for _, n := range before {
		if _, found := slices.BinarySearch(after, n); !found {
			tc.Removed = append(tc.Removed, n)
		}
	}
	return tc
}

// Get returns the resource typeURL/name if the group's view holds it: a
// group never gets a resource it does not name, nor one the pool lacks.
func (p *Pool) Get(id, typeURL, name string) *Resource {
	g := p.groups[id]
	if g == nil || !p.names(g, resKey{typeURL, name}, nil) {
		return nil
	}
	return p.resolve(g, resKey{typeURL, name})
}

// View returns the group's resources of typeURL, sorted by name. When
// subscribed (sorted IDs) is non-nil only those are returned.
func (p *Pool) View(id, typeURL string, subscribed []ID) []*Resource {
	g := p.groups[id]
	if g == nil {
		return nil
	}
	var out []*Resource
	for _, n := range p.namedOf(g, typeURL) {
		if r := p.resolve(g, resKey{typeURL, n}); r != nil && Subscribed(subscribed, r.ID) {
			out = append(out, r)
		}
	}
	return out
}

// Subscribed reports whether id is in subscribed (sorted), or subscribed is
// nil (a wildcard subscription).
func Subscribed(subscribed []ID, id ID) bool {
	if subscribed == nil {
		return true
	}
	_, found := slices.BinarySearch(subscribed, id)
	return found
}

// VersionOf is the state-of-the-world version_info of a set of resources:
// "<generation>.<hash>", where generation is the newest generation that
// wrote any of them (Gen.String) and hash covers their names and versions.
// Replicas holding the same state compute the same version, and the
// generation prefix lets a replica tell that a proxy has seen newer state
// than it has.
func VersionOf(rs []*Resource, extra ...string) string {
	h := sha256.New()
	var gen Gen
	for _, r := range rs {
		gen = gen.Max(Gen{r.Epoch, r.Generation})
		h.Write([]byte(r.Name))
		h.Write([]byte{0})
		h.Write([]byte(r.Version))
		h.Write([]byte{0})
	}
	for _, e := range extra {
		h.Write([]byte(e))
		h.Write([]byte{0})
	}
	var buf [64]byte
	b := append(gen.appendTo(buf[:0]), '.')
	return string(hex.AppendEncode(b, h.Sum(nil)[:8]))
}

// GenerationOfVersion returns the generation prefix of a version made by
// VersionOf, or of a resource's Version: "<epoch>:<number>", or "<number>"
// for epoch 0 (the versions edges served before epochs existed). It
// returns the zero Gen, before every generation, for any other string.
func GenerationOfVersion(v string) Gen {
	i := strings.IndexByte(v, '.')
	if i <= 0 {
		return Gen{}
	}
	var g Gen
	head, err := v[:i], error(nil)
	if e, n, ok := strings.Cut(head, ":"); ok {
		if g.Epoch, err = strconv.ParseUint(e, 10, 64); err != nil || g.Epoch == 0 {
			return Gen{}
		}
		head = n
	}
	if g.Number, err = strconv.ParseUint(head, 10, 64); err != nil {
		return Gen{}
	}
	return g
}
